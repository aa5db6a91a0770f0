"""Keep key material out of core dumps and away from ptrace by other users' processes."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
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


MCL_CURRENT = 1
MCL_FUTURE = 2
MCL_ONFAULT = 4  # Linux >= 4.4: lock pages as they are touched, not whole mappings up front


def lock_memory() -> bool:
    """Keep the process's pages (the key among them) out of swap, where that is safe.

    Only with root's CAP_IPC_LOCK: under a small RLIMIT_MEMLOCK, MCL_FUTURE would make later
    allocations fail. Returns whether memory is locked.
    """
    if os.geteuid() != 0:
        log.info("not root: memory holding the key is not locked (it may be swapped)")
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0:
            log.warning("mlockall failed (errno %d): the key may be swapped", ctypes.get_errno())
            return False
    except OSError as e:
        log.warning("mlockall unavailable: %s", e)
        return False
    return True
