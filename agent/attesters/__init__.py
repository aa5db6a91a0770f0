"""Attester plug-ins: the evidence the KBS client sends in ``/attest``.

* ``tdx``: a TD quote through configfs-tsm (self-checked) plus the CC event log;
* ``system``: Alibaba's software report (``tee: "system"``), process environment included;
* ``sample``: no hardware at all, for development without a TEE.

:func:`select` picks one from ``--attester``, else ``ATTESTER``, else ``auto``. ``auto`` means
tdx when configfs-tsm offers the ``tdx_guest`` provider and an :class:`AttesterError` otherwise:
it never falls back to ``system`` or ``sample`` by itself, so a missing TEE cannot silently
turn into evidence without a hardware signature.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from .base import DIALECTS, Attester, AttesterError, get_logger
from .sample import SampleAttester
from .system import SystemAttester
from .tdx import DEFAULT_TSM_ROOT, PROVIDER, TdxAttester

__all__ = ["ATTESTERS", "AUTO", "CHOICES", "DIALECTS", "Attester", "AttesterError", "SampleAttester",
           "SystemAttester", "TdxAttester", "select"]

# Every attester by its name (its class's ``name``): what --attester and ATTESTER accept, besides
# AUTO. The order is the command line's: hardware first, development-only last.
ATTESTERS: dict[str, type] = {cls.name: cls for cls in (TdxAttester, SystemAttester, SampleAttester)}
AUTO = "auto"  # tdx where configfs-tsm offers it, else an error: never a fallback
CHOICES = (AUTO, *ATTESTERS)

SAMPLE_WARNING = (
    "*** ATTESTER 'sample' SELECTED: THIS IS NOT ATTESTATION ***",
    "sample evidence carries NO hardware signature: any process on any machine can produce it,",
    "so a broker that releases keys to it protects nothing.",
    "NEVER use it in production; it exists only for development without a TEE",
    "(unset ATTESTER / drop --attester sample to attest with the TEE).",
)


def select(name: str | None, environ: Mapping[str, str] = os.environ, *, allow_debug: bool = False,
           tsm_root: str = DEFAULT_TSM_ROOT, log: logging.Logger | None = None) -> Attester:
    """The attester named by ``name`` (the --attester flag), else ``ATTESTER``, else ``auto``."""
    log = get_logger(log)
    source = "--attester"
    if not name:
        name, source = environ.get("ATTESTER", ""), "ATTESTER"
    choice = (name or AUTO).strip().lower()
    if not choice:
        choice = AUTO
    if choice not in CHOICES:
        raise AttesterError(f"unknown attester {name!r} (from {source}); choose one of: {', '.join(CHOICES)}")

    if choice == SampleAttester.name:
        for line in SAMPLE_WARNING:
            log.warning("%s", line)
        return SampleAttester()
    if choice == SystemAttester.name:
        log.warning("attester 'system': the evidence is a software report with no hardware signature; it is "
                    "worth only what the broker's policy checks")
        return SystemAttester(environ, log=log)

    tdx = TdxAttester(tsm_root=tsm_root, allow_debug=allow_debug, environ=environ, log=log)
    if choice == TdxAttester.name:
        return tdx
    found, detail = tdx.probe()
    if found:
        log.info("attester auto: %s; using tdx", detail)
        return tdx
    raise AttesterError(
        "no TEE found (attester auto): looked for the configfs-tsm quote interface at "
        f"{tsm_root} and its 'provider' file reading '{PROVIDER}' in a fresh entry; {detail}. "
        + ("" if "mount -t configfs" in detail else
           "configfs must be mounted (mount -t configfs none /sys/kernel/config). ")
        + "The agent must run as root in a TDX guest. auto never falls back to evidence without hardware: "
        "to run without a TEE pick one explicitly with --attester or ATTESTER: 'system' (Alibaba Trustee's "
        "software report) or 'sample' (development only, no hardware signature)."
    )

