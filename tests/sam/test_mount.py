"""``python -m sam mount``: the shared read-only FUSE adapter serving a Sam package.

Every mount here goes through ``sam_mount`` (or an explicit try/finally for the foreground
process), which always unmounts and fails if the mount or its daemon is left behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sam import exitcodes
from sam.manifest import CHUNK_SIZE, HEADER_LEN, NONCE_LEN, TAG_LEN
from sam.pack import pack
from sam.package import Package
from tests.support import (
    PROJECT,
    assert_safetensors_read,
    daemon_mount,
    daemon_pids,
    fuse_mounts,
    unmount,
    wait_gone,
)

KEY = b"model-owner-key-1"
KEY_ID = "toy-model-0001"
CIPHER_CHUNK = CHUNK_SIZE + NONCE_LEN + TAG_LEN
BIG = "weights/model.safetensors"
BIG_SIZE = 5 * CHUNK_SIZE + 1234  # six chunks, the last one partial

# relative path -> (content, mode); directories are implied by the paths
MODEL_FILES = {
    "config.json": (b'{"model_type": "toy", "hidden_size": 8}\n', 0o644),
    "run.sh": (b"#!/bin/sh\necho serving\n", 0o755),
    "secret.txt": (b"only the owner reads this\n", 0o600),
    "empty.bin": (b"", 0o644),
    BIG: (None, 0o644),  # random, BIG_SIZE bytes
    "weights/one-chunk.bin": (None, 0o444),  # random, exactly one chunk
    "weights/shard-a.bin": (None, 0o644),  # random, same size as shard-b (for the swap case)
    "weights/shard-b.bin": (None, 0o644),
    "tokenizer/nested/deep/vocab.txt": (b"hello\nworld\n", 0o640),
}
RANDOM_SIZES = {BIG: BIG_SIZE, "weights/one-chunk.bin": CHUNK_SIZE,
                "weights/shard-a.bin": 3000, "weights/shard-b.bin": 3000}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_model(root: Path) -> dict[str, bytes]:
    contents = {}
    for rel, (data, mode) in MODEL_FILES.items():
        if data is None:
            data = os.urandom(RANDOM_SIZES[rel])
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
        contents[rel] = data
    return contents


def pack_quick(model: Path, parent: Path, key: bytes = KEY, key_id: str = KEY_ID) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    result = pack(str(model), key, key_id, str(parent), scrypt_logn=10, progress=False)
    return Path(result.out_dir)


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def mount_args(pkg: Path, mnt: Path, key_file: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sam", "mount", str(pkg), str(mnt), "--key-file", str(key_file), *extra]


def run_sam(*args: str | os.PathLike, env: dict | None = None, cwd: Path = PROJECT,
            timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sam", *map(os.fspath, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


def sam_mount(pkg: Path, mnt: Path, key_file: Path, *extra: str, env: dict | None = None):
    """Mount with the sam daemon; in finally unmount and fail if the mount or daemon stays."""
    return daemon_mount(mount_args(pkg, mnt, key_file, *extra), mnt, "sam", env)


def assert_nothing_mounted(mnt: Path) -> None:
    assert os.path.realpath(mnt) not in fuse_mounts()
    assert not daemon_pids(mnt, "sam"), "a sam daemon is running for a mount that failed"
    assert os.listdir(mnt) == []


def served_tree(mnt: Path) -> tuple[dict[str, tuple], set[str]]:
    """Files (sha256, size, mode) and directories under a mount, by relative path."""
    files, dirs = {}, set()
    for dirpath, dirnames, filenames in os.walk(mnt):
        rel_dir = os.path.relpath(dirpath, mnt)
        for d in dirnames:
            dirs.add(os.path.normpath(os.path.join(rel_dir, d)))
        for name in filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            with open(full, "rb") as f:
                data = f.read()
            files[os.path.normpath(os.path.join(rel_dir, name))] = (sha(data), st.st_size, st.st_mode)
    return files, dirs


# fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The model, its package (plus extras added after packing), a key file and a second package."""
    base = tmp_path_factory.mktemp("sam")
    model = base / "model"
    contents = make_model(model)
    pkg = pack_quick(model, base / "pkgs")
    other = pack_quick(model, base / "other")  # same model and key, another pack: another digest
    key_file = base / "key.txt"
    key_file.write_bytes(KEY + b"\n")
    clean = base / "clean"
    shutil.copytree(pkg, clean / KEY_ID)
    # added after packing: never part of the mounted tree
    (pkg / "added-later.bin").write_bytes(b"not in the manifest\n")
    (pkg / "weights" / "extra.bin").write_bytes(b"not in the manifest either\n")
    (pkg / "newdir").mkdir()
    (pkg / "newdir" / "inside.txt").write_bytes(b"hidden\n")
    return {"base": base, "model": model, "contents": contents, "pkg": pkg, "clean": clean / KEY_ID,
            "other": other, "key_file": key_file}


