"""The read-only FUSE mount against trees written by real gocryptfs (the oracle)."""

from __future__ import annotations

import errno
import mmap
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cryptfs import exitcodes
from tests.support import (
    PASSWORD_FILE,
    PROJECT,
    assert_safetensors_read,
    cryptfs_mount,
    daemon_pids,
    fuse_mounts,
    make_sample_tree,
    mount_cmd,
    snapshot,
    wait_gone,
)


def write_through_gocryptfs(oracle, tmp: Path, *flags: str) -> tuple[Path, Path]:
    """Plain sample tree and its ciphertext, written through a real gocryptfs mount."""
    plain = make_sample_tree(tmp / "plain")
    cipher = tmp / "cipher"
    oracle.init(cipher, PASSWORD_FILE, *flags)
    with oracle.mount(cipher, tmp / "gmnt") as gm:
        shutil.rmtree(gm / "x", ignore_errors=True)
        for item in plain.iterdir():
            dst = gm / item.name
            if item.is_symlink():
                os.symlink(os.readlink(item), dst)
            elif item.is_dir():
                shutil.copytree(item, dst, symlinks=True)
            elif item.name != "sparse":
                shutil.copy2(item, dst)
        with open(gm / "sparse", "wb") as f:  # a real hole of three whole blocks
            f.seek(3 * 4096 + 100)
            f.write(b"after the hole")
    return plain, cipher


@pytest.fixture(scope="module")
def gocryptfs_tree(oracle, tmp_path_factory):
    return write_through_gocryptfs(oracle, tmp_path_factory.mktemp("tree"))


@pytest.mark.parametrize("block_path", ["c", "python"])
def test_whole_tree_equal(gocryptfs_tree, tmp_path, block_path):
    plain, cipher = gocryptfs_tree
    with cryptfs_mount(cipher, tmp_path / "m", "--block-path", block_path) as m:
        skip = (b"abs_link",)
        assert snapshot(m, times=False, skip=skip) == snapshot(plain, times=False, skip=skip)
        assert os.stat(m / "sparse").st_size == 3 * 4096 + 100 + len(b"after the hole")
        assert os.readlink(m / "rel_link") == "size_1" and os.readlink(m / "dir" / "up_link") == "../size_1"
        with pytest.raises(OSError) as e:  # an absolute target is never served: EIO
            os.readlink(m / "abs_link")
        assert e.value.errno == errno.EIO


def test_same_view_as_gocryptfs(oracle, gocryptfs_tree, tmp_path):
    """Names, sizes, modes, mtimes, symlinks and inode numbers as real gocryptfs shows them."""
    _, cipher = gocryptfs_tree
    with oracle.mount(cipher, tmp_path / "g", PASSWORD_FILE, "-ro") as g:
        theirs = snapshot(g, skip=(b"abs_link",))  # gocryptfs serves it; we refuse it (EIO)
        their_ino = {p: os.lstat(os.path.join(os.fsencode(g), p)).st_ino for p in theirs}
    with cryptfs_mount(cipher, tmp_path / "m") as m:
        ours = snapshot(m, skip=(b"abs_link",))
        our_ino = {p: os.lstat(os.path.join(os.fsencode(m), p)).st_ino for p in ours}
        sv = os.statvfs(m)
        assert sv.f_blocks == os.statvfs(cipher).f_blocks
    assert ours == theirs
    assert our_ino == their_ino


def test_mmap_private_and_shared(gocryptfs_tree, tmp_path):
    plain, cipher = gocryptfs_tree
    want = (plain / "size_1048577").read_bytes()
    with cryptfs_mount(cipher, tmp_path / "m") as m:
        with open(m / "size_1048577", "rb") as f:
            for flags in (mmap.MAP_PRIVATE, mmap.MAP_SHARED):
                with mmap.mmap(f.fileno(), 0, flags=flags, prot=mmap.PROT_READ) as mm:
                    assert mm[:] == want
                    assert mm[4090:4200] == want[4090:4200]


