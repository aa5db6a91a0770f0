"""The ``system`` attester: Alibaba's software report (``tee: "system"``, openanolis Trustee only).

Evidence (openanolis Trustee's ``system`` attester and verifier)::

    {"system_report": "<JSON text: {\\"hardware\\": {...}, \\"software\\": {\\"uname\\": ...}}>",
     "measurements": "[]", "mr_register": "",
     "rtmr_register": "<hex of the system register>",
     "cc_eventlog": "<std-base64 of: spec-ID header event, AAEL records, 8 x 0xFF>",
     "environment": {"NAME": "value", ...},
     "report_data": "<std-base64 of the runtime-data digest>"}

``measurements: "[]"`` with ``mr_register: ""`` satisfies the older verifiers (<= v1.7.x require
both and ignore the rest); v1.7.8+ ignore those two and, given ``rtmr_register``, replay the
SHA-384 digests of every index-1 event in ``cc_eventlog`` from zero and require the result to
equal it (openanolis Trustee ``deps/verifier/src/system``). The register and the log are those
:mod:`agent.measure` writes (``SYSTEM_MEASURE_REGISTER``, ``AAEL_PATH``), read together under
the log's lock and checked to replay here first, so a mismatch is reported by the agent rather
than as a bare refusal. Unlike Trustiflux, the platform CCEL is never put in front: its index-1
events are RTMR0's, which the verifier would fold into the software register's replay.

Nothing here is signed by hardware: the evidence is only as good as the Trustee policy that
checks it, typically the ``environment`` map (e.g. ``input["system.environment.eas-test"] ==
"123"`` on the 0.1.0 dialect, ``input.system.environment["eas-test"]`` on EAR-era servers) and
the AAEL events (``input.system.uefi_event_logs``).

The environment is the process environment minus anything that may be a secret: the
evidence travels to the broker and lands in its logs and tokens. See :data:`SECRET_NAME_PARTS`,
:data:`SECRET_NAMES` and :data:`SECRET_VALUE_MARKERS`; a variable matching any of them is left
out and its *name* (never its value) is logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Mapping

from ..b64 import b64encode
from ..measure import MeasurementLog, SystemRegister, parse_events, register_for, replay
from . import eventlog
from .base import AttesterError, check_dialect, check_digest, get_logger

# A variable is left out of the environment map when its name, upper-cased, contains any of
# these. Deliberately broad: a false positive only hides a variable from the policy (its name
# is logged), a false negative sends a secret to the broker.
SECRET_NAME_PARTS = (
    "KEY",  # TRUSTEE_API_KEY, AWS_SECRET_ACCESS_KEY, MODEL_KEY, ...
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "CREDENTIAL",
    "PRIVATE",
    "AUTH",  # AUTHORIZATION, *_AUTH_HEADER, OAUTH_*
    "COOKIE",
    "SESSION",
)
# Exact names (upper-cased) that are dropped although no part above matches: the EAS identity
# header the KBS client sends as ``AAInstanceInfo`` (an authentication header of the gateway).
SECRET_NAMES = frozenset({"TRUSTEE_API_KEY", "AA_INSTANCE_INFO", "AAINSTANCEINFO"})
# Names ending in ``_PWD`` (DB_PWD) are passwords; PWD and OLDPWD (the shell's directories) are not.
_PWD_SUFFIX = re.compile(r"_PWD\Z")
# Values that are dropped whatever the name: PEM private keys and URLs carrying a password
# (``scheme://user:password@host``).
SECRET_VALUE_MARKERS = (
    re.compile(r"PRIVATE KEY-----"),
    re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@"),
)


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return (upper in SECRET_NAMES or any(p in upper for p in SECRET_NAME_PARTS)
            or bool(_PWD_SUFFIX.search(upper)))


def is_secret_value(value: str) -> bool:
    return any(m.search(value) for m in SECRET_VALUE_MARKERS)


def filter_environment(environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """(the environment map to report, sorted names left out as possible secrets)."""
    kept: dict[str, str] = {}
    dropped: list[str] = []
    for name in sorted(environ):
        value = environ[name]
        if is_secret_name(name) or is_secret_value(value):
            dropped.append(name)
        else:
            kept[name] = value
    return kept, dropped


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _field(text: str, key: str) -> str | None:
    """The value of the first ``key : value`` line (``/proc/cpuinfo`` and ``/proc/meminfo`` style)."""
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            return value.strip()
    return None


def _os_release(path: str) -> str | None:
    for line in _read_text(path).splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return None


def system_report(proc_root: str = "/proc", os_release: str = "/etc/os-release") -> dict:
    """Hardware and software facts readable without root or external tools."""
    cpuinfo = _read_text(os.path.join(proc_root, "cpuinfo"))
    meminfo = _read_text(os.path.join(proc_root, "meminfo"))
    mem = _field(meminfo, "MemTotal")  # "16384000 kB"
    mem_kb = int(mem.split()[0]) if mem and mem.split()[0].isdigit() else None
    try:
        nproc = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        nproc = os.cpu_count()
    u = os.uname()
    flags = (_field(cpuinfo, "flags") or "").split()
    return {
        "hardware": {
            "cpu_model": _field(cpuinfo, "model name") or u.machine,
            "cpu_vendor": _field(cpuinfo, "vendor_id"),
            "nproc": nproc,
            "mem_total_kb": mem_kb,
            "arch": u.machine,
            "hypervisor": "hypervisor" in flags,
            "tdx_guest": "tdx_guest" in flags,
        },
        "software": {
            "uname": " ".join((u.sysname, u.nodename, u.release, u.version, u.machine)),
            "kernel_release": u.release,
            "os": _os_release(os_release),
            "python": sys.version.split()[0],
        },
    }


class SystemAttester:
    name = "system"
    tee = "system"

    def __init__(self, environ: Mapping[str, str] | None = None, *, proc_root: str = "/proc",
                 os_release: str = "/etc/os-release", log: logging.Logger | None = None):
        self.environ = os.environ if environ is None else environ
        self.proc_root = proc_root
        self.os_release = os_release
        self.log = get_logger(log)

    def detect(self) -> bool:
        return sys.platform.startswith("linux")

    def evidence(self, report_data: bytes, dialect: str) -> dict:
        check_dialect(dialect)
        digest = check_digest(report_data)
        environment, dropped = filter_environment(self.environ)
        if dropped:
            self.log.info("system evidence: %d environment variable(s) left out as possible secrets: %s",
                          len(dropped), ", ".join(dropped))
        report = system_report(self.proc_root, self.os_release)
        rtmr_register, cc_eventlog = self.measurements()
        return {
            "system_report": json.dumps(report, sort_keys=True, separators=(",", ":")),
            "measurements": "[]",
            "mr_register": "",
            "rtmr_register": rtmr_register,
            "cc_eventlog": cc_eventlog,
            "environment": environment,
            "report_data": b64encode(digest),
        }

    def measurements(self) -> tuple[str, str]:
        """(``rtmr_register`` hex, ``cc_eventlog`` base64): the register and the log, read together.

        The log is sent even when empty (header and end marker only): the verifier then checks
        that the register is still zero instead of skipping the check.
        """
        register = register_for(self.name, self.environ)
        assert isinstance(register, SystemRegister)
        mlog = MeasurementLog.from_environ(self.environ, register, log=self.log)
        with mlog.locked(create=False):
            aael = mlog.snapshot()
            value = register.read()
        events = parse_events(aael)
        foreign = sorted({e.mr_index for e in events if e.mr_index != register.mr_index})
        if foreign:
            raise AttesterError(f"the event log {mlog.path} holds events for MR index {foreign[0]}, not "
                                f"{register.mr_index}: it was written for another attester (tdx?); the "
                                "system attester needs its own log (AAEL_PATH) and register "
                                "(SYSTEM_MEASURE_REGISTER)")
        replayed = replay(events)
        if replayed != value:
            raise AttesterError(f"the system register {register.path} is {value.hex()} but the event log "
                                f"{mlog.path} ({len(events)} events) replays to {replayed.hex()}: the two "
                                "were changed separately; the verifier would refuse this evidence. Delete "
                                "both to start over (the events must then be measured again)")
        data = eventlog.AAEL_SPEC_ID_HEADER + aael + eventlog.END_MARKER
        return value.hex(), b64encode(data)
