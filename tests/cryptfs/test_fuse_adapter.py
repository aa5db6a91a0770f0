"""The read-only FUSE adapter (``cryptfs.core.fuse.ReadOnlyOps``) driven directly: no kernel mount.

The adapter serves any :class:`~cryptfs.core.source.MountSource`; it is run here over a
gocryptfs :class:`~cryptfs.tree.CipherTree` (encrypted in process) and over a Sam
:class:`~sam.source.PackageSource` (packed in process), both with scrypt log2(N) = 10. Its
callbacks are called as mfusepy would call them: paths as str, OSError(errno) for failures,
file handles as ints, ``fi`` objects with flags/fh/keep_cache/direct_io.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cryptfs.config import FsParams
from cryptfs.core.errors import ChunkError, IntegrityError
from cryptfs.core.fuse import STATFS_FIELDS, ReadOnlyOps
from cryptfs.core.options import CACHE_TIMEOUT, MountOptions
from cryptfs.core.source import DirEntry, MountSource, OpenFile
from cryptfs.encrypt import encrypt_tree
from cryptfs.password import KeySource
from cryptfs.tree import CipherTree, open_tree
from sam.manifest import CHUNK_SIZE, HEADER_LEN, NONCE_LEN, TAG_LEN
from sam.pack import pack
from sam.package import Package
from sam.source import PackageSource
from tests.support import PASSWORD_FILE, make_sample_tree

GO_HEADER_LEN = 18
GO_BS = 4096
GO_CBS = GO_BS + 32
SAM_CBS = CHUNK_SIZE + NONCE_LEN + TAG_LEN
SAM_KEY = b"correct horse battery"
SAM_KEY_ID = "model-key-0001"
LOGN = 10
NON_UTF8 = b"raw\xff\xfename"
GETATTR_KEYS = {"st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime", "st_mtime",
                "st_ctime", "st_blocks", "st_blksize", "st_rdev"}
WRITE_LIKE = {  # method -> arguments as mfusepy passes them
    "chmod": ("/size_1", 0o777), "chown": ("/size_1", 0, 0), "create": ("/new", 0o644, None),
    "link": ("/new", "/size_1"), "mkdir": ("/new", 0o755), "mknod": ("/new", 0o644, 0),
    "rename": ("/size_1", "/new"), "rmdir": ("/dir",), "setxattr": ("/size_1", "user.x", b"1", 0),
    "removexattr": ("/size_1", "user.x"), "symlink": ("/new", "size_1"), "truncate": ("/size_1", 0, None),
    "unlink": ("/size_1",), "utimens": ("/size_1", None), "write": ("/size_1", b"x", 0, 1),
}


# the two sources ---------------------------------------------------------------------------------
@dataclass
class Served:
    """A source's backing directory, how to open a source over (a copy of) it, and its plaintext."""

    kind: str
    plain: Path  # what the source must show (its regular files and directories)
    root: Path  # the backing directory
    opener: Callable[[Path], MountSource]
    backing: Callable[[MountSource, str], str]  # a file's backing path
    chunk: int  # plaintext bytes per block/chunk
    chunk_off: Callable[[int], int]  # offset of block/chunk k in the backing file
    big: str  # a multi-chunk file, as a FUSE path

    def source(self, root: Path | None = None) -> MountSource:
        return self.opener(root or self.root)

    def private(self, tmp_path: Path) -> tuple[Path, MountSource]:
        copy = Path(shutil.copytree(self.root, tmp_path / "backing", symlinks=True))
        return copy, self.opener(copy)

    def ops(self, source: MountSource | None = None, **opts) -> ReadOnlyOps:
        source = source or self.source()
        root = os.fsdecode(source.root)
        return ReadOnlyOps(source, MountOptions(source_dir=root, mountpoint=root + ".mnt", **opts))


def open_cipher(root: Path) -> CipherTree:
    return open_tree(str(root), KeySource(passfiles=[str(PASSWORD_FILE)]))


