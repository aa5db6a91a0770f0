"""Intel TDX quotes (versions 4 and 5): parse, sanity-check, and verify signatures offline.

Layout (Intel ``sgx_quote_4.h`` / ``sgx_quote_5.h``; all integers little-endian, ECDSA values
big-endian)::

    header (48)  [v5: body type u16, body size u32]  TD report body (584 or 648)
    signature_data_len u32  signature data  [trailing bytes, not covered by anything]

    signature data = quote signature (64) | attestation key X||Y (64) | cert type u16 = 6 | size u32
                     | QE report (384) | QE report signature (64) | QE auth size u16 | QE auth data
                     | inner cert type u16 = 5 | size u32 | PEM chain (PCK leaf, PCK CA, Intel SGX Root CA)

* :func:`parse_quote` decodes that layout with a bounds check on every field: a truncated,
  garbage or inconsistent quote raises :class:`QuoteError` (message: what is wrong, at which
  offset), never ``IndexError``/``struct.error``. Bytes after the declared signature data are
  tolerated and counted (``Quote.trailing_bytes``): real quotes carry padding there.
* :func:`check_quote` is the policy check a relying party runs on its own quote: TDX TEE type,
  the full 64-byte REPORTDATA (constant-time compare), no debug bit (TD attributes bits 0-7).
* :func:`verify_signatures` checks, offline with ``cryptography``: the quote signature with the
  attestation key, the QE report signature with the PCK leaf key, the QE binding of the
  attestation key, the chain PCK -> PCK CA -> root, and the root against the pinned Intel SGX
  Root CA. It fetches nothing: no network, no Intel PCS collateral, so no TCB status (TCB Info,
  QE Identity), no CRLs and no certificate validity dates are evaluated. A quote that passes
  all of this is genuine Intel-signed evidence, not proof that the platform is up to date: that
  is the verifier's (Trustee's) job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from ..errors import QuoteError

__all__ = [
    "CertInfo", "Check", "PckInfo", "QeReport", "Quote", "QuoteError", "QuoteHeader", "SignatureData",
    "TdAttributes", "TdReport", "Verification", "check_quote", "decode_quote_input", "parse_quote",
    "quote_problems", "verify_signatures",
]

HEADER_SIZE = 48
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
ATT_KEY_ECDSA_P256 = 2
BODY_TYPE_SGX = 1  # v5 only; an SGX enclave report, refused here
BODY_TYPE_TDX10 = 2  # TD report, TDX 1.0 (also the layout of every v4 TDX quote)
BODY_TYPE_TDX15 = 3  # TD report, TDX 1.5: adds TEE_TCB_SVN2 and MRSERVICETD
BODY_SIZES = {BODY_TYPE_TDX10: 584, BODY_TYPE_TDX15: 648}
CERT_TYPE_PCK_CHAIN = 5
CERT_TYPE_QE_REPORT = 6
QE_REPORT_SIZE = 384
REPORT_DATA_SIZE = 64
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

_CERT_TYPE_NAMES = {
    1: "PPID in cleartext", 2: "PPID RSA-2048-OAEP encrypted", 3: "PPID RSA-3072-OAEP encrypted",
    4: "PCK leaf certificate", 5: "PCK certificate chain", 6: "QE report certification data",
}

# TDATTRIBUTES bits (Linux arch/x86/include/asm/shared/tdx.h TDX_ATTR_*; TDX module ABI groups:
# bits 7:0 are "TD under debug" (TUD): any of them set means the host can inspect the TD).
TD_ATTRIBUTE_BITS = {
    0: "DEBUG",
    1: "TUD_RESERVED_1",
    2: "TUD_RESERVED_2",
    3: "TUD_RESERVED_3",
    4: "HGS_PLUS_PROF",
    5: "PERF_PROF",
    6: "PMT_PROF",
    7: "TUD_RESERVED_7",
    16: "ICSSD",
    27: "LASS",
    28: "SEPT_VE_DISABLE",
    29: "MIGRATABLE",
    30: "PKS",
    31: "KL",
    62: "TPA",
    63: "PERFMON",
}
DEBUG_BITS_MASK = 0xFF  # TD attributes bits 0-7

# The Intel SGX Root CA: self-signed, CN=Intel SGX Root CA, O=Intel Corporation, valid
# 2018-05-21 .. 2049-12-31, P-256, SHA-256 of the DER 44a0196b...b674d3 (INTEL_SGX_ROOT_CA_SHA256).
# Taken from the PCK chains of the bundled test quotes (tests/data/tdx-vectors: all four carry
# this same root) after checking it is self-signed with that subject; Intel publishes it at
# https://certificates.trustedservices.intel.com/IntelSGXRootCA.der. Every genuine TDX quote
# chains to it; verify_signatures compares the chain's root with it byte for byte.
INTEL_SGX_ROOT_CA_PEM = """\
-----BEGIN CERTIFICATE-----
MIICjzCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIw
aDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENv
cnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJ
BgNVBAYTAlVTMB4XDTE4MDUyMTEwNDUxMFoXDTQ5MTIzMTIzNTk1OVowaDEaMBgG
A1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0
aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYT
AlVTMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPWsCzaEKi7
1OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxFP2sJBK5zlKOB
uzCBuDAfBgNVHSMEGDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJ
MEegRaBDhkFodHRwczovL2NlcnRpZmljYXRlcy50cnVzdGVkc2VydmljZXMuaW50
ZWwuY29tL0ludGVsU0dYUm9vdENBLmRlcjAdBgNVHQ4EFgQUImUM1lqdNInzg7SV
Ur9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYI
KoZIzj0EAwIDSQAwRgIhAOW/5QkR+S9CiSDcNoowLuPRLsWGf/Yi7GSX94BgwTwg
AiEA4J0lrHoMs+Xo5o/sX6O9QWxHRAvZUGOdRQ7cvqRXaqI=
-----END CERTIFICATE-----
"""
INTEL_SGX_ROOT_CA_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"

# Intel SGX extensions in the PCK leaf certificate (FMSPC selects the TCB Info; PCESVN is the
# Provisioning Certification Enclave's SVN the PCK certificate was issued for).
_OID_SGX_EXTENSIONS = "1.2.840.113741.1.13.1"


def _hex(b: bytes | None) -> str | None:
    return None if b is None else b.hex()


def _u64hex(v: int) -> str:
    return f"0x{v:016x}"


# -- parsed structures -----------------------------------------------------------------------------
@dataclass(frozen=True)
class QuoteHeader:
    version: int
    att_key_type: int
    tee_type: int
    reserved: bytes  # 4 bytes at offset 8 ("reserved" in v4/v5; v3 SGX quotes had QE/PCE SVN here)
    qe_vendor_id: bytes
    user_data: bytes

    @property
    def is_tdx(self) -> bool:
        return self.tee_type == TEE_TYPE_TDX

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "att_key_type": self.att_key_type,
            "tee_type": f"0x{self.tee_type:08x}",
            "reserved": self.reserved.hex(),
            "qe_vendor_id": self.qe_vendor_id.hex(),
            "user_data": self.user_data.hex(),
        }


@dataclass(frozen=True)
class TdAttributes:
    """TDATTRIBUTES as a u64 (the quote stores it little-endian)."""

    value: int

    def is_set(self, bit: int) -> bool:
        return bool(self.value >> bit & 1)

    @property
    def set_bits(self) -> tuple[str, ...]:
        """Names of the set bits, low to high; unnamed bits as ``BIT<n>``."""
        return tuple(TD_ATTRIBUTE_BITS.get(b, f"BIT{b}") for b in range(64) if self.is_set(b))

    @property
    def debug(self) -> bool:
        """Any of bits 0-7 (DEBUG and the other "TD under debug" bits) is set."""
        return bool(self.value & DEBUG_BITS_MASK)

    def to_dict(self) -> dict:
        return {"value": _u64hex(self.value), "set": list(self.set_bits), "debug": self.debug}


@dataclass(frozen=True)
class TdReport:
    """The TD quote body (TD report): 584 bytes, or 648 for v5 body type 3 (TDX 1.5)."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: int
    td_attributes: TdAttributes
    xfam: int
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None = None  # body type 3 only
    mr_servicetd: bytes | None = None  # body type 3 only

    def to_dict(self) -> dict:
        d = {
            "tee_tcb_svn": self.tee_tcb_svn.hex(),
            "mr_seam": self.mr_seam.hex(),
            "mr_signer_seam": self.mr_signer_seam.hex(),
            "seam_attributes": _u64hex(self.seam_attributes),
            "td_attributes": self.td_attributes.to_dict(),
            "xfam": _u64hex(self.xfam),
            "mr_td": self.mr_td.hex(),
            "mr_config_id": self.mr_config_id.hex(),
            "mr_owner": self.mr_owner.hex(),
            "mr_owner_config": self.mr_owner_config.hex(),
            "rtmrs": [r.hex() for r in self.rtmrs],
            "report_data": self.report_data.hex(),
        }
        if self.tee_tcb_svn2 is not None:
            d["tee_tcb_svn2"] = _hex(self.tee_tcb_svn2)
            d["mr_servicetd"] = _hex(self.mr_servicetd)
        return d


