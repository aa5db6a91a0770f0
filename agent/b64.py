"""The agent's two base64 forms, one helper pair each.

Trustee's verifiers decode evidence (report data, quotes, event logs) and nonces with the padded
STANDARD engine; JOSE (JWE members, JWK coordinates, JWT parts) uses base64url without padding
(RFC 7515 §2, Trustee's URL_SAFE_NO_PAD). Python's decoders silently skip foreign characters
unless told otherwise, so both decoders here are strict: what the broker (or an attacker in
front of it) sends is refused rather than guessed at.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

__all__ = ["b64decode", "b64encode", "b64url_decode", "b64url_encode"]

_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


def b64encode(data: bytes | bytearray | memoryview) -> str:
    """Standard base64 with padding, as every Trustee verifier decodes it."""
    return base64.b64encode(bytes(data)).decode("ascii")


def b64decode(text: str | bytes) -> bytes:
    """Strict standard base64: padding required, no foreign characters; ValueError otherwise."""
    return base64.b64decode(text, validate=True)


def b64url_encode(data: bytes | bytearray | memoryview) -> str:
    """base64url without padding, as JOSE (RFC 7515 §2) and Trustee's URL_SAFE_NO_PAD write it."""
    return base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode("ascii")


def b64url_decode(value: Any, what: str, error: type[Exception] = ValueError) -> bytes:
    """Strict base64url decode of a JOSE member; ``what`` names it in the ``error`` raised.

    The alphabet is checked first (Python's decoder would skip foreign characters). Trailing
    ``=`` padding is tolerated (not produced by Trustee, harmless to accept).
    """
    if not isinstance(value, str):
        raise error(f"{what} must be a base64url string, got {type(value).__name__}")
    body = value.rstrip("=")
    if not _B64URL_RE.fullmatch(body) or len(body) % 4 == 1:
        raise error(f"{what} is not valid base64url (unpadded, alphabet A-Z a-z 0-9 - _)")
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise error(f"{what} is not valid base64url") from None
