"""MOUNT_MODE=copy: where FUSE is unavailable, the plaintext goes to RAM, never to a disk.

The target must be on tmpfs or ramfs (e.g. under /dev/shm), absent or empty, and the plaintext
must fit in the memory that is available; all of it is checked before the key is fetched or
anything is written. The plaintext lives only as long as the run: :class:`CopyTarget` removes it
on every way out (the command's exit, an error, SIGTERM/SIGINT to the agent), so a stopped
container leaves no decrypted model behind in a shared tmpfs, and the next start finds the
target empty. tmpfs pages can be swapped where swap is configured (docs/agent.md says so).
"""

from __future__ import annotations

import logging
import os
import shutil

from ..errors import ConfigurationError

__all__ = ["RAM_FILESYSTEMS", "CopyTarget", "available_memory", "check_fits", "check_ram_target", "fstype"]

log = logging.getLogger("agent.run")

RAM_FILESYSTEMS = ("tmpfs", "ramfs")


def check_ram_target(mount_path: str) -> str:
    """The real path of MODEL_MOUNT_PATH if it is RAM-backed and absent or empty; refused otherwise."""
    target = os.path.realpath(mount_path)
    kind = fstype(os.path.dirname(target) if not os.path.exists(target) else target)
    if kind not in RAM_FILESYSTEMS:
        raise ConfigurationError(f"MOUNT_MODE=copy: MODEL_MOUNT_PATH={mount_path} is on {kind}, not "
                                 "tmpfs: the plaintext would reach a disk; use a path under /dev/shm or a "
                                 "tmpfs volume")
    if os.path.lexists(target) and not os.path.isdir(target):
        raise ConfigurationError(f"MOUNT_MODE=copy: MODEL_MOUNT_PATH={mount_path} is not a directory")
    if os.path.isdir(target) and os.listdir(target):
        raise ConfigurationError(f"MOUNT_MODE=copy: MODEL_MOUNT_PATH={mount_path} is not empty (a plaintext "
                                 "left by an agent that was killed?): empty it, or choose another path")
    return target


class CopyTarget:
    """The checked target and whether this run created it: what :meth:`remove` must undo."""

    def __init__(self, mount_path: str):
        self.path = check_ram_target(mount_path)
        self.created = not os.path.lexists(self.path)  # else an empty directory (a tmpfs volume?) we keep

    def remove(self) -> None:
        """Delete the plaintext: the directory if this run made it, else only what is inside."""
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)
        elif os.path.isdir(self.path):
            for name in os.listdir(self.path):
                full = os.path.join(self.path, name)
                if os.path.isdir(full) and not os.path.islink(full):
                    shutil.rmtree(full, ignore_errors=True)
                else:
                    try:
                        os.unlink(full)
                    except FileNotFoundError:
                        pass
        left = os.path.isdir(self.path) and (self.created or os.listdir(self.path))
        if left:
            log.error("MOUNT_MODE=copy: the plaintext in %s could not be removed completely", self.path)
        else:
            log.info("MOUNT_MODE=copy: the plaintext in %s was removed", self.path)


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
