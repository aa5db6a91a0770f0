"""Bytes to :class:`.structures.Quote`: the bounds-checked TDX quote parser and input decoding.

* :func:`parse_quote` decodes the layout described in :mod:`.structures` with a bounds check on
  every field: a truncated, garbage or inconsistent quote raises :class:`QuoteError` (message:
  what is wrong, at which offset), never ``IndexError``/``struct.error``. Bytes after the
  declared signature data are tolerated and counted (``Quote.trailing_bytes``): real quotes
  carry padding there.
* :func:`decode_quote_input` accepts a quote as raw binary, base64 or hex text (what the CLI
  and the evidence carry), before parsing.

Only decoding happens here: the policy (:mod:`.policy`) and the signatures (:mod:`.verify`) are
judged elsewhere, on the parsed quote.
"""

from __future__ import annotations

import base64
import binascii
import re

from ..errors import QuoteError
from .certs import pck_info, split_pem_chain
from .structures import (
    ATT_KEY_ECDSA_P256,
    BODY_SIZES,
    BODY_TYPE_SGX,
    BODY_TYPE_TDX10,
    BODY_TYPE_TDX15,
    CERT_TYPE_PCK_CHAIN,
    CERT_TYPE_QE_REPORT,
    QE_REPORT_SIZE,
    QeReport,
    Quote,
    QuoteHeader,
    SignatureData,
    TdAttributes,
    TdReport,
)

__all__ = ["as_quote", "decode_quote_input", "parse_quote"]

_CERT_TYPE_NAMES = {
    1: "PPID in cleartext", 2: "PPID RSA-2048-OAEP encrypted", 3: "PPID RSA-3072-OAEP encrypted",
    4: "PCK leaf certificate", 5: "PCK certificate chain", 6: "QE report certification data",
}


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
    certs, leaf = split_pem_chain(r.take(chain_size, "PCK certificate chain"), chain_off)
    return SignatureData(
        signature=signature, attestation_key=att_key, cert_data_type=cert_type, cert_data_size=cert_size,
        qe_report=qe_report, qe_report_signature=qe_sig, qe_auth_data=auth, pck_chain_type=inner_type,
        pck_chain_size=chain_size, certificates=certs, pck=pck_info(leaf))


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


def as_quote(quote: Quote | bytes | bytearray | memoryview) -> Quote:
    """A parsed quote as is, bytes parsed: what :mod:`.policy` and :mod:`.verify` accept."""
    return quote if isinstance(quote, Quote) else parse_quote(quote)


# -- input formats ----------------------------------------------------------------------------------
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