@dataclass(frozen=True)
class QeReport:
    """The Quoting Enclave's SGX report body (384 bytes) inside the signature data."""

    raw: bytes = field(repr=False)
    cpu_svn: bytes
    misc_select: int
    isv_ext_prod_id: bytes
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes
    report_data: bytes

    def to_dict(self) -> dict:
        return {
            "cpu_svn": self.cpu_svn.hex(),
            "misc_select": f"0x{self.misc_select:08x}",
            "isv_ext_prod_id": self.isv_ext_prod_id.hex(),
            "attributes": self.attributes.hex(),
            "mr_enclave": self.mr_enclave.hex(),
            "mr_signer": self.mr_signer.hex(),
            "config_id": self.config_id.hex(),
            "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn,
            "config_svn": self.config_svn,
            "isv_family_id": self.isv_family_id.hex(),
            "report_data": self.report_data.hex(),
        }


@dataclass(frozen=True)
class PckInfo:
    """Intel SGX extension of the PCK leaf certificate (only the fields a verifier selects on)."""

    fmspc: bytes
    pce_id: bytes
    pce_svn: int
    cpu_svn: bytes
    tcb_components: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"fmspc": self.fmspc.hex(), "pce_id": self.pce_id.hex(), "pce_svn": self.pce_svn,
                "cpu_svn": self.cpu_svn.hex(), "tcb_components": list(self.tcb_components)}