def open_package(root: Path) -> PackageSource:
    return PackageSource(Package.open(str(root)).unlock(SAM_KEY))


@pytest.fixture(scope="module")
def cipher_served(tmp_path_factory) -> Served:
    base = tmp_path_factory.mktemp("adapter-cipher")
    plain = make_sample_tree(base / "plain")
    encrypt_tree(str(plain), str(base / "cipher"), b"test", FsParams(), LOGN, progress=False,
                 keep_external_links=True)  # abs_link: the adapter must refuse to serve it
    return Served("cipher", plain, base / "cipher", open_cipher,
                  lambda src, path: os.fsdecode(src.cipher_path(os.fsencode(path).lstrip(b"/"))),
                  GO_BS, lambda k: GO_HEADER_LEN + k * GO_CBS, f"/size_{(1 << 20) + 1}")


@pytest.fixture(scope="module")
def sam_served(tmp_path_factory) -> Served:
    base = tmp_path_factory.mktemp("adapter-sam")
    plain = base / "model"
    files = {"config.json": b'{"layers": 2}\n', "weights/a.bin": os.urandom(3 * CHUNK_SIZE + 5),
             "weights/b.bin": os.urandom(CHUNK_SIZE), "empty": b"", "dir/sub/deep.txt": b"deep\n"}
    for rel, data in files.items():
        (plain / rel).parent.mkdir(parents=True, exist_ok=True)
        (plain / rel).write_bytes(data)
    (base / "pkgs").mkdir()
    result = pack(str(plain), SAM_KEY, SAM_KEY_ID, str(base / "pkgs"), scrypt_logn=LOGN, progress=False)
    return Served("sam", plain, Path(result.out_dir), open_package,
                  lambda src, path: src.pkg.cipher_path(path.lstrip("/")),
                  CHUNK_SIZE, lambda k: HEADER_LEN + k * SAM_CBS, "/weights/a.bin")


@pytest.fixture(params=["cipher", "sam"])
def served(request) -> Served:
    return request.getfixturevalue(f"{request.param}_served")


# helpers -----------------------------------------------------------------------------------------
def fi(flags: int = os.O_RDONLY) -> types.SimpleNamespace:
    return types.SimpleNamespace(flags=flags, fh=0, keep_cache=0, direct_io=0)


def fuse_path(rel: bytes) -> str:
    return "/" + os.fsdecode(rel)


def plain_entries(plain: Path) -> dict[bytes, os.stat_result]:
    broot = os.fsencode(plain)
    out = {b"": os.lstat(broot)}
    for dirpath, dirs, files in os.walk(broot):
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, broot)] = os.lstat(full)
    return out


def plain_bytes(served: Served, path: str) -> bytes:
    return (served.plain / path.lstrip("/")).read_bytes()


def errno_of(call, *args) -> int:
    with pytest.raises(OSError) as e:
        call(*args)
    return e.value.errno


def flip(path: str, offset: int, mask: int = 0x01) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ mask]))


def mount_errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "cryptfs.mount" and r.levelno >= logging.ERROR]


# sources implement the contract ------------------------------------------------------------------
def test_sources_implement_every_abstract_method(served):
    source = served.source()
    assert isinstance(source, MountSource)
    abstract = MountSource.__abstractmethods__
    assert abstract == {"block_path", "lstat", "readdir", "readlink", "open"}
    assert abstract <= set(dir(source))
    assert not type(source).__abstractmethods__
    for name in abstract:
        assert not getattr(getattr(type(source), name), "__isabstractmethod__", False), name
    assert source.block_path in ("c", "python")
    with source.open(os.fsencode(served.big).lstrip(b"/")) as f:
        assert isinstance(f, OpenFile)
        assert f.plain_size == len(plain_bytes(served, served.big)) and f.fd >= 0