def test_concurrent_random_preads(gocryptfs_tree, tmp_path):
    plain, cipher = gocryptfs_tree
    names = ["size_1048577", "size_4097", "sparse", "size_4096"]
    want = {n: (plain / n).read_bytes() for n in names}
    errors: list[str] = []
    with cryptfs_mount(cipher, tmp_path / "m") as m:
        def worker(seed: int) -> None:
            rnd = random.Random(seed)
            fds = {n: os.open(m / n, os.O_RDONLY) for n in names}
            try:
                for _ in range(300):
                    n = rnd.choice(names)
                    size = len(want[n])
                    off = rnd.randrange(0, size + 10)
                    ln = rnd.choice([1, 17, 4095, 4096, 4097, 65536, 300000])
                    got = os.pread(fds[n], ln, off)
                    if got != want[n][off:off + ln]:
                        errors.append(f"{n} off={off} len={ln}")
            finally:
                for fd in fds.values():
                    os.close(fd)
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[:5]


WRITE_CALLS = {
    "open_wronly": lambda m: os.open(m / "size_1", os.O_WRONLY),
    "open_rdwr": lambda m: os.open(m / "size_1", os.O_RDWR),
    "create": lambda m: os.open(m / "new", os.O_WRONLY | os.O_CREAT, 0o644),
    "truncate": lambda m: os.truncate(m / "size_1", 0),
    "mkdir": lambda m: os.mkdir(m / "newdir"),
    "rmdir": lambda m: os.rmdir(m / "emptydir"),
    "unlink": lambda m: os.unlink(m / "size_1"),
    "rename": lambda m: os.rename(m / "size_1", m / "renamed"),
    "symlink": lambda m: os.symlink("x", m / "newlink"),
    "link": lambda m: os.link(m / "size_1", m / "hardlink"),
    "chmod": lambda m: os.chmod(m / "size_1", 0o600),
    "chown": lambda m: os.chown(m / "size_1", 1, 1),
    "utime": lambda m: os.utime(m / "size_1", (0, 0)),
    "mknod": lambda m: os.mkfifo(m / "fifo"),
    "setxattr": lambda m: os.setxattr(m / "size_1", "user.x", b"1"),
}


def test_every_write_is_erofs(gocryptfs_tree, tmp_path):
    _, cipher = gocryptfs_tree
    before = snapshot(cipher)
    with cryptfs_mount(cipher, tmp_path / "m") as m:
        for name, call in WRITE_CALLS.items():
            with pytest.raises(OSError) as exc:
                call(m)
            assert exc.value.errno == errno.EROFS, f"{name}: {exc.value}"
    assert snapshot(cipher) == before


def test_tampered_block_gives_eio_earlier_blocks_read(oracle, tmp_path):
    plain = tmp_path / "p"
    plain.mkdir()
    data = os.urandom(10 * 4096)
    cipher = tmp_path / "c"
    oracle.init(cipher)
    with oracle.mount(cipher, tmp_path / "g") as g:
        (g / "model.bin").write_bytes(data)
    backing = [p for p in cipher.iterdir() if p.stat().st_size == 18 + 10 * 4128][0]
    with open(backing, "r+b") as f:  # flip one byte inside block 5
        f.seek(18 + 5 * 4128 + 100)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 1]))
    log = tmp_path / "mount.log"
    with cryptfs_mount(cipher, tmp_path / "m", "--log", str(log)) as m:
        fd = os.open(m / "model.bin", os.O_RDONLY | os.O_DIRECT) if False else os.open(m / "model.bin", 0)
        try:
            assert os.pread(fd, 5 * 4096, 0) == data[:5 * 4096]
            with pytest.raises(OSError) as exc:
                os.pread(fd, 4096, 5 * 4096)
            assert exc.value.errno == errno.EIO
            assert os.pread(fd, 4096, 6 * 4096) == data[6 * 4096:7 * 4096]
        finally:
            os.close(fd)
    text = log.read_text()
    assert "block 5" in text and "model.bin" in text


def test_wrong_password_nothing_mounted(gocryptfs_tree, tmp_path):
    _, cipher = gocryptfs_tree
    bad = tmp_path / "bad"
    bad.write_bytes(b"wrong\n")
    mnt = tmp_path / "m"
    mnt.mkdir()
    proc = subprocess.run([sys.executable, "-m", "cryptfs", "mount", "--passfile", str(bad),
                           str(cipher), str(mnt)], capture_output=True, text=True, cwd=PROJECT)
    assert proc.returncode == exitcodes.PASSWORD_INCORRECT
    assert "password" in proc.stderr.lower()
    assert os.path.realpath(mnt) not in fuse_mounts()


