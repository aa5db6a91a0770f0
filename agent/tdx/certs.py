"""The X.509 side of a TDX quote: the PCK certificate chain and the pinned Intel SGX Root CA.

A quote's signature data ends with a PEM chain (PCK leaf, PCK CA, Intel SGX Root CA). This module
turns that text into :class:`CertInfo` records (:func:`split_pem_chain`, which reports a bad
certificate at its offset in the quote), reads the Intel SGX extension of the PCK leaf into
:class:`PckInfo` with a minimal DER reader (``cryptography`` leaves that extension opaque), and
holds the root every genuine quote chains to (:data:`INTEL_SGX_ROOT_CA_PEM`). It is kept apart
from the byte layout (:mod:`.parse`) because it is certificate handling, not quote decoding,
and from :mod:`.verify` because parsing already needs it to load and sanity-check the chain.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..errors import QuoteError

__all__ = [
    "INTEL_SGX_ROOT_CA_PEM", "INTEL_SGX_ROOT_CA_SHA256", "CertInfo", "PckInfo", "load_cert", "pck_info",
    "split_pem_chain",
]

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
        return load_cert(self.pem)

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


# -- the PEM chain ----------------------------------------------------------------------------------
_PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----")


def load_cert(pem: str) -> x509.Certificate:
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


def split_pem_chain(chain: bytes, off: int) -> tuple[tuple[CertInfo, ...], x509.Certificate]:
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
            cert = load_cert(pem)
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


# -- Intel SGX certificate extension (minimal DER) --------------------------------------------------
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


def pck_info(leaf: x509.Certificate) -> PckInfo | None:
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