def test_incomplete_sources_cannot_be_instantiated():
    class NoOpen(MountSource):
        root = "/"
        block_path = property(lambda self: "python")

        def lstat(self, rel):
            return os.lstat("/")

        def readdir(self, rel):
            return []

        def readlink(self, rel):
            raise OSError(errno.EINVAL, "no")

    class NoReadInto(OpenFile):
        pass

    with pytest.raises(TypeError, match="open"):
        NoOpen()
    with pytest.raises(TypeError, match="read_into"):
        NoReadInto()
    with pytest.raises(TypeError):
        MountSource()


class MemorySource(MountSource):
    """A minimal complete source: one file in memory, failures on demand."""

    root = "/"
    block_path = "python"

    def __init__(self, data: bytes, fail: BaseException | None = None):
        self.data = data
        self.fail = fail

    def lstat(self, rel):
        if self.fail is not None:
            raise self.fail
        if rel == b"":
            return os.stat_result((stat.S_IFDIR | 0o555, 1, 0, 2, 0, 0, 0, 0, 0, 0))
        if rel != b"f":
            raise FileNotFoundError(errno.ENOENT, "no", rel)
        return os.stat_result((stat.S_IFREG | 0o444, 2, 0, 1, 0, 0, len(self.data), 0, 0, 0))

    def readdir(self, rel):
        return [DirEntry(b"f", stat.S_IFREG | 0o444, 2)]

    def readlink(self, rel):
        raise OSError(errno.EINVAL, "not a symlink")

    def open(self, rel):
        src = self

        class Mem(OpenFile):
            plain_size = len(src.data)

            def read_into(self, off, out):
                if src.fail is not None:
                    raise src.fail
                chunk = src.data[off: off + len(out)]
                out[: len(chunk)] = chunk
                return len(chunk)

        return Mem()


def test_a_minimal_source_is_served():
    ops = ReadOnlyOps(MemorySource(b"hello world"), MountOptions(source_dir="/mem", mountpoint="/mnt"))
    assert ops.getattr("/f")["st_size"] == 11
    assert [name for name, _, _ in ops.readdir("/", 0)] == [".", "..", "f"]
    f = fi()
    ops.open("/f", f)
    assert ops.read("/f", 100, 6, f.fh) == b"world"
    ops.release("/f", f)


@pytest.mark.parametrize(("exc", "code", "logged"), [
    (PermissionError(errno.EACCES, "denied"), errno.EACCES, None),
    (OSError("an OSError without errno"), errno.EIO, "unexpected error on /f"),
    (IntegrityError("the index was tampered with"), errno.EIO, "/f: the index was tampered with"),
    (ChunkError(7, "authentication failed", "/f"), errno.EIO, "read failed: block 7 of /f"),
])
def test_errno_mapping(caplog, exc, code, logged):
    """OSError keeps its errno; integrity failures and errno-less errors are EIO, and logged."""
    caplog.set_level(logging.ERROR, logger="cryptfs.mount")
    src = MemorySource(b"data")
    ops = ReadOnlyOps(src, MountOptions(source_dir="/mem", mountpoint="/mnt"))
    f = fi()
    ops.open("/f", f)
    src.fail = exc
    assert errno_of(ops.getattr, "/f") == code
    assert errno_of(ops.read_into, "/f", f.fh, memoryview(bytearray(4)), 0) == code
    if logged is None:
        assert mount_errors(caplog) == []
    else:
        assert len(mount_errors(caplog)) == 2 and all(m.startswith(logged) for m in mount_errors(caplog))


