"""The decoded form of a TDX quote: layout constants and the frozen dataclasses :mod:`.parse` fills.

Layout (the quote format of Intel's TDX DCAP Quoting Library API specification, as in Intel SGX
DCAP's ``sgx_quote_4.h`` / ``sgx_quote_5.h``; all integers little-endian, ECDSA values
big-endian)::

    header (48)  [v5: body type u16, body size u32]  TD report body (584 or 648)
    signature_data_len u32  signature data  [trailing bytes, not covered by anything]

    signature data = quote signature (64) | attestation key X||Y (64) | cert type u16 = 6 | size u32
                     | QE report (384) | QE report signature (64) | QE auth size u16 | QE auth data
                     | inner cert type u16 = 5 | size u32 | PEM chain (PCK leaf, PCK CA, Intel SGX Root CA)

The structures only hold values and render them (``to_dict``: JSON-ready, byte strings as hex);
they do no I/O and no checking, so the CLI, the attester and the broker can share them without
pulling in the parser or the verifier. The certificate records (:class:`.certs.CertInfo`,
:class:`.certs.PckInfo`) live with the certificate code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .certs import CertInfo, PckInfo

__all__ = [
    "ATT_KEY_ECDSA_P256", "BODY_SIZES", "BODY_TYPE_SGX", "BODY_TYPE_TDX10", "BODY_TYPE_TDX15",
    "CERT_TYPE_PCK_CHAIN", "CERT_TYPE_QE_REPORT", "DEBUG_BITS_MASK", "HEADER_SIZE", "INTEL_QE_VENDOR_ID",
    "QE_REPORT_SIZE", "REPORT_DATA_SIZE", "TD_ATTRIBUTE_BITS", "TEE_TYPE_SGX", "TEE_TYPE_TDX", "QeReport",
    "Quote", "QuoteHeader", "SignatureData", "TdAttributes", "TdReport", "u64hex",
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


def _hex(b: bytes | None) -> str | None:
    return None if b is None else b.hex()


def u64hex(v: int) -> str:
    return f"0x{v:016x}"


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
        return {"value": u64hex(self.value), "set": list(self.set_bits), "debug": self.debug}


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
            "seam_attributes": u64hex(self.seam_attributes),
            "td_attributes": self.td_attributes.to_dict(),
            "xfam": u64hex(self.xfam),
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
