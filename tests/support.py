"""Test helpers shared by tests/cryptfs, tests/sam and tests/agent: bundled data paths, the
real-gocryptfs oracle, tree helpers, CLI runner, mounting our own filesystem.

Fixtures live in conftest.py; plain helpers live here (``from tests.support import ...``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
EXAMPLES = DATA / "gocryptfs-examples"
PASSWORD_FILE = DATA / "password.txt"  # "test\n", the examples' password
PROJECT = TESTS.parent

# Published master keys of the bundled example filesystems (password "test"); spec §6 and
# gocryptfs example_filesystems_test.go.
EXAMPLE_MASTER_KEYS = {
    "v1.3": "fd890dab-86bf61cf-ec5ad460-ad3ed01f-9c52d546-2a31783d-a56b088d-3d05232e",
    "v2.2-deterministic-names": "722733f5-b0f399f5-5465ad7a-f0bed125-e82de7b4-045e7608-a5e5c78e-04a1a61e",
    "v2.2-xchacha": "44670e7e-32475bfc-bdfb8a8c-be17a767-0679cac0-be705d8c-af41c411-28c40f26",
    "v2.2-xchacha-deterministic-names":
        "beba88a9-c6cd1dc0-b69c6f9d-9daea493-9ae87082-4ffc40bf-b44e52db-3933af39",
    "v1.1-aessiv": "eaf371c3-f9a55336-8819f22b-7bccd7c2-a738cf61-7261c658-14c28a03-9428992b",
    # legacy but still readable by gocryptfs v2 (no HKDF, 12-byte key-wrap nonce)
    "v0.7": "ed7f6d83-40cce86c-0e7d79c2-a9438710-575221bf-30a0eb60-2821fa8f-7f3123bf",
    "v0.7-plaintextnames": "6d96397b-585631e1-c7cba69d-61e738b6-4d5ad2c2-e21f0fb3-52f60d3a-b08526f7",
    "v0.9": "1cafe3f4-bc316466-2214c47c-ecd89bf3-4e078fe4-f5faeea7-8b7cab02-884f5e1c",
}


def run_cli(*args: str | os.PathLike, module: str = "cryptfs", input: bytes | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m <module> ARGS`` in a subprocess; stdout/stderr captured as text."""
    return subprocess.run([sys.executable, "-m", module, *map(os.fspath, args)], input=input,
                          capture_output=True, cwd=PROJECT, timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)


def fuse_mounts() -> set[str]:
    with open("/proc/mounts", encoding="utf-8", errors="replace") as f:
        return {line.split()[1] for line in f if " fuse" in line}


class Oracle:
    """Real gocryptfs (Debian's package), used to write and read trees independently of us."""

    def __init__(self) -> None:
        self.exe = shutil.which("gocryptfs")

    def init(self, cipherdir: Path, passfile: Path = PASSWORD_FILE, *flags: str) -> None:
        cipherdir.mkdir(parents=True, exist_ok=True)
        subprocess.run([self.exe, "-init", "-q", "-scryptn", "10", "-passfile", str(passfile),
                        *flags, str(cipherdir)], check=True, capture_output=True)

    @contextlib.contextmanager
    def mount(self, cipherdir: Path, mountpoint: Path, passfile: Path = PASSWORD_FILE, *flags: str):
        """Mount, yield, and always unmount; fail if the mount is left behind."""
        mountpoint.mkdir(parents=True, exist_ok=True)
        # The gocryptfs daemon keeps the inherited stdout/stderr open: capturing them with pipes
        # would make subprocess.run wait for the daemon to exit. Use a file instead.
        with tempfile.TemporaryFile() as err:
            proc = subprocess.run([self.exe, "-q", "-passfile", str(passfile), *flags,
                                   str(cipherdir), str(mountpoint)], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=err)
            if proc.returncode != 0:
                err.seek(0)
                raise RuntimeError(f"gocryptfs mount failed ({proc.returncode}): {err.read().decode()}")
        try:
            yield mountpoint
        finally:
            unmount(mountpoint)


def unmount(mountpoint: Path) -> None:
    target = os.path.realpath(mountpoint)
    for _ in range(50):
        if target not in fuse_mounts():
            return
        subprocess.run(["fusermount3", "-u", target], capture_output=True)
        time.sleep(0.1)
    subprocess.run(["fusermount3", "-u", "-z", target], capture_output=True)
    pytest.fail(f"{target} was still mounted after the test; lazily unmounted")


def oracle_available() -> bool:
    return bool(shutil.which("gocryptfs") and shutil.which("fusermount3") and os.path.exists("/dev/fuse"))


def snapshot(root: Path, times: bool = True, skip: tuple[bytes, ...] = ()) -> dict[bytes, tuple]:
    """A comparable description of a tree: type, mode, content or target, mtime, by bytes path.

    ``skip``: relative paths left out (e.g. a link a mount refuses to resolve).
    """
    out: dict[bytes, tuple] = {}
    broot = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(broot):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, broot)
            if rel in skip:
                continue
            st = os.lstat(full)
            mtime = st.st_mtime_ns if times else None
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(full), mtime if times else None)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), mtime)
            else:
                with open(full, "rb") as f:
                    out[rel] = ("file", stat.S_IMODE(st.st_mode), f.read(), mtime)
    return out


def make_sample_tree(root: Path) -> Path:
    """Sizes around block edges, a hole, long/non-UTF-8/non-ASCII names, symlinks, nested dirs."""
    root.mkdir(parents=True, exist_ok=True)
    rnd = os.urandom
    for size in (0, 1, 17, 18, 19, 4095, 4096, 4097, (1 << 20) + 1):
        (root / f"size_{size}").write_bytes(rnd(size))
    with open(root / "sparse", "wb") as f:  # three whole-block holes, then data
        f.seek(3 * 4096 + 100)
        f.write(b"after the hole")
    for n in (175, 176, 255):
        (root / ("n" * n)).write_bytes(b"long name %d\n" % n)
    (root / os.fsdecode(b"raw\xff\xfename")).write_bytes(b"non-utf8\n")
    (root / "ünïcødé 名前").write_bytes(b"unicode\n")
    (root / "dir" / "sub" / "deeper").mkdir(parents=True)
    (root / "dir" / "sub" / "deeper" / "nested.txt").write_bytes(b"nested\n")
    (root / "emptydir").mkdir()
    (root / ("d" * 200)).mkdir()
    (root / ("d" * 200) / "inside").write_bytes(b"in a long-named dir\n")
    os.symlink("size_1", root / "rel_link")
    os.symlink("/a/b/c/d", root / "abs_link")
    os.symlink("../size_1", root / "dir" / "up_link")
    return root


@contextlib.contextmanager
def serving(server):
    """Serve a socketserver on a thread for the test; yields its http://127.0.0.1:PORT base URL."""
    import threading

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def serve_broker(b):
    """Run an agent.broker.Broker on a free loopback port for the test; yields its base URL."""
    from agent import broker

    return serving(broker.serve(b, "127.0.0.1", 0))


# mounting our own filesystem: always unmounted, and no daemon may be left behind ----------
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
