"""The mount's view of an unlocked package: exactly the manifest's tree, nothing else.

This is the :class:`~cryptfs.core.source.MountSource` the shared read-only FUSE adapter serves;
files on disk that the manifest does not list are never visible, and every read authenticates.
"""

from __future__ import annotations

import errno
import os
import stat

from cryptfs.core.source import DirEntry, MountSource

from .manifest import Dir
from .package import PlainFile, UnlockedPackage


class PackageSource(MountSource):
    def __init__(self, pkg: UnlockedPackage):
        self.pkg = pkg
        self.root = pkg.root
        self._lookup = pkg.manifest.lookup  # the manifest's tree: each name held once, however deep

    @property
    def block_path(self) -> str:
        return self.pkg.codec.block_path

    @staticmethod
    def _key(rel: bytes) -> str:
        return rel.decode("utf-8", "surrogateescape")

    def lstat(self, rel: bytes) -> os.stat_result:
        key = self._key(rel)
        node = self._lookup(key)
        if node is None:
            raise FileNotFoundError(errno.ENOENT, "not in the package manifest", key)
        st = os.lstat(self.pkg.cipher_path(key) if key else self.root)
        if type(node) is Dir:
            if not stat.S_ISDIR(st.st_mode):
                raise FileNotFoundError(errno.ENOENT, "not a directory in the package", key)
            mode = stat.S_IFDIR | (stat.S_IMODE(st.st_mode) & 0o7555)
            return _with(st, mode, st.st_size)
        return _with(st, stat.S_IFREG | node.mode, node.size)

    def readdir(self, rel: bytes) -> list[DirEntry]:
        """The manifest's entries of a directory that exist on disk, with type and inode."""
        key = self._key(rel)
        node = self._lookup(key)
        if type(node) is not Dir:
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", key)
        base = self.pkg.cipher_path(key) if key else self.root
        out = []
        for n in node.names():
            try:
                st = os.lstat(os.path.join(base, n))
            except OSError:
                continue
            out.append(DirEntry(n.encode("utf-8", "surrogateescape"), st.st_mode, st.st_ino))
        return out

    def readlink(self, rel: bytes) -> bytes:
        raise OSError(errno.EINVAL, "a package holds no symlinks", self._key(rel))

    def open(self, rel: bytes) -> PlainFile:
        return self.pkg.open(self._key(rel))


def _with(st: os.stat_result, mode: int, size: int) -> os.stat_result:
    """The backing lstat with the manifest's mode and size (and blocks to match the size)."""
    fields = list(st)
    fields[stat.ST_MODE], fields[stat.ST_SIZE] = mode, size
    extra = {k: getattr(st, k) for k in ("st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blksize")}
    extra.update(st_blocks=-(-size // 512), st_rdev=0)
    return os.stat_result(fields, extra)