# metadata ------------------------------------------------------------------------------------------
def test_getattr_reports_plaintext_sizes_and_types(served):
    ops = served.ops()
    entries = plain_entries(served.plain)
    for rel, want in entries.items():
        if served.kind == "sam" and stat.S_ISLNK(want.st_mode):
            continue
        got = ops.getattr(fuse_path(rel))
        assert set(got) == GETATTR_KEYS
        assert stat.S_IFMT(got["st_mode"]) == stat.S_IFMT(want.st_mode), rel
        if not stat.S_ISDIR(want.st_mode):
            assert got["st_size"] == want.st_size, rel
    assert ops.getattr(served.big)["st_size"] == len(plain_bytes(served, served.big))
    # the backing file is larger: getattr is not a pass-through
    assert os.path.getsize(served.backing(ops.source, served.big)) > len(plain_bytes(served, served.big))


def test_getattr_of_the_cipher_tree_keeps_modes_and_ns_times(cipher_served):
    ops = cipher_served.ops()
    for rel, want in plain_entries(cipher_served.plain).items():
        if rel == b"":
            continue
        got = ops.getattr(fuse_path(rel))
        assert got["st_mtime"] == want.st_mtime_ns, rel  # use_ns: nanoseconds
        if not stat.S_ISLNK(want.st_mode):
            assert stat.S_IMODE(got["st_mode"]) == stat.S_IMODE(want.st_mode), rel
    assert ops.getattr("/" + os.fsdecode(NON_UTF8))["st_size"] == len(b"non-utf8\n")
    assert ops.getattr("/rel_link")["st_size"] == len(b"size_1")


def test_getattr_missing_path_is_enoent(served):
    ops = served.ops()
    for path in ("/nope", "/dir/nope", "/dir/sub/nope"):
        assert errno_of(ops.getattr, path) == errno.ENOENT, path


def test_getattr_below_a_missing_directory_is_enoent(cipher_served, caplog):
    caplog.set_level(logging.ERROR, logger="cryptfs.mount")
    ops = cipher_served.ops()
    assert errno_of(ops.getattr, "/nope/deeper") == errno.ENOENT
    assert mount_errors(caplog) == []


def test_readdir_lists_dot_dotdot_and_every_visible_name(served):
    ops = served.ops()
    entries = plain_entries(served.plain)
    dirs = [rel for rel, st in entries.items() if stat.S_ISDIR(st.st_mode)]
    assert len(dirs) >= 3
    for rel in dirs:
        listed = ops.readdir(fuse_path(rel), 0)
        names = [name for name, _, _ in listed]
        assert names[:2] == [".", ".."]
        want = sorted(os.fsdecode(n) for n in os.listdir(os.path.join(os.fsencode(served.plain), rel)))
        assert sorted(names[2:]) == want, rel
        assert all(off == 0 for _, _, off in listed)
        here = ops.getattr(fuse_path(rel))
        parent = ops.getattr(fuse_path(os.path.dirname(rel)))
        assert listed[0][1] == {"st_mode": stat.S_IFDIR, "st_ino": here["st_ino"]}
        assert listed[1][1] == {"st_mode": stat.S_IFDIR, "st_ino": parent["st_ino"]}
        for name, attrs, _ in listed[2:]:
            child = rel + b"/" + os.fsencode(name) if rel else os.fsencode(name)
            assert attrs["st_mode"] == stat.S_IFMT(entries[child].st_mode), child  # type bits only
            assert attrs["st_ino"] == ops.getattr(fuse_path(child))["st_ino"], child


def test_readdir_hides_the_sam_metadata(sam_served):
    names = [name for name, _, _ in sam_served.ops().readdir("/", 0)]
    assert ".sam" in os.listdir(sam_served.root) and ".sam" not in names


def test_readdir_hides_gocryptfs_files(cipher_served):
    names = [name for name, _, _ in cipher_served.ops().readdir("/", 0)]
    assert "gocryptfs.conf" in os.listdir(cipher_served.root)
    assert not [n for n in names if n.startswith("gocryptfs.")]
    assert os.fsdecode(NON_UTF8) in names


