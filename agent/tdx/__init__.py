"""Intel TDX: quote parsing, policy checks and offline signature verification.

One module per concern, each importable on its own; everything callers use is re-exported here:

* :mod:`.structures`: layout constants and the decoded quote (:class:`Quote` and its parts);
* :mod:`.certs`: the PCK certificate chain, its Intel SGX extension, the pinned Intel SGX Root CA;
* :mod:`.parse`: :func:`parse_quote` (bytes to :class:`Quote`) and :func:`decode_quote_input`;
* :mod:`.policy`: :func:`check_quote` / :func:`quote_problems`, the relying party's acceptance rules;
* :mod:`.verify`: :func:`verify_signatures`, the offline signature and chain checks.
"""

from ..errors import QuoteError
from .certs import INTEL_SGX_ROOT_CA_PEM, INTEL_SGX_ROOT_CA_SHA256, CertInfo, PckInfo
from .parse import decode_quote_input, parse_quote
from .policy import check_quote, quote_problems
from .structures import (
    ATT_KEY_ECDSA_P256,
    BODY_SIZES,
    BODY_TYPE_SGX,
    BODY_TYPE_TDX10,
    BODY_TYPE_TDX15,
    CERT_TYPE_PCK_CHAIN,
    CERT_TYPE_QE_REPORT,
    DEBUG_BITS_MASK,
    HEADER_SIZE,
    INTEL_QE_VENDOR_ID,
    QE_REPORT_SIZE,
    REPORT_DATA_SIZE,
    TD_ATTRIBUTE_BITS,
    TEE_TYPE_SGX,
    TEE_TYPE_TDX,
    QeReport,
    Quote,
    QuoteHeader,
    SignatureData,
    TdAttributes,
    TdReport,
)
from .verify import Check, Verification, verify_signatures

__all__ = [
    "ATT_KEY_ECDSA_P256", "BODY_SIZES", "BODY_TYPE_SGX", "BODY_TYPE_TDX10", "BODY_TYPE_TDX15",
    "CERT_TYPE_PCK_CHAIN", "CERT_TYPE_QE_REPORT", "DEBUG_BITS_MASK", "HEADER_SIZE", "INTEL_QE_VENDOR_ID",
    "INTEL_SGX_ROOT_CA_PEM", "INTEL_SGX_ROOT_CA_SHA256", "QE_REPORT_SIZE", "REPORT_DATA_SIZE",
    "TD_ATTRIBUTE_BITS", "TEE_TYPE_SGX", "TEE_TYPE_TDX",
    "CertInfo", "Check", "PckInfo", "QeReport", "Quote", "QuoteError", "QuoteHeader", "SignatureData",
    "TdAttributes", "TdReport", "Verification",
    "check_quote", "decode_quote_input", "parse_quote", "quote_problems", "verify_signatures",
]
