"""The ``sample`` attester: evidence with no hardware behind it, for development without a TEE.

Upstream Trustee's sample evidence (its ``sample`` attester and verifier)::

    {"svn": "1", "report_data": "<std-base64 of the runtime-data digest>"}

Anyone can produce it; a broker that releases keys to it protects nothing. Upstream KBS
(v0.10+) denies it by default, openanolis <= v1.6 allows it. ``select`` logs a loud warning
whenever it is chosen.
"""

from __future__ import annotations

from ..b64 import b64encode
from .base import check_dialect, check_digest


class SampleAttester:
    name = "sample"
    tee = "sample"

    def detect(self) -> bool:
        return True

    def evidence(self, report_data: bytes, dialect: str) -> dict:
        check_dialect(dialect)
        return {"svn": "1", "report_data": b64encode(check_digest(report_data))}
