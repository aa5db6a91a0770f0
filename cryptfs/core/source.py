"""What the read-only FUSE adapter serves: a mount-free source of plaintext.

A :class:`MountSource` answers in plaintext terms (paths relative to its root, as bytes;
``b""`` is the root) and owns every format decision: which names exist, their sizes, how a
file decrypts. gocryptfs trees (:class:`cryptfs.tree.CipherTree`) and Sam packages
(:class:`sam.source.PackageSource`) implement it; the adapter (:mod:`cryptfs.core.fuse`) only
maps answers and exceptions to FUSE. The same sources serve decrypt, fsck and verify without
any mount.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class DirEntry:
    """One directory entry as the adapter lists it: with use_ino, an entry needs its inode."""

    name: bytes  # plaintext name
    mode: int  # st_mode (its file-type bits are what readdir reports)
    ino: int


class OpenFile(ABC):
    """An open regular file of a source: its plaintext size, read at any offset, close.

    ``fd`` is the backing (ciphertext) file; the adapter hints the kernel's readahead on it.
    """

    fd: int = -1
    plain_size: int = 0

    @abstractmethod
    def read_into(self, plain_off: int, out: memoryview) -> int:
        """Fill ``out`` with plaintext from ``plain_off``; short only at EOF.

        Raises a :class:`~cryptfs.core.errors.ChunkError` for data that does not authenticate
        (never zeros in its place) and OSError for I/O errors.
        """

    def read(self, plain_off: int, size: int) -> bytes:
        buf = bytearray(max(0, size))
        n = self.read_into(plain_off, memoryview(buf))
        del buf[n:]
        return bytes(buf)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class MountSource(ABC):
    """A read-only tree of plaintext; every method raises OSError or a core Failure."""

    root: bytes | str  # the backing directory (statfs reports its filesystem)

    @property
    @abstractmethod
    def block_path(self) -> str:
        """Which implementation decrypts bulk reads: "c" or "python" (the mount logs it)."""

    @abstractmethod
    def lstat(self, rel: bytes) -> os.stat_result:
        """The entry's attributes with plaintext sizes; FileNotFoundError where there is none."""

    @abstractmethod
    def readdir(self, rel: bytes) -> list[DirEntry]:
        """The visible entries of a directory (without . and ..)."""

    @abstractmethod
    def readlink(self, rel: bytes) -> bytes:
        """A symlink's plaintext target."""

    @abstractmethod
    def open(self, rel: bytes) -> OpenFile:
        """Open a regular file for reading."""
