"""The attester interface shared by the plug-ins, and its error."""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from ..errors import AttesterError  # noqa: F401  (re-exported: the plug-ins raise the agent's error)
from ..protocol import DIALECTS


@runtime_checkable
class Attester(Protocol):
    name: str  # "tdx" | "system" | "sample"
    tee: str  # the KBS "tee" value sent in /auth

    def detect(self) -> bool:
        """True when this machine can produce this attester's evidence."""
        ...

    def evidence(self, report_data: bytes, dialect: str) -> dict:
        """The evidence JSON object bound to ``report_data`` (the runtime-data digest).

        ``dialect`` is the KBS protocol version in use; only the tdx CCEL form depends on it.
        """
        ...


def check_digest(report_data, limit: int = 64) -> bytes:
    """The runtime-data digest as bytes; refuses an empty one or one over ``limit`` bytes."""
    if not isinstance(report_data, (bytes, bytearray, memoryview)):
        raise TypeError(f"report_data must be bytes, not {type(report_data).__name__}")
    data = bytes(report_data)
    if not data or len(data) > limit:
        raise AttesterError(f"the runtime-data digest is {len(data)} bytes; an attester accepts 1 to {limit} "
                            "(SHA-384 gives 48)")
    return data


def check_dialect(dialect: str) -> str:
    """``dialect`` if the agent knows it: the evidence's form may depend on it, so never guess."""
    if dialect not in DIALECTS:
        raise AttesterError(f"unknown KBS protocol dialect {dialect!r}; known: {', '.join(DIALECTS)}")
    return dialect


def get_logger(log: logging.Logger | None) -> logging.Logger:
    return log if log is not None else logging.getLogger("agent")
