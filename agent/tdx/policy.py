"""The relying party's acceptance policy for its own TDX quote.

:func:`check_quote` is what the attester runs on a freshly generated quote and the broker on
received evidence: TDX TEE type, the full 64-byte REPORTDATA (constant-time compare), no debug
bit (TD attributes bits 0-7). It is separate from :mod:`.verify` because it judges what the
quote says, not who signed it: no signature is checked here.
"""

from __future__ import annotations

import hmac

from ..errors import QuoteError
from .parse import as_quote
from .structures import REPORT_DATA_SIZE, TD_ATTRIBUTE_BITS, TEE_TYPE_SGX, Quote, u64hex

__all__ = ["check_quote", "quote_problems"]


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
        problems.append(f"debug TD: TD attributes {u64hex(attrs.value)} have debug bits set "
                        f"({', '.join(bits)}); the host can read and change its state")
    return problems


def check_quote(quote: Quote | bytes, expected_report_data: bytes, allow_debug: bool = False) -> Quote:
    """Refuse a quote that is not TDX, carries other REPORTDATA, or is a debug TD.

    ``expected_report_data`` is the full 64 bytes (compared in constant time). Debug means any
    of TD attributes bits 0-7; ``allow_debug`` accepts it (development only). Raises
    :class:`QuoteError` listing every problem; returns the parsed quote. Signatures are not
    checked here (:func:`verify_signatures`; in production the verifier does it).
    """
    q = as_quote(quote)
    problems = quote_problems(q, expected_report_data, allow_debug)
    if problems:
        raise QuoteError("quote refused: " + "; ".join(problems))
    return q
