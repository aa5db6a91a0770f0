"""Mounting our own filesystem in tests: always unmounted, and no daemon may be left behind."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PASSWORD_FILE, PROJECT, fuse_mounts, unmount


def daemon_pids(mountpoint: Path, module: str = "cryptfs") -> list[int]:
    """PIDs of ``python -m <module>`` processes whose command line names this mount point."""
    target = os.fsencode(os.path.realpath(mountpoint))
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if module.encode() in argv and any(os.path.realpath(a) == target for a in argv if a.startswith(b"/")):
            pids.append(int(entry))
    return pids


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if os.path.exists(f"/proc/{p}") and _not_zombie(p)]
        time.sleep(0.02)
    return alive


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ")[1][:1] != b"Z"
    except OSError:
        return False


def mount_cmd(cipherdir: Path, mountpoint: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "cryptfs", "mount", "--passfile", str(PASSWORD_FILE), *args,
            str(cipherdir), str(mountpoint)]


@contextlib.contextmanager
def cryptfs_mount(cipherdir: Path, mountpoint: Path, *args: str, env: dict | None = None):
    """Mount with our daemon; in finally unmount and fail if the mount or daemon stays."""
    with daemon_mount(mount_cmd(cipherdir, mountpoint, *args), mountpoint, "cryptfs", env) as m:
        yield m


@contextlib.contextmanager
def daemon_mount(cmd: list[str], mountpoint: Path, module: str, env: dict | None = None):
    """Run a daemonizing ``python -m <module> mount`` command; in finally unmount and fail if
    the mount or its daemon stays."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT, timeout=60,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, f"{module} mount failed ({proc.returncode}): {proc.stderr}"
    assert os.path.realpath(mountpoint) in fuse_mounts(), f"{module} mount returned 0 but nothing is mounted"
    pids = daemon_pids(mountpoint, module)
    try:
        assert len(pids) == 1, f"expected one {module} mount daemon, found {pids}"
        yield mountpoint
    finally:
        unmount(mountpoint)
        left = wait_gone(pids, 2.0)
        if left:
            for p in left:
                os.kill(p, 9)
            pytest.fail(f"{module} mount daemon(s) {left} still running after unmount")


def assert_safetensors_read(path: Path, tensors: dict) -> None:
    """A safetensors file reads back whole (load_file) and lazily (safe_open), tensor for tensor."""
    import safetensors.numpy as st_np
    from safetensors import safe_open

    loaded = st_np.load_file(str(path))
    with safe_open(str(path), framework="np") as f:
        lazily = f.get_tensor("w")
    assert set(loaded) == set(tensors)
    assert all((loaded[k] == v).all() for k, v in tensors.items())
    assert (lazily == tensors["w"]).all()