@dataclass(frozen=True)
class CertInfo:
    """One certificate of the PCK chain: its PEM and what a person wants to see of it."""

    pem: str = field(repr=False)
    subject: str
    issuer: str
    serial: int
    not_before: datetime
    not_after: datetime
    sha256: str

    def x509(self) -> x509.Certificate:
        return _load_cert(self.pem)

    def to_dict(self) -> dict:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": f"{self.serial:x}",
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "sha256": self.sha256,
            "pem": self.pem,
        }


@dataclass(frozen=True)
class SignatureData:
    signature: bytes  # r||s, big-endian
    attestation_key: bytes  # X||Y, big-endian, P-256
    cert_data_type: int  # always 6 (QE report certification data)
    cert_data_size: int
    qe_report: QeReport
    qe_report_signature: bytes  # r||s, by the PCK leaf key
    qe_auth_data: bytes
    pck_chain_type: int  # always 5 (PCK certificate chain)
    pck_chain_size: int
    certificates: tuple[CertInfo, ...]  # leaf first
    pck: PckInfo | None  # None when the leaf carries no (readable) Intel SGX extension

    def to_dict(self) -> dict:
        return {
            "signature": self.signature.hex(),
            "attestation_key": self.attestation_key.hex(),
            "cert_data_type": self.cert_data_type,
            "cert_data_size": self.cert_data_size,
            "qe_report": self.qe_report.to_dict(),
            "qe_report_signature": self.qe_report_signature.hex(),
            "qe_auth_data": self.qe_auth_data.hex(),
            "pck_chain_type": self.pck_chain_type,
            "pck_chain_size": self.pck_chain_size,
            "certificates": [c.to_dict() for c in self.certificates],
            "pck": None if self.pck is None else self.pck.to_dict(),
        }