@pytest.fixture(scope="module")
def mounted(world, tmp_path_factory):
    """One mount of the package for the read-only checks, pinned to its own digest."""
    base = tmp_path_factory.mktemp("sam-mnt")
    log = base / "mount.log"
    own = Package.open(str(world["pkg"])).digest
    with sam_mount(world["pkg"], base / "m", world["key_file"], "--expect-digest", own,
                   "--log", str(log)) as m:
        yield m, log


@pytest.fixture
def pkg_copy(world, tmp_path):
    """A private copy of the untouched package for tests that tamper with it."""
    return Path(shutil.copytree(world["clean"], tmp_path / "copy" / KEY_ID))


# the served tree ------------------------------------------------------------------------------
def test_serves_exactly_the_manifest_tree(world, mounted):
    m, _ = mounted
    manifest = Package.open(str(world["pkg"])).manifest
    files, dirs = served_tree(m)
    want = {e.path: (sha(world["contents"][e.path]), e.size, stat.S_IFREG | e.mode) for e in manifest.files}
    assert files == want
    assert set(want) == set(MODEL_FILES)
    assert dirs == {"weights", "tokenizer", "tokenizer/nested", "tokenizer/nested/deep"}
    for rel, (_, mode) in MODEL_FILES.items():  # the manifest kept the model's modes and sizes
        st = os.stat(m / rel)
        assert stat.S_IMODE(st.st_mode) == mode, rel
        assert st.st_size == len(world["contents"][rel]), rel
    assert os.stat(m / "empty.bin").st_size == 0
    assert (m / "empty.bin").read_bytes() == b""
    for d in dirs:
        assert stat.S_ISDIR(os.stat(m / d).st_mode)


def test_readdir_lists_only_manifest_entries(world, mounted):
    m, _ = mounted
    on_disk = set(os.listdir(world["pkg"]))
    assert {"added-later.bin", "newdir", ".sam"} <= on_disk  # present in the package directory
    assert sorted(os.listdir(m)) == sorted(["config.json", "run.sh", "secret.txt", "empty.bin", "weights",
                                            "tokenizer"])
    assert sorted(os.listdir(m / "weights")) == ["model.safetensors", "one-chunk.bin", "shard-a.bin",
                                                 "shard-b.bin"]
    for rel in ("added-later.bin", "weights/extra.bin", "newdir", "newdir/inside.txt", ".sam",
                ".sam/manifest.json"):
        with pytest.raises(FileNotFoundError):
            os.stat(m / rel)
        with pytest.raises(FileNotFoundError):
            open(m / rel, "rb")


def test_mount_table_shows_fuse_sam_read_only(mounted):
    m, _ = mounted
    with open("/proc/mounts") as f:
        rows = [line.split() for line in f]
    row = [r for r in rows if r[1] == os.path.realpath(m)]
    assert len(row) == 1, row
    assert row[0][2] == "fuse.sam"
    assert "ro" in row[0][3].split(",")


WRITE_CALLS = {
    "create": lambda m: os.open(m / "new.bin", os.O_WRONLY | os.O_CREAT, 0o644),
    "open_wronly": lambda m: os.open(m / "config.json", os.O_WRONLY),
    "open_rdwr": lambda m: os.open(m / "config.json", os.O_RDWR),
    "open_append": lambda m: os.open(m / "config.json", os.O_WRONLY | os.O_APPEND),
    "mkdir": lambda m: os.mkdir(m / "weights" / "newdir"),
    "unlink": lambda m: os.unlink(m / "config.json"),
    "rename": lambda m: os.rename(m / "config.json", m / "renamed.json"),
    "chmod": lambda m: os.chmod(m / "run.sh", 0o777),
    "truncate": lambda m: os.truncate(m / "config.json", 0),
    "rmdir": lambda m: os.rmdir(m / "tokenizer" / "nested" / "deep"),
}