def test_readlink(cipher_served, caplog):
    caplog.set_level(logging.ERROR, logger="cryptfs.mount")
    ops = cipher_served.ops()
    assert ops.readlink("/rel_link") == "size_1"
    assert ops.readlink("/dir/up_link") == "../size_1"
    assert mount_errors(caplog) == []
    assert errno_of(ops.readlink, "/nope") == errno.ENOENT
    assert errno_of(ops.readlink, "/abs_link") == errno.EIO  # absolute: leaves the tree, refused
    assert len(mount_errors(caplog)) == 1 and "/abs_link" in mount_errors(caplog)[0]
    assert ops.source.readlink(b"abs_link") == b"/a/b/c/d"  # the source itself still answers


def test_readlink_on_a_package_is_einval(sam_served):
    assert errno_of(sam_served.ops().readlink, "/config.json") == errno.EINVAL


def test_fifo_is_never_served(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "f").write_bytes(b"f\n")
    os.mkfifo(plain / "pipe")
    encrypt_tree(str(plain), str(tmp_path / "cipher"), b"test", FsParams(), LOGN, progress=False)
    tree = open_cipher(tmp_path / "cipher")
    assert stat.S_ISFIFO(tree.lstat(b"pipe").st_mode)  # in the source, but not served
    ops = ReadOnlyOps(tree, MountOptions(source_dir=str(tmp_path / "cipher"), mountpoint=str(tmp_path / "m")))
    assert [name for name, _, _ in ops.readdir("/", 0)] == [".", "..", "f"]
    assert errno_of(ops.getattr, "/pipe") == errno.ENOENT


def test_statfs_getxattr_listxattr(served):
    ops = served.ops()
    got = ops.statfs("/")
    assert len(STATFS_FIELDS) == 9 and set(got) == set(STATFS_FIELDS)
    assert all(k.startswith("f_") for k in got)
    want = os.statvfs(served.root)
    for key in ("f_bsize", "f_frsize", "f_blocks", "f_files", "f_namemax"):
        assert got[key] == getattr(want, key), key
    assert errno_of(ops.getxattr, served.big, "user.anything") == errno.ENODATA
    assert ops.listxattr(served.big) == []


@pytest.mark.parametrize("method", sorted(WRITE_LIKE))
def test_write_like_calls_are_erofs(served, method):
    ops = served.ops()
    before = sorted(os.listdir(served.root))
    assert errno_of(getattr(ops, method), *WRITE_LIKE[method]) == errno.EROFS
    assert errno_of(getattr(ops, method), *WRITE_LIKE[method][:1], None) == errno.EROFS  # any arguments
    assert sorted(os.listdir(served.root)) == before


# open / read / release -------------------------------------------------------------------------------
@pytest.mark.parametrize("flags", [os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC,
                                   os.O_RDONLY | os.O_APPEND, os.O_WRONLY | os.O_CREAT | os.O_TRUNC],
                         ids=["wronly", "rdwr", "trunc", "append", "creat-trunc"])
def test_open_for_writing_is_erofs(served, flags):
    ops = served.ops()
    f = fi(flags)
    assert errno_of(ops.open, served.big, f) == errno.EROFS
    assert f.fh == 0 and ops._handles == {}


def test_open_sets_fh_and_caching(served):
    ops = served.ops()
    a, b = fi(), fi()
    assert ops.open(served.big, a) == 0 and ops.open(served.big, b) == 0
    assert a.fh >= 1 and b.fh >= 1 and a.fh != b.fh
    assert (a.keep_cache, a.direct_io) == (1, 0)
    ops.destroy(None)


def test_open_with_direct_io(served):
    ops = served.ops(direct_io=True)
    f = fi()
    ops.open(served.big, f)
    assert f.fh >= 1 and (f.keep_cache, f.direct_io) == (0, 1)
    ops.destroy(None)


def test_open_missing_is_enoent(served):
    ops = served.ops()
    assert errno_of(ops.open, "/nope", fi()) == errno.ENOENT
    assert ops._handles == {}