@dataclass(frozen=True)
class Quote:
    header: QuoteHeader
    body_type: int  # 2 or 3; a v4 quote has no body descriptor and is reported as 2 (TDX 1.0 layout)
    body_size: int
    body: TdReport
    signature_data_len: int
    signature_data: SignatureData
    trailing_bytes: int  # bytes after the signature data: not signed, never interpreted
    signed_region: bytes = field(repr=False)  # header (+ v5 descriptor) + body: what the quote signs
    raw: bytes = field(repr=False)

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def report_data(self) -> bytes:
        return self.body.report_data

    @property
    def td_attributes(self) -> TdAttributes:
        return self.body.td_attributes

    @property
    def qe_svn(self) -> int:
        """The Quoting Enclave's SVN: ISVSVN of the QE report (the header has no QE SVN in v4/v5)."""
        return self.signature_data.qe_report.isv_svn

    @property
    def pce_svn(self) -> int | None:
        """The PCE SVN from the PCK leaf certificate's Intel SGX extension, if present."""
        return None if self.signature_data.pck is None else self.signature_data.pck.pce_svn

    def to_dict(self) -> dict:
        """Everything decoded, JSON-ready: byte strings as lowercase hex, u64 fields as ``0x...``."""
        return {
            "size": len(self.raw),
            "header": self.header.to_dict(),
            "body_type": self.body_type,
            "body_size": self.body_size,
            "body": self.body.to_dict(),
            "signature_data_len": self.signature_data_len,
            "signature_data": self.signature_data.to_dict(),
            "trailing_bytes": self.trailing_bytes,
            "qe_svn": self.qe_svn,
            "pce_svn": self.pce_svn,
        }


# -- parsing ---------------------------------------------------------------------------------------
class _Reader:
    """Sequential little-endian reads from ``data[pos:end]``; every read is bounds-checked."""

    __slots__ = ("data", "pos", "end", "region")

    def __init__(self, data: bytes, pos: int, end: int, region: str):
        self.data, self.pos, self.end, self.region = data, pos, end, region

    def take(self, n: int, what: str) -> bytes:
        left = self.end - self.pos
        if n > left:
            raise QuoteError(f"truncated: {what} at offset {self.pos} needs {n} bytes, but only "
                             f"{max(left, 0)} remain in {self.region}", self.pos)
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "little")


def _parse_body(b: bytes, body_type: int) -> TdReport:
    def m(off: int, n: int = 48) -> bytes:
        return b[off:off + n]

    def u64(off: int) -> int:
        return int.from_bytes(b[off:off + 8], "little")

    extra = {}
    if body_type == BODY_TYPE_TDX15:
        extra = {"tee_tcb_svn2": m(584, 16), "mr_servicetd": m(600)}
    return TdReport(
        tee_tcb_svn=m(0, 16), mr_seam=m(16), mr_signer_seam=m(64), seam_attributes=u64(112),
        td_attributes=TdAttributes(u64(120)), xfam=u64(128), mr_td=m(136), mr_config_id=m(184),
        mr_owner=m(232), mr_owner_config=m(280), rtmrs=(m(328), m(376), m(424), m(472)),
        report_data=m(520, 64), **extra)


def _parse_qe_report(b: bytes) -> QeReport:
    def u(off: int, n: int) -> int:
        return int.from_bytes(b[off:off + n], "little")

    return QeReport(
        raw=b, cpu_svn=b[0:16], misc_select=u(16, 4), isv_ext_prod_id=b[32:48], attributes=b[48:64],
        mr_enclave=b[64:96], mr_signer=b[128:160], config_id=b[192:256], isv_prod_id=u(256, 2),
        isv_svn=u(258, 2), config_svn=u(260, 2), isv_family_id=b[304:320], report_data=b[320:384])


_PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----")