def test_mountpoint_errors(gocryptfs_tree, tmp_path):
    _, cipher = gocryptfs_tree
    missing = tmp_path / "missing"
    full = tmp_path / "full"
    full.mkdir()
    (full / "f").write_bytes(b"x")
    for mp, word in ((missing, "does not exist"), (full, "not empty")):
        proc = subprocess.run(mount_cmd(cipher, mp), capture_output=True, text=True, cwd=PROJECT)
        assert proc.returncode == exitcodes.MOUNTPOINT, proc.stderr
        assert word in proc.stderr
    with cryptfs_mount(cipher, tmp_path / "busy") as m:
        proc = subprocess.run(mount_cmd(cipher, m), capture_output=True, text=True, cwd=PROJECT)
        assert proc.returncode == exitcodes.MOUNTPOINT
        assert "already a mount point" in proc.stderr
    with cryptfs_mount(cipher, full, "--nonempty") as m:
        assert (m / "size_1").exists()


def test_external_unmount_stops_daemon_quickly(gocryptfs_tree, tmp_path):
    _, cipher = gocryptfs_tree
    with cryptfs_mount(cipher, tmp_path / "m") as m:
        pids = daemon_pids(m)
        assert pids, "no daemon process found"
        (m / "size_1048577").read_bytes()  # start the worker pool
        subprocess.run(["fusermount3", "-u", str(m)], check=True)
        assert not wait_gone(pids, 1.0), "daemon still running 1 s after fusermount3 -u"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_cleanly(gocryptfs_tree, tmp_path, sig):
    _, cipher = gocryptfs_tree
    with cryptfs_mount(cipher, tmp_path / "m") as m:
        pids = daemon_pids(m)
        assert len(pids) == 1
        os.kill(pids[0], sig)
        assert not wait_gone(pids, 3.0)
        deadline = time.monotonic() + 3
        while os.path.realpath(m) in fuse_mounts() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert os.path.realpath(m) not in fuse_mounts()


def test_key_through_inherited_pipe_and_notify_fd(gocryptfs_tree, tmp_path):
    """The agent's hand-over: --passfile /dev/fd/N on a pipe, readiness on --notify-fd."""
    plain, cipher = gocryptfs_tree
    mnt = tmp_path / "m"
    mnt.mkdir()
    key_r, key_w = os.pipe()
    note_r, note_w = os.pipe()
    os.write(key_w, PASSWORD_FILE.read_bytes())
    os.close(key_w)
    proc = subprocess.Popen([sys.executable, "-m", "cryptfs", "mount", "--fg", "--passfile",
                             f"/dev/fd/{key_r}", "--notify-fd", str(note_w), str(cipher), str(mnt)],
                            pass_fds=(key_r, note_w), cwd=PROJECT, stderr=subprocess.PIPE)
    os.close(key_r)
    os.close(note_w)
    try:
        with os.fdopen(note_r, "rb") as notes:
            line = notes.readline()
        assert line.startswith(b"ready"), line
        assert (mnt / "size_4097").read_bytes() == (plain / "size_4097").read_bytes()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr.read()
    assert os.path.realpath(mnt) not in fuse_mounts()


def test_readahead_raised(gocryptfs_tree, tmp_path):
    _, cipher = gocryptfs_tree
    with cryptfs_mount(cipher, tmp_path / "m", "--readahead-kb", "4096") as m:
        st = os.stat(m)
        dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
        with open(f"/sys/class/bdi/{dev}/read_ahead_kb") as f:
            assert f.read().strip() == "4096"


def test_safetensors_loads_through_mount(oracle, tmp_path):
    np = pytest.importorskip("numpy")
    st_np = pytest.importorskip("safetensors.numpy")
    tensors = {"w": np.arange(300000, dtype=np.float32).reshape(1000, 300),
               "b": np.ones(7, dtype=np.float16)}
    cipher = tmp_path / "c"
    oracle.init(cipher)
    with oracle.mount(cipher, tmp_path / "g") as g:
        st_np.save_file(tensors, str(g / "model.safetensors"))
    with cryptfs_mount(cipher, tmp_path / "m") as m:
        assert_safetensors_read(m / "model.safetensors", tensors)