def offsets(served: Served, size: int) -> list[int]:
    c = served.chunk
    return [0, 1, c - 1, c, c + 1, 2 * c + 17, size - 1, size, size + 1, size + 10 * c]


@pytest.mark.parametrize("length", [1, 4096, 128 << 10])
def test_read_into_at_chunk_edges(served, length):
    ops = served.ops()
    data = plain_bytes(served, served.big)
    f = fi()
    ops.open(served.big, f)
    for off in offsets(served, len(data)):
        buf = bytearray(b"\xaa" * length)
        n = ops.read_into(served.big, f.fh, memoryview(buf), off)
        want = data[off: off + length]
        assert n == len(want), off
        assert bytes(buf[:n]) == want, off
        assert buf[n:] == b"\xaa" * (length - n), off  # nothing past EOF
    ops.release(served.big, f)


def test_sequential_reads_return_the_whole_file(served):
    """128 KiB requests in order (the prefetch hint's case), then one byte past the end."""
    ops = served.ops()
    data = plain_bytes(served, served.big)
    f = fi()
    ops.open(served.big, f)
    got, off = bytearray(), 0
    while True:
        buf = bytearray(128 << 10)
        n = ops.read_into(served.big, f.fh, memoryview(buf), off)
        if n == 0:
            break
        got += buf[:n]
        off += n
    assert bytes(got) == data
    ops.release(served.big, f)


def test_read_returns_bytes(served):
    ops = served.ops()
    data = plain_bytes(served, served.big)
    f = fi()
    ops.open(served.big, f)
    for off in offsets(served, len(data)):
        assert ops.read(served.big, 5000, off, f.fh) == data[off: off + 5000], off
        assert ops.read(served.big, 5000, off, f) == data[off: off + 5000], off  # an fi object
    assert ops.read(served.big, 0, 0, f.fh) == b""
    ops.release(served.big, f)


def test_read_every_file(served):
    ops = served.ops()
    for rel, st in plain_entries(served.plain).items():
        if not stat.S_ISREG(st.st_mode):
            continue
        path = fuse_path(rel)
        f = fi()
        ops.open(path, f)
        want = (served.plain / os.fsdecode(rel)).read_bytes()
        assert ops.read(path, st.st_size + 100, 0, f.fh) == want, rel
        ops.release(path, f)
    assert ops._handles == {}


def test_tampered_chunk_is_eio_and_logged(served, tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="cryptfs.mount")
    _, source = served.private(tmp_path)
    ops = served.ops(source)
    flip(served.backing(source, served.big), served.chunk_off(1) + 40)
    data = plain_bytes(served, served.big)
    f = fi()
    ops.open(served.big, f)
    assert mount_errors(caplog) == []
    buf = bytearray(served.chunk)
    assert ops.read_into(served.big, f.fh, memoryview(buf), 0) == served.chunk  # chunk 0 is intact
    assert bytes(buf) == data[: served.chunk]
    for off, length in [(served.chunk, 1), (0, 2 * served.chunk), (served.chunk + 100, 4096)]:
        assert errno_of(ops.read_into, served.big, f.fh, memoryview(bytearray(length)), off) == errno.EIO
        assert errno_of(ops.read, served.big, length, off, f.fh) == errno.EIO
    logged = mount_errors(caplog)
    unit = "block" if served.kind == "cipher" else "chunk"
    where = f"{unit} 1 of {served.big if served.kind == 'cipher' else served.big.lstrip('/')}:"
    assert len(logged) == 6 and all(where in m for m in logged), logged
    ops.release(served.big, f)


def test_tampered_header_is_eio_at_open(served, tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="cryptfs.mount")
    _, source = served.private(tmp_path)
    ops = served.ops(source)
    flip(served.backing(source, served.big), 0)
    f = fi()
    assert errno_of(ops.open, served.big, f) == errno.EIO
    assert f.fh == 0 and ops._handles == {}
    logged = mount_errors(caplog)
    assert len(logged) == 1 and served.big in logged[0]