def _load_cert(pem: str) -> x509.Certificate:
    """Load a certificate and touch every part used later, so a malformed one fails here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # odd certificates warn (negative serial, long country code)
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
        if cert.serial_number <= 0:
            raise ValueError("serial number is not positive (RFC 5280)")
        _ = (cert.version, cert.subject, cert.issuer, cert.extensions, cert.public_key(),
             cert.signature_hash_algorithm, cert.not_valid_before_utc, cert.not_valid_after_utc)
    return cert


def _cert_info(pem: str, cert: x509.Certificate) -> CertInfo:
    return CertInfo(pem=pem, subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(),
                    serial=cert.serial_number, not_before=cert.not_valid_before_utc,
                    not_after=cert.not_valid_after_utc,
                    sha256=hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest())


def _split_pem_chain(chain: bytes, off: int) -> tuple[tuple[CertInfo, ...], x509.Certificate]:
    """The PEM certificates of the chain, leaf first; only whitespace and NULs may surround them."""
    try:
        text = chain.decode("ascii")
    except UnicodeDecodeError as e:
        raise QuoteError(f"PCK certificate chain: non-ASCII byte 0x{chain[e.start]:02x} at offset "
                         f"{off + e.start}; expected PEM text", off + e.start)
    infos: list[CertInfo] = []
    leaf = None
    pos = 0
    for match in [*_PEM_RE.finditer(text), None]:
        start = len(text) if match is None else match.start()
        gap = text[pos:start]
        if gap.strip(" \t\r\n\0"):
            bad = pos + len(gap) - len(gap.lstrip(" \t\r\n\0"))
            raise QuoteError(f"PCK certificate chain: text that is not a complete PEM certificate at "
                             f"offset {off + bad}", off + bad)
        if match is None:
            break
        pem = match.group(0).replace("\r\n", "\n") + "\n"
        try:
            cert = _load_cert(pem)
            info = _cert_info(pem, cert)
        except Exception as e:  # cryptography's lazy parsing raises several unrelated classes
            raise QuoteError(f"PCK certificate chain: certificate {len(infos)} at offset "
                             f"{off + match.start()} is not a valid X.509 certificate ({e})",
                             off + match.start())
        if leaf is None:
            leaf = cert
        infos.append(info)
        pos = match.end()
    if leaf is None:
        raise QuoteError(f"PCK certificate chain at offset {off}: no PEM certificate in it", off)
    return tuple(infos), leaf


def _cert_type(r: _Reader, what: str, want: int, label: str) -> int:
    at = r.pos
    value = r.uint(2, what)
    if value != want:
        name = _CERT_TYPE_NAMES.get(value, "unknown")
        raise QuoteError(f"{what} {value} ({name}) at offset {at}: only type {want} ({label}) is "
                         "supported", at)
    return value


def _rest_size(r: _Reader, what: str) -> int:
    """A 4-byte size that must cover exactly what is left of the region."""
    at = r.pos
    size = r.uint(4, what)
    if size != r.end - r.pos:
        raise QuoteError(f"{what} {size} at offset {at} does not match the {r.end - r.pos} bytes "
                         f"left in {r.region}", at)
    return size


def _parse_signature_data(r: _Reader) -> SignatureData:
    signature = r.take(64, "quote signature")
    att_key = r.take(64, "attestation public key")
    cert_type = _cert_type(r, "certification data type", CERT_TYPE_QE_REPORT, "QE report certification data")
    cert_size = _rest_size(r, "certification data size")
    qe_report = _parse_qe_report(r.take(QE_REPORT_SIZE, "QE report"))
    qe_sig = r.take(64, "QE report signature")
    auth_size = r.uint(2, "QE auth data size")
    auth = r.take(auth_size, f"QE auth data ({auth_size} bytes)")
    inner_type = _cert_type(r, "inner certification data type", CERT_TYPE_PCK_CHAIN, "PCK certificate chain")
    chain_size = _rest_size(r, "PCK certificate chain size")
    chain_off = r.pos
    certs, leaf = _split_pem_chain(r.take(chain_size, "PCK certificate chain"), chain_off)
    return SignatureData(
        signature=signature, attestation_key=att_key, cert_data_type=cert_type, cert_data_size=cert_size,
        qe_report=qe_report, qe_report_signature=qe_sig, qe_auth_data=auth, pck_chain_type=inner_type,
        pck_chain_size=chain_size, certificates=certs, pck=_pck_info(leaf))


def parse_quote(data: bytes | bytearray | memoryview) -> Quote:
    """Decode a binary TDX quote (v4, or v5 with body type 2 or 3). Raises :class:`QuoteError`.

    The TEE type is recorded, not enforced (:func:`check_quote` enforces it). The QE vendor ID
    is not enforced either (Intel's is :data:`INTEL_QE_VENDOR_ID`).
    """
    data = bytes(data)
    if not data:
        raise QuoteError("empty quote: no bytes at offset 0", 0)
    r = _Reader(data, 0, len(data), f"the quote ({len(data)} bytes)")
    version = r.uint(2, "version")
    if version not in (4, 5):
        hint = "; version 3 is an SGX quote" if version == 3 else ""
        raise QuoteError(f"version {version} at offset 0: only TDX quote versions 4 and 5 are "
                         f"supported{hint}", 0)
    att_key_type = r.uint(2, "attestation key type")
    if att_key_type != ATT_KEY_ECDSA_P256:
        raise QuoteError(f"attestation key type {att_key_type} at offset 2: only 2 (ECDSA-256 with "
                         "P-256) is supported", 2)
    header = QuoteHeader(version=version, att_key_type=att_key_type, tee_type=r.uint(4, "TEE type"),
                         reserved=r.take(4, "reserved"), qe_vendor_id=r.take(16, "QE vendor ID"),
                         user_data=r.take(20, "user data"))
    if version == 4:
        body_type, body_size = BODY_TYPE_TDX10, BODY_SIZES[BODY_TYPE_TDX10]
    else:
        at = r.pos
        body_type = r.uint(2, "body type")
        if body_type not in BODY_SIZES:
            hint = " (an SGX enclave report)" if body_type == BODY_TYPE_SGX else ""
            raise QuoteError(f"v5 body type {body_type}{hint} at offset {at}: only 2 (TDX 1.0 TD "
                             "report) and 3 (TDX 1.5 TD report) are supported", at)
        at = r.pos
        body_size = r.uint(4, "body size")
        if body_size != BODY_SIZES[body_type]:
            raise QuoteError(f"body size {body_size} at offset {at} does not match body type {body_type} "
                             f"(which is {BODY_SIZES[body_type]} bytes)", at)
    body = _parse_body(r.take(body_size, f"TD report body ({body_size} bytes)"), body_type)
    sig_len_at = r.pos
    sig_len = r.uint(4, "signature_data_len")
    sig_end = r.pos + sig_len
    if sig_end > len(data):
        raise QuoteError(f"signature_data_len {sig_len} at offset {sig_len_at} declares signature data "
                         f"up to offset {sig_end}, but the quote is only {len(data)} bytes", sig_len_at)
    region = f"the signature data (offsets {r.pos}..{sig_end}, signature_data_len {sig_len})"
    sig = _parse_signature_data(_Reader(data, r.pos, sig_end, region))
    return Quote(header=header, body_type=body_type, body_size=body_size, body=body,
                 signature_data_len=sig_len, signature_data=sig, trailing_bytes=len(data) - sig_end,
                 signed_region=data[:sig_len_at], raw=data)


# -- Intel SGX certificate extension (minimal DER) -------------------------------------------------
def _der_items(buf: bytes) -> list[tuple[int, bytes]]:
    """The consecutive DER TLVs of ``buf`` as (tag, value); ValueError when malformed."""
    items, i = [], 0
    while i < len(buf):
        if i + 2 > len(buf):
            raise ValueError("truncated DER header")
        tag, n = buf[i], buf[i + 1]
        i += 2
        if n & 0x80:
            k = n & 0x7F
            if not 1 <= k <= 4 or i + k > len(buf):
                raise ValueError("bad DER length")
            n = int.from_bytes(buf[i:i + k], "big")
            i += k
        if i + n > len(buf):
            raise ValueError("DER value runs past its container")
        items.append((tag, buf[i:i + n]))
        i += n
    return items


def _der_oid(b: bytes) -> str:
    if not b or b[-1] & 0x80:
        raise ValueError("malformed OID")
    arcs, v = [], 0
    for byte in b:
        v = v << 7 | byte & 0x7F
        if not byte & 0x80:
            arcs.append(v)
            v = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(map(str, [first, arcs[0] - 40 * first, *arcs[1:]]))


def _der_pairs(seq: bytes) -> dict[str, tuple[int, bytes]]:
    """A SEQUENCE OF SEQUENCE { OID, value } as {oid: (tag, value)}."""
    out = {}
    for tag, pair in _der_items(seq):
        if tag != 0x30:
            raise ValueError("expected a SEQUENCE")
        parts = _der_items(pair)
        if len(parts) != 2 or parts[0][0] != 0x06:
            raise ValueError("expected SEQUENCE { OID, value }")
        out[_der_oid(parts[0][1])] = parts[1]
    return out


def _pck_info(leaf: x509.Certificate) -> PckInfo | None:
    try:
        ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(_OID_SGX_EXTENSIONS)).value
        (tag, seq), = _der_items(ext.value)
        if tag != 0x30:
            return None
        top = _der_pairs(seq)
        p = _OID_SGX_EXTENSIONS
        tcb = _der_pairs(top[p + ".2"][1])
        comps = tuple(int.from_bytes(tcb[f"{p}.2.{i}"][1], "big") for i in range(1, 17))
        return PckInfo(fmspc=top[p + ".4"][1], pce_id=top[p + ".3"][1],
                       pce_svn=int.from_bytes(tcb[p + ".2.17"][1], "big"), cpu_svn=tcb[p + ".2.18"][1],
                       tcb_components=comps)
    except (x509.ExtensionNotFound, ValueError, KeyError, AttributeError):
        return None


# -- input formats ---------------------------------------------------------------------------------
_HEX_RE = re.compile(rb"(?:0x)?[0-9a-fA-F]+")
_B64_RE = re.compile(rb"[A-Za-z0-9+/_-]+={0,2}")


def decode_quote_input(data: bytes) -> tuple[bytes, str]:
    """A quote given as raw binary, base64 (standard or URL-safe) or hex text -> (bytes, format).

    A binary TDX quote starts with ``04 00`` or ``05 00``, which no text form can, so the
    detection is unambiguous for real quotes. Text is recognised only when every non-whitespace
    byte is in the alphabet; hex is tried before base64 (a real quote's base64 always has
    non-hex letters: it starts with ``BAACAIEA`` or ``BQACAIEA``).
    """
    compact = b"".join(data.split())
    if not compact:
        return data, "binary"
    if _HEX_RE.fullmatch(compact) and len(compact) % 2 == 0:
        return bytes.fromhex(compact.removeprefix(b"0x").decode("ascii")), "hex"
    if _B64_RE.fullmatch(compact):
        text = compact.replace(b"-", b"+").replace(b"_", b"/")
        text += b"=" * (-len(text) % 4)
        try:
            return base64.b64decode(text, validate=True), "base64"
        except (binascii.Error, ValueError) as e:
            raise QuoteError(f"the input looks like base64 text but does not decode: {e}")
    return data, "binary"


# -- policy ----------------------------------------------------------------------------------------
def _as_quote(quote: Quote | bytes | bytearray | memoryview) -> Quote:
    return quote if isinstance(quote, Quote) else parse_quote(quote)


def quote_problems(quote: Quote, expected_report_data: bytes, allow_debug: bool = False) -> list[str]:
    """What :func:`check_quote` would refuse, as a list of messages (empty: accepted)."""
    expected = bytes(expected_report_data)
    if len(expected) != REPORT_DATA_SIZE:
        raise ValueError(f"expected_report_data must be {REPORT_DATA_SIZE} bytes, got {len(expected)}")
    problems = []
    if not quote.header.is_tdx:
        kind = " (SGX)" if quote.header.tee_type == TEE_TYPE_SGX else ""
        problems.append(f"TEE type 0x{quote.header.tee_type:08x}{kind} at offset 4 is not TDX (0x00000081)")
    if not hmac.compare_digest(quote.body.report_data, expected):
        problems.append("REPORTDATA does not match the expected 64 bytes")
    attrs = quote.body.td_attributes
    if attrs.debug and not allow_debug:
        bits = [TD_ATTRIBUTE_BITS[b] for b in range(8) if attrs.is_set(b)]
        problems.append(f"debug TD: TD attributes {_u64hex(attrs.value)} have debug bits set "
                        f"({', '.join(bits)}); the host can read and change its state")
    return problems


def check_quote(quote: Quote | bytes, expected_report_data: bytes, allow_debug: bool = False) -> Quote:
    """Refuse a quote that is not TDX, carries other REPORTDATA, or is a debug TD.

    ``expected_report_data`` is the full 64 bytes (compared in constant time). Debug means any
    of TD attributes bits 0-7; ``allow_debug`` accepts it (development only). Raises
    :class:`QuoteError` listing every problem; returns the parsed quote. Signatures are not
    checked here (:func:`verify_signatures`; in production the verifier does it).
    """
    q = _as_quote(quote)
    problems = quote_problems(q, expected_report_data, allow_debug)
    if problems:
        raise QuoteError("quote refused: " + "; ".join(problems))
    return q


# -- offline signature verification ----------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class Verification:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checks": [c.to_dict() for c in self.checks]}


_CRYPTO_ERRORS = (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm)


def _p256_key(xy: bytes) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + xy)


def _ecdsa_verify(key, rs: bytes, message: bytes) -> None:
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise TypeError("the key is not an ECDSA P-256 key")
    sig = encode_dss_signature(int.from_bytes(rs[:32], "big"), int.from_bytes(rs[32:], "big"))
    key.verify(sig, message, ec.ECDSA(hashes.SHA256()))


def _check(name: str, ok_detail: str, fn) -> Check:
    try:
        fn()
    except InvalidSignature:
        return Check(name, False, "signature does not verify")
    except _CRYPTO_ERRORS as e:
        return Check(name, False, str(e) or type(e).__name__)
    return Check(name, True, ok_detail)


def _short(c: x509.Certificate) -> str:
    cn = c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(cn[0].value) if cn else c.subject.rfc4514_string()


def verify_signatures(quote: Quote | bytes) -> Verification:
    """Check a quote's signatures and chain offline; returns every check's result (never raises
    for a bad signature; :class:`QuoteError` only if ``quote`` is bytes that do not parse).

    Checks: ``quote_signature`` (ECDSA-P256/SHA-256 over header, v5 descriptor and body, with the
    attestation key), ``qe_report_signature`` (over the 384-byte QE report, with the PCK leaf
    certificate's key), ``qe_binding`` (QE report REPORTDATA = SHA-256(attestation key || QE auth
    data) || 32 zero bytes), ``cert_chain`` (exactly PCK leaf -> PCK CA -> root, each issued and
    signed by the next, CAs marked CA, root self-signed) and ``root_ca`` (the root is the pinned
    :data:`INTEL_SGX_ROOT_CA_PEM`). No network, no collateral: TCB status, QE Identity, CRLs
    and validity dates are not evaluated.
    """
    q = _as_quote(quote)
    sd = q.signature_data
    certs = [c.x509() for c in sd.certificates]
    checks = [
        _check("quote_signature", f"ECDSA-P256/SHA-256 over bytes 0..{len(q.signed_region)} with the "
               "attestation key",
               lambda: _ecdsa_verify(_p256_key(sd.attestation_key), sd.signature, q.signed_region)),
        _check("qe_report_signature", f"QE report signed by the PCK leaf key ({_short(certs[0])})",
               lambda: _ecdsa_verify(certs[0].public_key(), sd.qe_report_signature, sd.qe_report.raw)),
    ]
    want = hashlib.sha256(sd.attestation_key + sd.qe_auth_data).digest() + bytes(32)
    got = sd.qe_report.report_data
    if hmac.compare_digest(got, want):
        checks.append(Check("qe_binding", True, "QE report REPORTDATA = SHA-256(attestation key || QE "
                                                "auth data) || 32 zero bytes"))
    else:
        which = "first 32 bytes differ from" if got[:32] != want[:32] else "last 32 bytes are not zero in"
        checks.append(Check("qe_binding", False, f"QE report REPORTDATA {which} SHA-256(attestation key "
                                                 "|| QE auth data) || 32 zero bytes"))
    checks.append(_check_chain(certs))
    checks.append(_check_root(certs))
    return Verification(tuple(checks))


def _is_ca(c: x509.Certificate) -> bool:
    try:
        return bool(c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _check_chain(certs: list[x509.Certificate]) -> Check:
    if len(certs) != 3:
        return Check("cert_chain", False,
                     f"expected 3 certificates (PCK leaf, PCK CA, root), got {len(certs)}")
    leaf, ca, root = certs

    def run():
        for child, parent in ((leaf, ca), (ca, root), (root, root)):
            try:
                child.verify_directly_issued_by(parent)
            except _CRYPTO_ERRORS as e:
                what = "is not self-signed" if child is parent else f"is not issued by {_short(parent)}"
                raise ValueError(f"{_short(child)} {what} ({e or type(e).__name__})")
        for c in (ca, root):
            if not _is_ca(c):
                raise ValueError(f"{_short(c)} is not marked as a CA")

    return _check("cert_chain", " <- ".join(_short(c) for c in certs) + " (each signed by the next)", run)


def _check_root(certs: list[x509.Certificate]) -> Check:
    root = certs[-1]
    der = root.public_bytes(Encoding.DER)
    fp = hashlib.sha256(der).hexdigest()
    pinned = x509.load_pem_x509_certificate(INTEL_SGX_ROOT_CA_PEM.encode("ascii")).public_bytes(Encoding.DER)
    if der == pinned:
        return Check("root_ca", True, f"the pinned Intel SGX Root CA (SHA-256 {fp})")
    return Check("root_ca", False, f"the chain's root ({_short(root)}, SHA-256 {fp}) is not the pinned "
                                   "Intel SGX Root CA")
