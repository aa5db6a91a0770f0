"""A package on disk: opened without the key (info, digest), unlocked with it (verify, read).

Unlocking checks, in order: the key check value (a wrong key, or an altered key ID or KDF
salt), the wrapped master key (bound to the package and key ID), then the manifest's HMAC
(a tampered manifest). Only then is any file trusted to
exist with the manifest's size and file ID; content chunks authenticate as they are read.
"""

from __future__ import annotations

import errno
import hmac
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from cryptfs.core.files import read_small_regular
from cryptfs.core.source import OpenFile

from . import keys as keymod
from .content import MAGIC, PackageCodec
from .errors import ChunkError, DigestMismatch, IntegrityError, ManifestError, PackageError, WrongKeyError
from .manifest import (
    HEADER_LEN,
    MANIFEST_MAX,
    META_DIR,
    Dir,
    FileEntry,
    Manifest,
    check_digest_syntax,
    digest,
    meta_paths,
    shown,
)


@dataclass
class Package:
    """A package directory with its parsed (not yet authenticated) manifest."""

    root: str
    manifest_raw: bytes
    mac_value: bytes
    manifest: Manifest

    @classmethod
    def open(cls, root: str, expect_digest: str | None = None) -> Package:
        """Read the manifest (at most MANIFEST_MAX bytes) and its MAC, check the pin, then parse.

        With ``expect_digest`` (``sha256:...``) the digest of the raw manifest bytes is compared
        *before* they are parsed: any other manifest, however large or hostile, is refused with
        DigestMismatch (exit 13) having cost one SHA-256 pass. Parsing never sees it.
        """
        expected = None if expect_digest is None else check_digest_syntax(expect_digest, "expect_digest")
        if not os.path.exists(root):
            raise PackageError(f"package directory {root} does not exist")
        if not os.path.isdir(root):
            raise PackageError(f"{root} is not a directory (give the package directory, ./KEY_ID)")
        root = os.path.abspath(root)  # the mount daemon must not depend on the caller's cwd
        manifest_path, mac_path = meta_paths(root)
        raw = _read_small(manifest_path, MANIFEST_MAX, root)
        mac_text = _read_small(mac_path, 200, root).strip()
        try:
            mac_value = bytes.fromhex(mac_text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            mac_value = b""
        if len(mac_value) != 32:
            raise ManifestError(f"{mac_path}: not a 64-digit hex HMAC (the package is damaged)")
        actual = digest(raw)
        _check_digest(actual, expected)
        pkg = cls(root, raw, mac_value, Manifest.from_bytes(raw))
        pkg.__dict__["digest"] = actual  # what the cached property would compute
        return pkg

    @cached_property
    def digest(self) -> str:
        return digest(self.manifest_raw)

    def check_digest(self, expected: str | None) -> None:
        """Refuse this package unless its digest is ``expected`` (None: no pin).

        Prefer ``Package.open(root, expect_digest=...)``, which checks before parsing.
        """
        _check_digest(self.digest, expected)

    def unlock(self, key: bytes, block_path: str = "auto") -> UnlockedPackage:
        m = self.manifest
        kek = keymod.derive_kek(key, m.key_id, m.kdf)
        if not hmac.compare_digest(kek.check, m.key_check):
            raise WrongKeyError(f"the key does not unlock package {m.key_id} (or its key ID or KDF "
                                "salt was altered): check the key and the package")
        master = keymod.unwrap(kek, m.wrapped_key, m.package_id, m.key_id)
        keys = keymod.package_keys(master, m.key_id) if master is not None else None
        if keys is None or not hmac.compare_digest(keymod.mac(keys, self.manifest_raw), self.mac_value):
            raise IntegrityError(f"{META_DIR}/manifest.json of {self.root} fails authentication: the "
                                 "manifest was tampered with; do not use this package")
        codec = PackageCodec(keys.content, m.package_id, m.chunk_size, block_path)
        return UnlockedPackage(self, codec)


def _check_digest(actual: str, expected: str | None) -> None:
    if expected is not None and expected != actual:
        raise DigestMismatch(f"package digest {actual} is not the expected {expected}: this is "
                             "another (possibly older) package; refusing to use it")


def _read_small(path: str, limit: int, root: str) -> bytes:
    """A small regular file (never blocks on a FIFO, never follows a symlink).

    Reads at most ``limit + 1`` bytes, and allocates for what the file holds, not for ``limit``:
    a 1 KB manifest costs 1 KB, a hostile one at most the limit.
    """
    try:
        data = read_small_regular(path, limit)
    except FileNotFoundError:
        raise ManifestError(f"{root} is not a sam package: {os.path.relpath(path, root)} is missing "
                            "(pack a model with 'python -m sam pack')") from None
    except OSError as e:
        if e.errno == errno.EINVAL:
            raise ManifestError(f"{path} is not a regular file: the package is damaged") from None
        raise ManifestError(f"cannot read {path}: {e.strerror}") from None
    if len(data) > limit:
        raise ManifestError(f"{path} is larger than {limit} bytes: not a sam manifest")
    return data


class PlainFile(OpenFile):
    """One open file of an unlocked package: header and size checked against the manifest."""

    def __init__(self, pkg: UnlockedPackage, entry: FileEntry):
        self.entry = entry
        self.plain_size = entry.size
        self._codec = pkg.codec
        path = pkg.cipher_path(entry.path)
        try:
            # O_NONBLOCK: a FIFO put in place of a file must not block the open (refused below)
            self.fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise IntegrityError(f"{shown(entry.path)}: listed in the manifest but missing from the package "
                                 "(deleted or renamed)") from None
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            raise IntegrityError(f"{shown(entry.path)}: a symlink in the package, not a regular file "
                                 "(replaced after packing)") from None
        try:
            pkg.check_cipher_file(entry, self.fd)
        except BaseException:
            os.close(self.fd)
            raise

    def read_into(self, plain_off: int, out: memoryview) -> int:
        try:
            return self._codec.read_into(self.fd, self.entry.file_id, self.plain_size, plain_off, out)
        except ChunkError as e:
            raise e.with_path(shown(self.entry.path)) from None


class IoProblem(str):
    """A verify problem that is an I/O error (exit 1), not an authentication failure (exit 26)."""


class UnlockedPackage:
    """An authenticated manifest and the content key: everything a reader needs."""

    def __init__(self, package: Package, codec: PackageCodec):
        self.package = package
        self.root = package.root
        self.manifest = package.manifest
        self.codec = codec
        self.by_path = {f.path: f for f in self.manifest.files}
        self._by_id: dict[bytes, str] | None = None

    def cipher_path(self, rel: str) -> str:
        return os.path.join(self.root, *rel.split("/"))

    def check_cipher_file(self, entry: FileEntry, fd: int) -> None:
        """Size and header ID as the manifest says: catches swaps, truncation and growth early."""
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IntegrityError(f"{shown(entry.path)}: not a regular file in the package")
        want = self.codec.cipher_size(entry.size)
        if st.st_size != want:
            raise IntegrityError(f"{shown(entry.path)}: {st.st_size} bytes on disk, the manifest needs "
                                 f"{want} (truncated, extended or replaced)")
        head = os.pread(fd, HEADER_LEN, 0)
        if head[: len(MAGIC)] != MAGIC:
            raise IntegrityError(f"{shown(entry.path)}: no sam file header (replaced by another file)")
        if head[len(MAGIC):] != entry.file_id:
            other = self._path_of_id(head[len(MAGIC):])
            hint = f" (it is the content of {shown(other)}: files were swapped)" if other else ""
            raise IntegrityError(f"{shown(entry.path)}: file ID differs from the manifest{hint}")

    def _path_of_id(self, file_id: bytes) -> str | None:
        """The manifest path with this file ID (a dict built on first use: many swapped files stay linear)."""
        if self._by_id is None:
            self._by_id = {}
            for f in self.manifest.files:
                self._by_id.setdefault(f.file_id, f.path)
        return self._by_id.get(file_id)

    def open(self, rel: str) -> PlainFile:
        entry = self.by_path.get(rel)
        if entry is None:
            raise FileNotFoundError(2, "not in the package manifest", rel)
        return PlainFile(self, entry)

    def extra_paths(self) -> list[str]:
        """Files and symlinks on disk that the manifest does not list (added after packing)."""
        extra = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            node = self.manifest.lookup(rel_dir[:-1])  # a directory of the manifest: others are pruned
            if not rel_dir:
                dirnames[:] = [d for d in dirnames if d != META_DIR]
            for d in list(dirnames):
                if type(node.entries.get(d)) is not Dir:
                    dirnames.remove(d)
                    extra.append(rel_dir + d + "/")
            extra.extend(rel_dir + n for n in filenames if type(node.entries.get(n)) is not FileEntry)
        return sorted(extra)

    def check_files(self) -> None:
        """Every manifest file present with its size and ID: what a mount checks before it appears."""
        for entry in self.manifest.files:
            PlainFile(self, entry).close()

    def verify(self, on_problem: Callable[[str], None], progress=None) -> list[str]:
        """Authenticate every chunk of every file; return (and report) each problem found."""
        problems: list[str] = []

        def problem(message: str) -> None:
            problems.append(message)
            on_problem(message)

        for rel in self.extra_paths():
            problem(f"{shown(rel)}: on disk but not in the manifest (added after packing)")
        buf = bytearray(4 << 20)
        for entry in self.manifest.files:
            try:
                with PlainFile(self, entry) as f:
                    for off in range(0, entry.size, len(buf)):
                        n = f.read_into(off, memoryview(buf))
                        if progress is not None:
                            progress.update(n)
            except (IntegrityError, ChunkError) as e:
                problem(str(e))
            except OSError as e:
                problem(IoProblem(f"{shown(entry.path)}: {e.strerror} (an I/O error, not tampering)"))
        return problems
