"""``--expect-digest``: a pinned tree serves only what was measured, or EIO/ENOENT, never other bytes.

Trees are written by real gocryptfs (the oracle). The tampers a storage attacker can make are
applied after the tree was measured: in process, through the FUSE adapter's callbacks
(:class:`cryptfs.core.fuse.ReadOnlyOps`, no kernel), and through a real mount while it is
mounted. A changed tree is refused with exit 13 before any key source is touched.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import types
from pathlib import Path

import pytest

from cryptfs import exitcodes
from cryptfs.core.fuse import ReadOnlyOps
from cryptfs.core.options import MountOptions
from cryptfs.decrypt import decrypt_tree
from cryptfs.digest import tree_digest
from cryptfs.errors import DigestMismatch, TreeChangedError
from cryptfs.password import KeySource
from cryptfs.pin import PinnedTree, open_pinned_tree, unlock_pinned
from tests.cryptfs.test_digest import BLOCK, HEADER, MODEL_FILES, cipher_path, gocryptfs_model
from tests.support import PASSWORD_FILE, cryptfs_mount, fuse_mounts, run_cli

KEYS = KeySource([str(PASSWORD_FILE)])
UNTOUCHED = ("config.json", "sub/deeper/inner.txt", "l" * 200)


@pytest.fixture(scope="module")
def model(oracle, tmp_path_factory) -> tuple[Path, dict[str, bytes], str]:
    cipher, contents = gocryptfs_model(oracle, tmp_path_factory.mktemp("pinned"))
    return cipher, contents, tree_digest(str(cipher)).digest


@pytest.fixture
def copy(model, tmp_path) -> Path:
    dst = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(model[0]), str(dst)], check=True)
    return dst


# tampers: each one names the plaintext paths it touches --------------------------------------
def _swap(c: Path) -> None:
    a, b = cipher_path(c, "a.bin"), cipher_path(c, "b.bin")
    os.rename(a, c / "swap.tmp")
    os.rename(b, a)
    os.rename(c / "swap.tmp", b)


def _zero_block(c: Path, block: int = 2) -> None:
    with open(cipher_path(c, "model.bin"), "r+b") as f:
        f.seek(HEADER + block * BLOCK)
        f.write(bytes(BLOCK))


def _rewrite_header(c: Path) -> None:
    with open(cipher_path(c, "model.bin"), "r+b") as f:
        f.seek(2)
        f.write(os.urandom(16))  # another file ID: every block fails, and the header check says why


def _relink(c: Path) -> None:
    link = cipher_path(c, "link")
    target = os.readlink(cipher_path(c, "sub/up"))
    os.unlink(link)
    os.symlink(target, link)


TAMPERS = {
    "swapped": _swap,
    "renamed": lambda c: os.rename(cipher_path(c, "a.bin"), cipher_path(c, "renamed.bin")),
    "added": lambda c: shutil.copy2(cipher_path(c, "b.bin"), cipher_path(c, "added.bin")),
    "deleted": lambda c: os.unlink(cipher_path(c, "a.bin")),
    "truncated": lambda c: os.truncate(cipher_path(c, "model.bin"), HEADER + 2 * BLOCK),
    "zeroed": _zero_block,
    "header": _rewrite_header,
    "chmod": lambda c: os.chmod(cipher_path(c, "a.bin"), 0o600),
    "symlink": _relink,
}


def assert_refused(tamper: str, call, contents: dict[str, bytes]) -> None:
    """What each tamper must give: ``call(path)`` reads a whole file or raises OSError(errno)."""
    def fails(path: str, *codes: int) -> None:
        with pytest.raises(OSError) as exc:
            data = call(path)
            pytest.fail(f"{path}: served {len(data)} bytes after '{tamper}'")  # never reached
        assert exc.value.errno in codes, f"{path}: {exc.value}"

    if tamper == "swapped":
        fails("a.bin", errno.EIO)
        fails("b.bin", errno.EIO)
    elif tamper in ("renamed", "deleted"):
        fails("a.bin", errno.ENOENT)
        fails("renamed.bin", errno.ENOENT)
    elif tamper == "added":
        fails("added.bin", errno.ENOENT)
    elif tamper in ("truncated", "header", "zeroed"):
        fails("model.bin", errno.EIO)
    elif tamper == "chmod":
        fails("a.bin", errno.EIO)
    elif tamper == "symlink":
        fails("link", errno.EIO)
    for name in UNTOUCHED:
        assert call(name) == contents[name], name


# in process: the adapter's callbacks over a PinnedTree -----------------------------------------
class Served:
    """The FUSE callbacks over a pinned tree, as mfusepy would call them."""

    def __init__(self, tree: PinnedTree):
        self.ops = ReadOnlyOps(tree, MountOptions(source_dir=os.fsdecode(tree.root), mountpoint="/x"))

    def read(self, path: str) -> bytes:
        """getattr, open, read to the end, release; symlinks are read with readlink."""
        p = "/" + path
        st = self.ops.getattr(p)
        if stat.S_ISLNK(st["st_mode"]):
            return os.fsencode(self.ops.readlink(p))
        fi = types.SimpleNamespace(flags=os.O_RDONLY, fh=0, keep_cache=0, direct_io=0)
        self.ops.open(p, fi)
        try:
            buf = bytearray(st["st_size"] + 4096)
            n = self.ops.read_into(p, fi.fh, memoryview(buf), 0)
            return bytes(buf[:n])
        finally:
            self.ops.release(p, fi)

    def names(self, path: str = "") -> set[str]:
        return {e[0] for e in self.ops.readdir("/" + path, 0)} - {".", ".."}


def pinned(cipher: Path, allow_holes: bool = False) -> PinnedTree:
    return open_pinned_tree(str(cipher), KEYS, tree_digest(str(cipher)).digest, allow_holes=allow_holes)


def test_pinned_tree_serves_the_measured_tree(model, copy):
    _, contents, digest = model
    tree = open_pinned_tree(str(copy), KEYS, digest)
    served = Served(tree)
    assert tree.digest == digest
    for name, data in contents.items():
        assert served.read(name) == data, name
    assert served.read("link") == b"config.json" and served.read("sub/up") == b"../a.bin"
    assert served.names() == {n for n in MODEL_FILES if "/" not in n} | {"sub", "link"}


@pytest.mark.parametrize("tamper", TAMPERS, ids=list(TAMPERS))
def test_tamper_after_measuring_in_process(model, copy, tamper, caplog):
    tree = pinned(copy)
    TAMPERS[tamper](copy)
    served = Served(tree)
    assert_refused(tamper, served.read, model[1])
    assert "renamed.bin" not in served.names() and "added.bin" not in served.names()
    if tamper not in ("renamed", "deleted", "added"):
        assert any("model.bin" in r.message or "a.bin" in r.message or "link" in r.message
                   for r in caplog.records), "the refusal is logged with the file's name"


def test_zeroed_block_with_allow_holes_reads_zeros(model, copy):
    tree = pinned(copy, allow_holes=True)
    _zero_block(copy)
    data = Served(tree).read("model.bin")
    want = model[1]["model.bin"]
    assert data == want[:2 * 4096] + bytes(4096) + want[3 * 4096:]


def test_truncated_or_grown_while_open(model, copy):
    tree = pinned(copy)
    victim = cipher_path(copy, "model.bin")
    with tree.open(b"model.bin") as f:
        assert f.read(0, 4096) == model[1]["model.bin"][:4096]
        os.truncate(victim, HEADER + 2 * BLOCK)
        with pytest.raises(TreeChangedError, match="truncated or resized"):
            f.read(3 * 4096, 4096)
        with pytest.raises(TreeChangedError):  # even where the bytes are still there
            f.read(0, 4096)
    shutil.copy2(cipher_path(model[0], "model.bin"), victim)
    with tree.open(b"model.bin") as f:
        with open(victim, "ab") as g:
            g.write(b"x" * 100)
        with pytest.raises(TreeChangedError):
            f.read(0, 4096)


def test_metadata_comes_from_the_measurement(model, copy):
    """A dir IV, sidecar or config changed after measuring is never read: names keep decrypting."""
    measured = tree_digest(str(copy))
    for path in (cipher_path(copy, "sub") / "gocryptfs.diriv", next(copy.glob("gocryptfs.longname.*.name")),
                 copy / "gocryptfs.conf"):
        os.chmod(path, 0o600)
        path.write_bytes(b"garbage")
    served = Served(unlock_pinned(measured, KEYS))
    for name in ("sub/nested.bin", "l" * 200):
        assert served.read(name) == model[1][name]


def test_type_and_root_changes(model, copy):
    tree = pinned(copy)
    served = Served(tree)
    victim = cipher_path(copy, "config.json")
    os.unlink(victim)
    os.mkdir(victim)
    with pytest.raises(OSError) as exc:
        served.read("config.json")
    assert exc.value.errno == errno.EIO
    os.chmod(copy, 0o700)
    with pytest.raises(OSError) as exc:
        served.ops.getattr("/")
    assert exc.value.errno == errno.EIO


def test_pinned_decrypt_fails_whole_on_a_tamper(model, copy, tmp_path):
    tree = pinned(copy)
    _swap(copy)
    out = tmp_path / "out"
    with pytest.raises(TreeChangedError):
        decrypt_tree(tree, str(out), progress=False)
    assert not out.exists()


def test_api_refuses_before_reading_the_key(model, copy):
    class NoKeys(KeySource):
        def password(self, confirm=False):
            raise AssertionError("the password was read")

        def master_key(self):
            raise AssertionError("the master key was read")

    TAMPERS["added"](copy)
    with pytest.raises(DigestMismatch):
        open_pinned_tree(str(copy), NoKeys(), model[2])


# the command line and a real mount --------------------------------------------------------------
def test_cli_decrypt_pinned(model, tmp_path):
    cipher, contents, digest = model
    out = tmp_path / "out"
    r = run_cli("decrypt", "-q", "--passfile", PASSWORD_FILE, "--expect-digest", digest, cipher, out)
    assert r.returncode == 0, r.stderr
    for name, data in contents.items():
        assert (out / name).read_bytes() == data


@pytest.mark.parametrize("command", ["mount", "decrypt"])
def test_changed_tree_refused_before_the_key_is_read(model, copy, tmp_path, command):
    """Exit 13; no --extpass run, and a FIFO as passfile (opening it would block) is never opened."""
    TAMPERS["renamed"](copy)
    marker = tmp_path / "extpass-ran"
    fifo = tmp_path / "passfifo"
    os.mkfifo(fifo)
    target = tmp_path / "target"
    if command == "mount":
        target.mkdir()
    for keys in (["--extpass", f"touch {marker}"], ["--passfile", str(fifo)]):
        r = run_cli(command, *keys, "--expect-digest", model[2], copy, target, timeout=30)
        assert r.returncode == exitcodes.DIGEST_MISMATCH == 13, r.stderr
        assert b"is not the expected" in r.stderr
    assert not marker.exists()
    assert os.path.realpath(target) not in fuse_mounts()
    assert command == "mount" or not target.exists()


def test_usage_errors(model, tmp_path):
    cipher, _, digest = model
    mp = tmp_path / "mp"
    mp.mkdir()
    for extra in (["--expect-digest", "sha256:abc"], ["--expect-digest", digest.upper()],
                  ["--allow-holes"], ["--expect-digest", digest, "--allow-holes", "--no-holes"]):
        r = run_cli("mount", "--extpass", f"touch {tmp_path / 'ran'}", *extra, cipher, mp)
        assert r.returncode == exitcodes.USAGE, (extra, r.stderr)
    assert not (tmp_path / "ran").exists()


def _mount_read(m: Path):
    def read(path: str) -> bytes:
        p = m / path
        return os.fsencode(os.readlink(p)) if p.is_symlink() else p.read_bytes()
    return read


def test_pinned_mount_serves_the_tree(model, copy, tmp_path):
    _, contents, digest = model
    with cryptfs_mount(copy, tmp_path / "m", "--expect-digest", digest) as m:
        for name, data in contents.items():
            assert (m / name).read_bytes() == data
        assert os.readlink(m / "link") == "config.json"
        assert set(os.listdir(m)) == {n for n in MODEL_FILES if "/" not in n} | {"sub", "link"}


@pytest.mark.parametrize("tamper", TAMPERS, ids=list(TAMPERS))
def test_tamper_while_mounted(model, copy, tmp_path, tamper):
    """Nothing tampered is looked at before the tamper (the kernel would keep serving its cache)."""
    log = tmp_path / "mount.log"
    with cryptfs_mount(copy, tmp_path / "m", "--expect-digest", model[2], "--log", str(log)) as m:
        TAMPERS[tamper](copy)
        assert_refused(tamper, _mount_read(m), model[1])
        listed = os.listdir(m)
        assert "renamed.bin" not in listed and "added.bin" not in listed
    if tamper not in ("renamed", "deleted", "added"):
        assert "since the tree was measured" in log.read_text() or "block" in log.read_text()


def test_allow_holes_mount_serves_zeros(model, copy, tmp_path):
    _zero_block(copy)
    digest = tree_digest(str(copy)).digest  # blocks are not in the digest: this is the same tree
    assert digest == model[2]
    with cryptfs_mount(copy, tmp_path / "m", "--expect-digest", digest, "--allow-holes") as m:
        want = model[1]["model.bin"]
        assert (m / "model.bin").read_bytes() == want[:2 * 4096] + bytes(4096) + want[3 * 4096:]
