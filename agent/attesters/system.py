"""The ``system`` attester: Alibaba's software report (``tee: "system"``, openanolis Trustee only).

Evidence (openanolis Trustee's ``system`` attester and verifier)::

    {"system_report": "<JSON text: {\\"hardware\\": {...}, \\"software\\": {\\"uname\\": ...}}>",
     "measurements": "[]", "mr_register": "",
     "environment": {"NAME": "value", ...},
     "report_data": "<std-base64 of the runtime-data digest>"}

``measurements: "[]"`` with ``mr_register: ""`` and no ``rtmr_register`` satisfies both verifier
generations (<= v1.7.x requires the first two; v1.7.8+ ignores them). Nothing here is signed by
hardware: the evidence is only as good as the Trustee policy that checks it, typically the
``environment`` map (e.g. ``input["system.environment.eas-test"] == "123"`` on the 0.1.0
dialect, ``input.system.environment["eas-test"]`` on EAR-era servers).

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
from .base import check_dialect, check_digest, get_logger

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
        return {
            "system_report": json.dumps(report, sort_keys=True, separators=(",", ":")),
            "measurements": "[]",
            "mr_register": "",
            "environment": environment,
            "report_data": b64encode(digest),
        }