@pytest.mark.parametrize("call", sorted(WRITE_CALLS))
def test_writes_are_erofs(world, mounted, call):
    m, _ = mounted
    with pytest.raises(OSError) as exc:
        WRITE_CALLS[call](m)
    assert exc.value.errno == errno.EROFS, f"{call}: {exc.value}"
    assert (m / "config.json").read_bytes() == world["contents"]["config.json"]
    assert stat.S_IMODE(os.stat(m / "run.sh").st_mode) == 0o755
    assert not (m / "new.bin").exists() and not (m / "renamed.json").exists()


def test_mmap_read_equals_original(world, mounted):
    m, _ = mounted
    want = world["contents"][BIG]
    with open(m / BIG, "rb") as f:
        for flags in (mmap.MAP_PRIVATE, mmap.MAP_SHARED):
            with mmap.mmap(f.fileno(), 0, flags=flags, prot=mmap.PROT_READ) as mm:
                assert len(mm) == BIG_SIZE
                edge = 3 * CHUNK_SIZE
                assert mm[edge - 10 : edge + 10] == want[edge - 10 : edge + 10]  # across a chunk edge
                assert mm[-100:] == want[-100:]
                assert mm[:] == want


def test_default_block_path_logged(world, mounted):
    m, log = mounted
    assert (m / "config.json").read_bytes() == world["contents"]["config.json"]
    text = log.read_text()
    expected = ("block path: c",) if os.environ.get("CRYPTFS_REQUIRE_C") == "1" else \
        ("block path: c", "block path: python")
    assert any(e in text for e in expected), text


def test_python_block_path_serves_identical_bytes(world, tmp_path):
    log = tmp_path / "mount.log"
    with sam_mount(world["pkg"], tmp_path / "m", world["key_file"], "--log", str(log),
                   "--block-path", "python") as m:
        files, _ = served_tree(m)
        assert {rel: h for rel, (h, _, _) in files.items()} == \
            {rel: sha(data) for rel, data in world["contents"].items()}
        with open(m / BIG, "rb") as f:
            assert os.pread(f.fileno(), 5000, 2 * CHUNK_SIZE - 2500) == \
                world["contents"][BIG][2 * CHUNK_SIZE - 2500 : 2 * CHUNK_SIZE + 2500]
    assert "block path: python" in log.read_text()


def test_safetensors_loads_through_mount(tmp_path):
    np = pytest.importorskip("numpy")
    st_np = pytest.importorskip("safetensors.numpy")
    model = tmp_path / "model"
    model.mkdir()
    rng = np.random.default_rng(7)
    tensors = {"w": rng.standard_normal((500, 300), dtype=np.float32), "b": np.ones(7, dtype=np.float16)}
    st_np.save_file(tensors, str(model / "model.safetensors"))
    assert (model / "model.safetensors").stat().st_size > 2 * CHUNK_SIZE
    pkg = pack_quick(model, tmp_path / "pkgs")
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    with sam_mount(pkg, tmp_path / "m", key_file) as m:
        assert_safetensors_read(m / "model.safetensors", tensors)


# checked before the mount appears -------------------------------------------------------------
def _swap(pkg: Path) -> None:
    a, b = pkg / "weights" / "shard-a.bin", pkg / "weights" / "shard-b.bin"
    tmp = a.with_name("tmp")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


def _truncate_at_chunk_edge(pkg: Path) -> None:
    path = pkg / BIG
    os.truncate(path, HEADER_LEN + 5 * CIPHER_CHUNK)  # drops the last (partial) chunk


def _tamper_manifest(pkg: Path) -> None:
    path = pkg / ".sam" / "manifest.json"
    raw = path.read_bytes()
    assert raw.count(b'"mode":384,') == 1  # secret.txt, 0o600
    path.write_bytes(raw.replace(b'"mode":384,', b'"mode":420,'))  # still a well-formed manifest


TAMPER = {
    "deleted": (lambda p: (p / "weights" / "shard-a.bin").unlink(), "missing"),
    "truncated": (_truncate_at_chunk_edge, "truncated"),
    "swapped": (_swap, "swapped"),
    "manifest": (_tamper_manifest, "manifest"),
}


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_tampered_package_is_refused_before_mounting(world, pkg_copy, tmp_path, case):
    change, word = TAMPER[case]
    change(pkg_copy)
    mnt = tmp_path / "m"
    mnt.mkdir()
    proc = subprocess.run(mount_args(pkg_copy, mnt, world["key_file"]), capture_output=True, text=True,
                          cwd=PROJECT, timeout=60, stdin=subprocess.DEVNULL)
    try:
        assert proc.returncode == exitcodes.INTEGRITY, proc.stderr
        assert word in proc.stderr, proc.stderr
        assert_nothing_mounted(mnt)
    finally:
        unmount(mnt)


