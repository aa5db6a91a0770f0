"""MOUNT_MODE=copy: where FUSE is unavailable, the plaintext goes to RAM, never to a disk.

The target must be on tmpfs or ramfs (e.g. under /dev/shm) and the plaintext must fit in the
memory that is available; both are checked before the key is fetched or anything is written.
tmpfs pages can be swapped where swap is configured (docs/agent.md says so).
"""

from __future__ import annotations

import os

from ..errors import ConfigurationError

__all__ = ["RAM_FILESYSTEMS", "available_memory", "check_fits", "check_ram_target", "fstype"]

RAM_FILESYSTEMS = ("tmpfs", "ramfs")


def check_ram_target(mount_path: str) -> str:
    """The real path of MODEL_MOUNT_PATH if it is RAM-backed; refused (not warned about) otherwise."""
    target = os.path.realpath(mount_path)
    kind = fstype(os.path.dirname(target) if not os.path.exists(target) else target)
    if kind not in RAM_FILESYSTEMS:
        raise ConfigurationError(f"MOUNT_MODE=copy: MODEL_MOUNT_PATH={mount_path} is on {kind}, not "
                                 "tmpfs: the plaintext would reach a disk; use a path under /dev/shm or a "
                                 "tmpfs volume")
    return target


def check_fits(need: int) -> None:
    """Refuse a model larger than the available memory: better than the OOM killer half-way."""
    avail = available_memory()
    if need > avail:
        raise ConfigurationError(f"MOUNT_MODE=copy: the model needs about {need >> 20} MiB but only "
                                 f"{avail >> 20} MiB of memory is available")


def fstype(path: str) -> str:
    """The type of the filesystem ``path`` is on: the longest mount point that contains it."""
    best, kind = "", "unknown"
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            point = parts[1].replace("\\040", " ")
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
                best, kind = point, parts[2]
    return kind


def available_memory() -> int:
    """MemAvailable in bytes (0 if the kernel does not say)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0
