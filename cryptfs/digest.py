"""The tree digest: one SHA-256 that names a gocryptfs cipher tree, computed without the key.

gocryptfs authenticates each block and binds it to its file's ID, but nothing binds the files
together: whoever controls the storage can swap, rename, delete or add ciphertext files, cut a
file at a block boundary or zero a block, and the mount serves the result. The digest covers
everything outside the blocks that decides what the mount serves: the config's bytes, and for
every entry its ciphertext path, type, permission bits and size, each file's 18-byte header
(the file ID every block's associated data is bound to), symlink targets, dir IVs and long-name
sidecars. The owner registers it; the VM computes it again and compares *before* it asks for
the key (:mod:`cryptfs.pin` then serves only what was measured).

The manifest is specified byte for byte in docs/tree-digest.md; keep the two in step (a test
runs the document's independent script against this module).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from . import names as nm
from .config import ConfFile, FsParams, read_conf_bytes
from .content import HEADER_LEN
from .core.files import read_small_regular
from .core.text import display
from .errors import CipherDirError, DigestMismatch, UsageError

FORMAT = "cryptfs-tree-digest-v1"
MAGIC = FORMAT.encode() + b"\n"
MAX_ENTRIES = 1_000_000  # records, the root directory included
MAX_DEPTH = 64  # components of a ciphertext path
MAX_PATH = 4096  # bytes of a ciphertext path
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}\Z")
T = TypeVar("T")

# record kinds: one ASCII byte each
DIR, FILE, LINK, DIRIV, SIDECAR = b"d", b"f", b"l", b"i", b"n"
META_KINDS = (DIRIV, SIDECAR)


@dataclass(frozen=True)
class Record:
    """One entry of the manifest; ``data`` is the header, target or metadata content by kind."""

    kind: bytes
    mode: int  # st_mode & 0o7777
    size: int  # st_size for f, i, n; 0 for d and l
    data: bytes

    def encode(self, path: bytes) -> bytes:
        return (self.kind + _u32(len(path)) + path + _u32(self.mode) + self.size.to_bytes(8, "big")
                + _u32(len(self.data)) + self.data)


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


@dataclass(frozen=True, eq=False)
class TreeDigest:
    """A measured tree: the digest, and what it was computed over (kept for the pinned mount)."""

    digest: str  # "sha256:<hex>"
    root: str  # the cipher directory, symlinks resolved
    conf_path: str
    conf_bytes: bytes = field(repr=False)  # exactly what was hashed (and what the pin unlocks)
    params: FsParams
    records: dict[bytes, Record] = field(repr=False)  # by ciphertext path, in manifest order

    def count(self, kind: bytes) -> int:
        return sum(1 for r in self.records.values() if r.kind == kind)

    @property
    def cipher_bytes(self) -> int:
        """Ciphertext bytes of the content files (what the mount decrypts)."""
        return sum(r.size for r in self.records.values() if r.kind == FILE)

    def summary(self) -> dict:
        """What ``cryptfs digest --json`` prints."""
        return {"digest": self.digest, "format": FORMAT, "entries": len(self.records),
                "files": self.count(FILE), "dirs": self.count(DIR), "symlinks": self.count(LINK),
                "bytes": self.cipher_bytes}

    def check(self, expected: str | None) -> None:
        """Refuse this tree unless its digest is ``expected`` (None: nothing pinned)."""
        if expected is None:
            return
        expected = check_digest_syntax(expected)
        if expected != self.digest:
            raise DigestMismatch(
                f"tree digest {self.digest} is not the expected {expected}: the cipher directory "
                "was changed (files swapped, renamed, added, deleted, truncated or re-headed, or "
                "its config) or is another tree; refused before any key was read")

    def config(self) -> ConfFile:
        """The config parsed from the measured bytes (never read again: no swap after measuring)."""
        return ConfFile.parse(self.conf_bytes, self.conf_path)

    def manifest(self) -> bytes:
        """The whole manifest (tests and the document's example; the digest streams it)."""
        return b"".join(iter_manifest(self.conf_bytes, self.records.items()))


def check_digest_syntax(value: str, what: str = "--expect-digest") -> str:
    """The canonical ``sha256:<64 lowercase hex>`` form; anything else is a usage error (exit 2)."""
    value = value.strip()
    if not DIGEST_RE.match(value):
        raise UsageError(f"{what} {value!r}: expected sha256: followed by 64 lowercase hex digits "
                         "(as 'python -m cryptfs digest CIPHERDIR' prints it)")
    return value


def iter_manifest(conf: bytes, records: Iterable[tuple[bytes, Record]]) -> Iterator[bytes]:
    """MAGIC, the length-prefixed config, then every record in path order (bytes order)."""
    yield MAGIC + len(conf).to_bytes(8, "big") + conf
    for path, rec in records:
        yield rec.encode(path)


def tree_digest(cipherdir: str, config: str | None = None) -> TreeDigest:
    """Measure ``cipherdir`` without the key (the owner before registering, the VM before unlocking).

    The config must be valid (a tree the mount would refuse is not measured: exit 8). A FIFO,
    device or socket, a tree over the limits, or an entry that cannot be read is refused with
    CipherDirError (exit 6): the digest names only trees the mount serves in full.
    """
    if not os.path.exists(cipherdir):
        raise CipherDirError(f"{cipherdir}: no such directory")
    if not os.path.isdir(cipherdir):
        raise CipherDirError(f"{cipherdir}: not a directory")
    root = os.path.realpath(cipherdir)
    conf_path = config or os.path.join(root, "gocryptfs.conf")
    conf_bytes = read_conf_bytes(conf_path)
    params = ConfFile.parse(conf_bytes, conf_path).params
    records = _Walker(os.fsencode(root), params).walk()
    h = hashlib.sha256()
    for chunk in iter_manifest(conf_bytes, records.items()):
        h.update(chunk)
    return TreeDigest("sha256:" + h.hexdigest(), root, conf_path, conf_bytes, params, records)


class _Walker:
    """Every entry below the root, lstat'ed and never followed; special files and limits refused."""

    def __init__(self, root: bytes, params: FsParams):
        self.root = root
        self.plaintext_names = params.plaintext_names

    def walk(self) -> dict[bytes, Record]:
        records = {b"": Record(DIR, stat.S_IMODE(self._guard(b"", os.stat, self.root).st_mode), 0, b"")}
        stack = [b""]
        while stack:
            rel_dir = stack.pop()
            for name in self._listdir(rel_dir):
                rel = rel_dir + b"/" + name if rel_dir else name
                if rel == nm.CONF_NAME:
                    continue  # the config record holds it (or, with --config, the mount hides it)
                if len(records) >= MAX_ENTRIES:
                    raise CipherDirError(f"more than {MAX_ENTRIES} entries: refusing to measure the tree")
                _check_path(rel)
                rec = self._guard(rel, self._record, rel, name)
                records[rel] = rec
                if rec.kind == DIR:
                    stack.append(rel)
        return dict(sorted(records.items()))

    def _listdir(self, rel_dir: bytes) -> list[bytes]:
        """The names in one directory; a directory of more than MAX_ENTRIES is refused as it is read."""
        return self._guard(rel_dir, self._names, os.path.join(self.root, rel_dir) if rel_dir else self.root)

    @staticmethod
    def _names(path: bytes) -> list[bytes]:
        names = []
        with os.scandir(path) as it:
            for entry in it:
                names.append(entry.name)
                if len(names) > MAX_ENTRIES:
                    raise CipherDirError(f"more than {MAX_ENTRIES} entries: refusing to measure the tree")
        return names

    def _guard(self, rel: bytes, fn: Callable[..., T], *args) -> T:
        """Run ``fn``; an OSError becomes a CipherDirError naming the entry (exit 6)."""
        try:
            return fn(*args)
        except OSError as e:
            raise CipherDirError(f"{display(rel or b'.')}: {e.strerror or e}: cannot measure the "
                                 "tree") from None

    def _record(self, rel: bytes, name: bytes) -> Record:
        path = os.path.join(self.root, rel)
        st = os.lstat(path)
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            return Record(DIR, mode, 0, b"")
        if stat.S_ISLNK(st.st_mode):
            return Record(LINK, mode, 0, os.readlink(path))
        if not stat.S_ISREG(st.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
            raise CipherDirError(f"{display(rel)} is {kind}: the mount would not serve it; a gocryptfs "
                                 "tree holds only files, directories and symlinks (refused)")
        meta = self._meta_kind(name)
        if meta is not None:
            kind, limit = meta
            data = read_small_regular(path, limit)
            if len(data) > limit:
                raise CipherDirError(f"{display(rel)} has more than {limit} bytes: not a gocryptfs "
                                     "dir IV or long-name sidecar (refused)")
            return Record(kind, mode, len(data), data)
        return _file_record(path, rel)

    def _meta_kind(self, name: bytes) -> tuple[bytes, int] | None:
        """Dir IVs and sidecars are recorded whole; with PlaintextNames no name is special."""
        if self.plaintext_names:
            return None
        if name == nm.DIRIV_NAME:
            return DIRIV, nm.DIRIV_LEN
        if nm.is_sidecar(name):
            return SIDECAR, nm.SIDECAR_MAX
        return None


def _file_record(path: bytes, rel: bytes) -> Record:
    """Size, mode and the first min(size, 18) bytes (the header; the whole file if shorter)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "changed while being measured")
        want = min(st.st_size, HEADER_LEN)
        header = os.pread(fd, want, 0)
        if len(header) != want:
            raise OSError(errno.EIO, "shrank while being measured")
        return Record(FILE, stat.S_IMODE(st.st_mode), st.st_size, header)
    finally:
        os.close(fd)


def _check_path(rel: bytes) -> None:
    if len(rel) > MAX_PATH:
        raise CipherDirError(f"a ciphertext path is longer than {MAX_PATH} bytes: refusing to measure "
                             f"the tree ({display(rel[:80])}...)")
    if rel.count(b"/") + 1 > MAX_DEPTH:
        raise CipherDirError(f"a ciphertext path is deeper than {MAX_DEPTH} directories: refusing to "
                             f"measure the tree ({display(rel[:80])}...)")