def test_wrong_key_is_refused_before_mounting(world, tmp_path):
    bad = tmp_path / "bad-key"
    bad.write_bytes(b"model-owner-key-2\n")
    mnt = tmp_path / "m"
    mnt.mkdir()
    proc = subprocess.run(mount_args(world["clean"], mnt, bad), capture_output=True, text=True,
                          cwd=PROJECT, timeout=60, stdin=subprocess.DEVNULL)
    try:
        assert proc.returncode == exitcodes.WRONG_KEY, proc.stderr
        assert "key" in proc.stderr
        assert_nothing_mounted(mnt)
    finally:
        unmount(mnt)


def test_expect_digest_of_another_package_is_refused(world, tmp_path):
    other_digest = Package.open(str(world["other"])).digest
    own_digest = Package.open(str(world["clean"])).digest
    assert other_digest != own_digest
    mnt = tmp_path / "m"
    mnt.mkdir()
    proc = subprocess.run(mount_args(world["clean"], mnt, world["key_file"], "--expect-digest", other_digest),
                          capture_output=True, text=True, cwd=PROJECT, timeout=60, stdin=subprocess.DEVNULL)
    try:
        assert proc.returncode == exitcodes.DIGEST_MISMATCH, proc.stderr
        assert own_digest in proc.stderr and other_digest in proc.stderr
        assert_nothing_mounted(mnt)
    finally:
        unmount(mnt)


# tampering after the mount is up ---------------------------------------------------------------
@pytest.mark.parametrize("block_path", ["default", "python"])
def test_flipped_byte_after_mounting_gives_eio_for_that_chunk_only(world, pkg_copy, tmp_path, block_path):
    data = world["contents"][BIG]
    log = tmp_path / "mount.log"
    flags = () if block_path == "default" else ("--block-path", block_path)
    with sam_mount(pkg_copy, tmp_path / "m", world["key_file"], "--log", str(log), *flags) as m:
        flip(pkg_copy / BIG, HEADER_LEN + 2 * CIPHER_CHUNK + 100)  # inside chunk 2, after the mount checks
        fd = os.open(m / BIG, os.O_RDONLY)
        try:
            assert os.pread(fd, 2 * CHUNK_SIZE, 0) == data[: 2 * CHUNK_SIZE]
            for off in (2 * CHUNK_SIZE, 2 * CHUNK_SIZE + 5000, 3 * CHUNK_SIZE - 1):
                with pytest.raises(OSError) as exc:
                    os.pread(fd, 4096, off)
                assert exc.value.errno == errno.EIO, off
            assert os.pread(fd, 4096, 3 * CHUNK_SIZE) == data[3 * CHUNK_SIZE : 3 * CHUNK_SIZE + 4096]
            assert os.pread(fd, CHUNK_SIZE, 5 * CHUNK_SIZE) == data[5 * CHUNK_SIZE :]
        finally:
            os.close(fd)
        with pytest.raises(OSError) as exc:
            (m / BIG).read_bytes()
        assert exc.value.errno == errno.EIO
        assert (m / "weights" / "one-chunk.bin").read_bytes() == world["contents"]["weights/one-chunk.bin"]
        assert (m / "config.json").read_bytes() == world["contents"]["config.json"]
    text = log.read_text()
    bad = [line for line in text.splitlines() if "chunk 2" in line]
    assert bad, text
    assert any(BIG in line for line in bad), text
    assert "chunk 0 " not in text and "chunk 3 " not in text
    if block_path == "python":
        assert "block path: python" in text


