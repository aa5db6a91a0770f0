"""Intel TDX: quote parsing, policy checks and offline signature verification."""

from .quote import (
    INTEL_SGX_ROOT_CA_PEM,
    INTEL_SGX_ROOT_CA_SHA256,
    TD_ATTRIBUTE_BITS,
    Check,
    Quote,
    QuoteError,
    TdAttributes,
    Verification,
    check_quote,
    decode_quote_input,
    parse_quote,
    quote_problems,
    verify_signatures,
)

__all__ = [
    "INTEL_SGX_ROOT_CA_PEM", "INTEL_SGX_ROOT_CA_SHA256", "TD_ATTRIBUTE_BITS", "Check", "Quote", "QuoteError",
    "TdAttributes", "Verification", "check_quote", "decode_quote_input", "parse_quote", "quote_problems",
    "verify_signatures",
]
