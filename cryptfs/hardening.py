"""Keep key material out of core dumps and away from ptrace by other users' processes."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import resource

log = logging.getLogger("cryptfs")

PR_SET_DUMPABLE = 4


def protect_process() -> None:
    """No core dumps (RLIMIT_CORE 0) and not dumpable: /proc/PID/mem and ptrace need root."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError) as e:
        log.warning("could not disable core dumps: %s", e)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_DUMPABLE, 0) failed: errno %d", ctypes.get_errno())
    except OSError as e:
        log.warning("could not mark the process non-dumpable: %s", e)