# daemon life cycle -----------------------------------------------------------------------------
def test_daemonizes_and_sam_unmount_removes_it(world, tmp_path):
    mnt = tmp_path / "m"
    mnt.mkdir()
    proc = subprocess.run(mount_args(world["clean"], mnt, world["key_file"]), capture_output=True,
                          text=True, cwd=PROJECT, timeout=60, stdin=subprocess.DEVNULL)
    pids = daemon_pids(mnt, "sam")
    try:
        assert proc.returncode == 0, proc.stderr
        assert os.path.realpath(mnt) in fuse_mounts()  # the command returned; the mount stays
        assert len(pids) == 1
        assert (mnt / "config.json").read_bytes() == world["contents"]["config.json"]
        done = run_sam("unmount", mnt)
        assert done.returncode == 0, done.stderr
        assert os.path.realpath(mnt) not in fuse_mounts()
        assert not wait_gone(pids, 5.0), "the daemon kept running after sam unmount"
        again = run_sam("unmount", mnt)
        assert again.returncode == exitcodes.MOUNTPOINT
        assert "not mounted" in again.stderr
    finally:
        unmount(mnt)
        for p in wait_gone(pids, 2.0):
            os.kill(p, signal.SIGKILL)


@pytest.mark.parametrize("stop", ["sam-unmount", "sigterm"])
def test_foreground_with_notify_fd(world, tmp_path, stop):
    mnt = tmp_path / "m"
    mnt.mkdir()
    note_r, note_w = os.pipe()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(mount_args(world["clean"], mnt, world["key_file"], "--fg", "--notify-fd",
                                           str(note_w)), pass_fds=(note_w,), cwd=PROJECT,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        os.close(note_w)
        try:
            line = read_line(note_r, 30.0)  # b"" if the process dies before the mount is ready
            assert line == f"ready {os.path.realpath(mnt)}\n".encode(), line
            assert os.path.realpath(mnt) in fuse_mounts()
            assert proc.poll() is None  # the foreground process is the server
            assert (mnt / BIG).read_bytes() == world["contents"][BIG]
            if stop == "sam-unmount":
                done = run_sam("unmount", mnt)
                assert done.returncode == 0, done.stderr
            else:
                proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0, _text(err)
            assert os.path.realpath(mnt) not in fuse_mounts()
            assert os.listdir(mnt) == []
        finally:
            if proc.poll() is None:
                unmount(mnt)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            unmount(mnt)


def read_line(fd: int, timeout: float) -> bytes:
    """One line from a pipe (closing it); b"" at EOF, whatever arrived so far after ``timeout``."""
    got = b""
    try:
        while not got.endswith(b"\n"):
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                break
            piece = os.read(fd, 256)
            if not piece:
                break
            got += piece
    finally:
        os.close(fd)
    return got


def _text(f) -> str:
    f.seek(0)
    return f.read().decode(errors="replace")


# the shipped packager script -------------------------------------------------------------------
SCRIPT = PROJECT / "do_content_packager.sh"


def run_script(*args: str | os.PathLike, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *map(os.fspath, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=120, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHON": sys.executable})


def test_packager_script_makes_a_package_verify_accepts(world, tmp_path):
    assert os.access(SCRIPT, os.X_OK)
    work = tmp_path / "work"
    work.mkdir()
    key_id = "sdk-style-key-id-01"
    proc = run_script(world["model"], "plain-key-123", key_id, cwd=work)
    assert proc.returncode == 0, proc.stderr
    pkg = work / key_id
    assert (pkg / ".sam" / "manifest.json").is_file()
    assert sorted(os.listdir(work)) == [key_id]  # nothing half-written beside it
    info = run_sam("info", pkg, "--json")
    assert info.returncode == 0, info.stderr
    digest = json.loads(info.stdout)["digest"]
    assert f"digest: {digest}" in proc.stdout
    assert json.loads(info.stdout)["kdf"]["log_n"] == 17  # the script packs with the default cost
    key_file = tmp_path / "key"
    key_file.write_bytes(b"plain-key-123\n")
    verify = run_sam("verify", pkg, "--key-file", key_file, "--expect-digest", digest, "-q")
    assert verify.returncode == 0, verify.stderr
    wrong = tmp_path / "wrong"
    wrong.write_bytes(b"plain-key-124")
    refused = run_sam("verify", pkg, "--key-file", wrong, "-q")
    assert refused.returncode == exitcodes.WRONG_KEY, refused.stderr


@pytest.mark.parametrize("count", [0, 2, 4])
def test_packager_script_wrong_argument_count(world, tmp_path, count):
    args = [world["model"], "plain-key-123", "sdk-style-key-id-01", "extra"][:count]
    proc = run_script(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr and "MODEL_DIR PLAINTEXT_KEY KEY_ID" in proc.stderr
    assert os.listdir(tmp_path) == []
