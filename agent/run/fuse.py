"""Whether this container can mount FUSE, and what to tell the operator when it cannot.

``run`` asks before the key is fetched (a mount that cannot work must not cost a key release)
and ``check`` reports it; both look at what the mount child will need: ``/dev/fuse`` that can be
opened and a libfuse3 that loads. The hint depends on who runs the agent: a non-root user lacks
the privilege, not the device, and everyone may fall back to ``MOUNT_MODE=copy``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["fuse_hint", "fuse_problem", "libfuse3_problem"]

COPY_HINT = "or set MOUNT_MODE=copy to decrypt the model into tmpfs instead of mounting it"


def fuse_hint() -> str:
    """What the container needs for FUSE, for this user, ending with the MOUNT_MODE=copy way out."""
    if os.geteuid() != 0:
        return (f"the agent runs as uid {os.geteuid()}, and a FUSE mount needs root (or CAP_SYS_ADMIN): run "
                f"the container's entrypoint as root, {COPY_HINT}")
    if not os.path.exists("/dev/fuse"):
        return ("the container has no /dev/fuse: run it with --device /dev/fuse and --cap-add SYS_ADMIN "
                f"(on EAS: see docs/container.md), {COPY_HINT}")
    return f"the container needs --device /dev/fuse and CAP_SYS_ADMIN, {COPY_HINT}"


def libfuse3_problem() -> str | None:
    """Why mfusepy (in the mount child) will not load libfuse3, or None; the agent's environment is
    left untouched (mfusepy's own loader sets FUSE_LIBRARY_NAME, which the command would inherit)."""
    path = os.environ.get("FUSE_LIBRARY_PATH") or ctypes.util.find_library("fuse3")
    if not path:
        return "libfuse3 is not installed (apt-get install fuse3)"
    try:
        lib = ctypes.CDLL(path)
        version = lib.fuse_version()
    except (OSError, AttributeError) as e:
        return f"libfuse3 cannot be loaded ({e}): apt-get install fuse3"
    if version < 30:
        return f"{path} is libfuse {version // 10}, not libfuse3 (apt-get install fuse3)"
    return None


def fuse_problem() -> str | None:
    """Why a FUSE mount cannot work here (with the fix), or None."""
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as e:
        return f"/dev/fuse cannot be opened ({e.strerror}): {fuse_hint()}"
    problem = libfuse3_problem()
    return f"{problem}, {COPY_HINT}" if problem else None