def test_truncated_package_file_is_eio_at_open(sam_served, tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="cryptfs.mount")
    _, source = sam_served.private(tmp_path)
    ops = sam_served.ops(source)
    os.truncate(sam_served.backing(source, sam_served.big), sam_served.chunk_off(2))
    assert errno_of(ops.open, sam_served.big, fi()) == errno.EIO
    assert len(mount_errors(caplog)) == 1 and "weights/a.bin" in mount_errors(caplog)[0]


def test_unknown_fh_is_ebadf(served):
    ops = served.ops()
    assert errno_of(ops.read_into, served.big, 12345, memoryview(bytearray(10)), 0) == errno.EBADF
    assert errno_of(ops.read, served.big, 10, 0, 12345) == errno.EBADF
    assert errno_of(ops.read, served.big, 10, 0, types.SimpleNamespace(fh=12345)) == errno.EBADF


def test_release_closes_the_file(served):
    ops = served.ops()
    f = fi()
    ops.open(served.big, f)
    file = ops._handles[f.fh].file
    fd = file.fd
    os.fstat(fd)  # open
    assert ops.release(served.big, f) == 0
    assert file.fd == -1 and f.fh not in ops._handles
    with pytest.raises(OSError) as e:
        os.fstat(fd)
    assert e.value.errno == errno.EBADF
    assert errno_of(ops.read_into, served.big, f.fh, memoryview(bytearray(10)), 0) == errno.EBADF
    assert ops.release(served.big, f) == 0  # twice is harmless
    g = fi()
    ops.open(served.big, g)
    assert ops.release(served.big, g.fh) == 0 and ops._handles == {}  # a bare fh works too


def test_destroy_closes_every_handle(served):
    ops = served.ops()
    handles = []
    for _ in range(3):
        f = fi()
        ops.open(served.big, f)
        handles.append((f.fh, ops._handles[f.fh].file))
    fds = [file.fd for _, file in handles]
    ops.destroy(None)
    assert ops._handles == {}
    for (fh, file), fd in zip(handles, fds, strict=True):
        assert file.fd == -1
        with pytest.raises(OSError):
            os.fstat(fd)
        assert errno_of(ops.read_into, served.big, fh, memoryview(bytearray(1)), 0) == errno.EBADF


# life cycle ----------------------------------------------------------------------------------------
def fake_config() -> types.SimpleNamespace:
    return types.SimpleNamespace(use_ino=0, kernel_cache=0, direct_io=0, attr_timeout=1.0, entry_timeout=1.0,
                                 negative_timeout=0.0)


@pytest.mark.parametrize("direct_io", [False, True])
def test_init_with_config(served, direct_io):
    ready = threading.Event()
    caller = []

    def on_ready():
        caller.append(threading.current_thread())
        ready.set()

    ops = served.ops(direct_io=direct_io)
    ops.on_ready = on_ready
    config = fake_config()
    assert not ops.ready_seen
    ops.init_with_config(None, config)
    assert ready.wait(5), "on_ready was not called"
    assert ops.ready_seen
    assert caller[0] is not threading.current_thread()  # on its own thread, not libfuse's
    assert config.use_ino == 1
    assert (config.kernel_cache, config.direct_io) == ((0, 1) if direct_io else (1, 0))
    assert config.attr_timeout == config.entry_timeout == config.negative_timeout == CACHE_TIMEOUT


def test_init_with_config_custom_timeout_and_no_config(cipher_served):
    ops = cipher_served.ops(cache_timeout=7.5)
    config = fake_config()
    ops.init_with_config(None, config)
    assert config.attr_timeout == config.entry_timeout == config.negative_timeout == 7.5
    ready = threading.Event()
    ops = cipher_served.ops()
    ops.on_ready = ready.set
    ops.init_with_config(None, None)  # a libfuse without a config struct: still ready
    assert ready.wait(5) and ops.ready_seen
