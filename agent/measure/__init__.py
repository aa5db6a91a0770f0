"""Measured launch: record what the agent loads as AAEL events, in a register and a log.

A verifier trusts a measurement only if it can replay the log to a register the TEE vouches
for. So each event is both appended to the Attestation-Agent event log (AAEL, the file
``AAEL_PATH``) and extended into the attester's register, crash-safely
(:mod:`agent.measure.log`); the attesters then send the log with their evidence
(``cc_eventlog``), and the quote (tdx) or ``rtmr_register`` (system) carries the register.

* :mod:`.events`: the TCG2 record format, validation, parsing, replay;
* :mod:`.registers`: RTMR3 (tdx), the software register (system), none (sample);
* :mod:`.log`: the log file and its write-ahead protocol.

The format, registers and environment variables are described in docs/measured-launch.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from ..errors import MeasurementError, MeasurementUnavailable
from .events import (
    AAEL_TAG,
    ALG_SHA384,
    DIGEST_SIZE,
    EV_EVENT_TAG,
    ZERO_REGISTER,
    Event,
    EventFormatError,
    aael_events,
    check_fields,
    extend,
    parse_events,
    replay,
)
from .log import DEFAULT_AAEL_PATH, MeasurementLog, aael_path
from .registers import (
    DEFAULT_SYSTEM_REGISTER,
    DEFAULT_TDX_MEASUREMENTS_DIR,
    REGISTERS,
    Availability,
    Register,
    SystemRegister,
    TdxRegister,
    register_for,
)

__all__ = [
    "AAEL_TAG", "ALG_SHA384", "DEFAULT_AAEL_PATH", "DEFAULT_SYSTEM_REGISTER", "DEFAULT_TDX_MEASUREMENTS_DIR",
    "DIGEST_SIZE", "EV_EVENT_TAG", "REGISTERS", "UNMEASURED_MR_INDEX", "ZERO_REGISTER", "Availability",
    "Event", "EventFormatError", "MeasurementError", "MeasurementLog", "MeasurementUnavailable", "Register",
    "SystemRegister", "TdxRegister", "aael_events", "aael_path", "check_fields", "extend", "measure",
    "parse_events", "register_for", "replay",
]

# The MR index an event carries when its attester has no register (sample): guest-components'
# default CCMR (PCR 17 -> 4). Such an event is returned, never logged.
UNMEASURED_MR_INDEX = 4


def measure(domain: str, operation: str, content: str, attester_name: str,
            environ: Mapping[str, str] = os.environ, *, required: bool = False,
            log: logging.Logger | None = None) -> Event:
    """Record ``"<domain> <operation> <content>"`` in ``attester_name``'s register and the log.

    The event is validated first (:class:`EventFormatError`, a ValueError, whatever the
    attester). When the attester has no usable register (``sample``; ``tdx`` on a kernel
    without RTMR extension): :class:`MeasurementUnavailable` if ``required``, else a warning
    and the event comes back unmeasured (not logged either: a logged event must replay to the
    register). Any failure to record it is a :class:`MeasurementError`.
    """
    log = log if log is not None else logging.getLogger("agent")
    register = register_for(attester_name, environ)
    event = Event(register.mr_index if register else UNMEASURED_MR_INDEX, domain, operation, content)
    if register is None:
        availability = Availability(False, f"attester {attester_name!r} has no measurement register (no TEE)")
    else:
        availability = register.available()
    if not availability:
        message = f"the event {event.text!r} cannot be measured: {availability.reason}"
        if required:
            raise MeasurementUnavailable(f"{message}; a measurement is required here, so nothing was loaded "
                                         "unmeasured")
        log.warning("%s; it is NOT measured: a verifier will not see it", message)
        return event
    MeasurementLog.from_environ(environ, register, log=log).append(event)
    log.info("measured %r into %s (MR index %d); log %s", event.text, register.name, register.mr_index,
             aael_path(environ))
    return event
