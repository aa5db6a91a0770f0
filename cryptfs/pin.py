"""A gocryptfs tree pinned to its measurement: only what was measured is served.

``cryptfs mount|decrypt --expect-digest`` measure the cipher directory (:mod:`cryptfs.digest`)
and compare *before* any key material is read, so a wrong tree costs no password prompt, no
scrypt and no key use. From then on :class:`PinnedTree` answers from the measurement:

- directory listings come from the manifest (an added file is invisible, a deleted one ENOENT);
- dir IVs, long-name sidecars and the config are the measured bytes, never read again;
- every lstat, symlink target, open and read is checked against the entry's record: a changed
  type, mode, size, header or target is a :class:`~cryptfs.errors.TreeChangedError` (EIO at
  the mount, logged; exit 26 for decrypt), a short read of a pinned file too;
- an all-zero cipher block is a tampered block unless ``allow_holes`` (model files are not
  sparse; gocryptfs would serve 4 KiB of zeros).

Content blocks still authenticate as they are read, bound to the file ID the header check
pinned. This stays format-local: the FUSE adapter (:mod:`cryptfs.core.fuse`) sees an ordinary
:class:`~cryptfs.core.source.MountSource`.
"""

from __future__ import annotations

import errno
import os
import stat

from .core.text import display, show
from .digest import DIR, FILE, LINK, META_KINDS, Record, TreeDigest, check_digest_syntax, tree_digest
from .errors import TreeChangedError
from .password import KeySource
from .tree import CipherTree, PlainFile, probe_master_key

_TYPE_OF = {DIR: stat.S_ISDIR, FILE: stat.S_ISREG, LINK: stat.S_ISLNK}


class PinnedTree(CipherTree):
    """A :class:`CipherTree` that serves only the entries of ``measured``, as they were measured."""

    def __init__(self, measured: TreeDigest, master_key: bytes, block_path: str | None = "auto",
                 allow_holes: bool = False):
        super().__init__(measured.root, measured.params, master_key, block_path, holes=allow_holes)
        self.measured = measured
        self._records = measured.records
        self._children: dict[bytes, list[bytes]] = {}
        for path in self._records:  # already in bytes order: each list comes out sorted
            if path:
                parent, _, name = path.rpartition(b"/")
                self._children.setdefault(parent, []).append(name)

    @property
    def digest(self) -> str:
        return self.measured.digest

    def _key(self, cpath: bytes) -> bytes:
        """The manifest path of an absolute backing path."""
        return b"" if cpath == self.root else cpath[len(self.root) + 1:]

    def record(self, cpath: bytes, rel: bytes) -> Record:
        """The measured entry at ``cpath``; ENOENT for anything the measurement does not have."""
        rec = self._records.get(self._key(cpath))
        if rec is None or rec.kind in META_KINDS:
            raise FileNotFoundError(errno.ENOENT, "not in the measured tree", show(rel))
        return rec

    # the backing store, answered from the measurement --------------------------------------
    def _read_meta(self, path: bytes, limit: int) -> bytes:
        rec = self._records.get(self._key(path))
        if rec is None or rec.kind not in META_KINDS:
            raise FileNotFoundError(errno.ENOENT, "not in the measured tree", display(path))
        return rec.data

    def _list_disk(self, cipher_dir: bytes) -> list[bytes]:
        key = self._key(cipher_dir)
        rec = self._records.get(key)
        if rec is None:
            raise FileNotFoundError(errno.ENOENT, "not in the measured tree", display(key))
        if rec.kind != DIR:
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", display(key))
        return list(self._children.get(key, ()))

    def _lstat_backing(self, cpath: bytes, rel: bytes) -> os.stat_result:
        rec = self.record(cpath, rel)
        st = os.lstat(cpath)
        problem = mismatch(rec, st)
        if problem:
            raise TreeChangedError(f"{show(rel)}: {problem} since the tree was measured: refused")
        return st

    def _read_target(self, cpath: bytes, rel: bytes) -> bytes:
        rec = self.record(cpath, rel)
        target = os.readlink(cpath)
        if rec.kind != LINK or target != rec.data:
            raise TreeChangedError(f"{show(rel)}: the symlink target changed since the tree was "
                                   "measured: refused")
        return target

    def open(self, rel: bytes) -> PinnedFile:
        return PinnedFile(self, rel)


class PinnedFile(PlainFile):
    """An open pinned file: size, mode and header checked at open, the size again at every read."""

    def __init__(self, tree: PinnedTree, rel: bytes):
        rec = tree.record(tree.cipher_path(rel), rel)
        super().__init__(tree, rel)
        try:
            problem = mismatch(rec, os.fstat(self.fd))
            if not problem and os.pread(self.fd, len(rec.data), 0) != rec.data:
                problem = "its header (file ID) changed"
            if problem:
                raise TreeChangedError(f"{show(rel)}: {problem} since the tree was measured: refused")
        except BaseException:
            self.close()
            raise
        self.record = rec

    def read_into(self, plain_off: int, out: memoryview) -> int:
        """As PlainFile, but a short read or a size change is tampering, never a shorter file."""
        n = super().read_into(plain_off, out)
        want = max(0, min(len(out), self.plain_size - plain_off))
        size = os.fstat(self.fd).st_size
        if n != want or size != self.record.size:
            raise TreeChangedError(f"{show(self.rel)}: truncated or resized since the tree was measured "
                                   f"({self.record.size} -> {size} ciphertext bytes): refused")
        return n


def mismatch(rec: Record, st: os.stat_result) -> str | None:
    """What differs between a measured record and the entry on disk now (None: nothing)."""
    if not _TYPE_OF[rec.kind](st.st_mode):
        return "its type changed"
    if stat.S_IMODE(st.st_mode) != rec.mode:
        return f"its mode changed ({rec.mode:04o} -> {stat.S_IMODE(st.st_mode):04o})"
    if rec.kind == FILE and st.st_size != rec.size:
        return f"its size changed ({rec.size} -> {st.st_size} ciphertext bytes)"
    return None


def unlock_pinned(measured: TreeDigest, keys: KeySource, block_path: str | None = "auto",
                  allow_holes: bool = False) -> PinnedTree:
    """Unlock a tree already measured (and compared): the key comes from ``keys`` only now.

    The config is the measured bytes; a ``--masterkey`` is probed as :func:`cryptfs.tree.open_tree`
    does.
    """
    master_key = keys.master_key()
    if master_key is None:
        master_key = measured.config().unlock(keys.password())
        return PinnedTree(measured, master_key, block_path, allow_holes)
    tree = PinnedTree(measured, master_key, block_path, allow_holes)
    probe_master_key(tree)
    return tree


def open_pinned_tree(cipherdir: str, keys: KeySource, expect_digest: str, config: str | None = None,
                     block_path: str | None = "auto", allow_holes: bool = False) -> PinnedTree:
    """Measure, compare with ``expect_digest`` (DigestMismatch, exit 13), then unlock and pin.

    Nothing is read from ``keys`` before the comparison passed.
    """
    expected = check_digest_syntax(expect_digest)
    measured = tree_digest(cipherdir, config)
    measured.check(expected)
    return unlock_pinned(measured, keys, block_path, allow_holes)
