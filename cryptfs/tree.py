"""A mount-free, read-only model of a gocryptfs cipher directory.

Paths are plaintext paths relative to the root, as bytes (b"" is the root, components
joined with b"/"). Decrypt, fsck and the FUSE mount all go through this class: it is the
gocryptfs :class:`~cryptfs.core.source.MountSource`; the FUSE adapter only maps its
exceptions to errno values.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from . import names as nm
from .config import ConfFile, FsParams
from .content import ContentCodec
from .core.files import read_small_regular
from .core.source import DirEntry, MountSource, OpenFile
from .core.text import display, show
from .cryptocore import AuthError, content_aead, eme_key
from .errors import BadNameError, BlockError, CipherDirError, ConfigError, WrongPasswordError
from .names import BadName, NameCodec
from .password import KeySource


@dataclass
class Entry:
    name: bytes  # plaintext name
    cipher_path: bytes  # absolute path of the backing entry


@dataclass
class Problem:
    cipher_path: bytes
    reason: str

    def __str__(self) -> str:
        return f"{display(self.cipher_path)}: {self.reason}"


class CipherTree(MountSource):
    def __init__(self, cipherdir: str | bytes, params: FsParams, master_key: bytes,
                 block_path: str | None = "auto", holes: bool = True):
        self.root = os.fsencode(os.path.abspath(os.fsdecode(cipherdir)))
        self.params = params
        key = None if params.plaintext_names else eme_key(master_key, params.hkdf)
        self.names = NameCodec(key, params.raw64, params.longnamemax)
        self.content = ContentCodec(content_aead(params.content, master_key, params.hkdf), block_path, holes)
        self._symlink_aead = self.content.aead
        self._diriv: dict[bytes, bytes] = {}

    # directories and names --------------------------------------------------
    def dir_iv(self, cipher_dir: bytes) -> bytes:
        if self.params.plaintext_names:
            return b""
        if not self.params.diriv:
            return nm.ZERO_IV
        iv = self._diriv.get(cipher_dir)
        if iv is None:
            path = os.path.join(cipher_dir, nm.DIRIV_NAME)
            try:
                iv = nm.check_diriv(self._read_meta(path, nm.DIRIV_LEN))
            except (FileNotFoundError, NotADirectoryError):
                _check_is_dir(cipher_dir)  # a path below a missing directory or a file: ENOENT/ENOTDIR
                raise BadNameError(f"{display(path)} is missing: the directory cannot be "
                                   "decrypted") from None
            except OSError as e:  # a FIFO, device or symlink in its place: refused, never waited on
                raise BadNameError(f"{display(path)}: unreadable ({e.strerror}): the directory cannot be "
                                   "decrypted") from None
            except BadName as e:
                raise BadNameError(f"{display(path)}: {e}") from None
            self._diriv[cipher_dir] = iv
        return iv

    def cipher_path(self, rel: bytes) -> bytes:
        path = self.root
        for comp in rel.split(b"/") if rel else ():
            if comp:
                try:
                    disk, _ = self.names.disk_name(comp, self.dir_iv(path))
                except BadName as e:
                    raise FileNotFoundError(2, f"invalid name: {e}", os.fsdecode(rel)) from None
                path = os.path.join(path, disk)
        return path

    def _hidden(self, cipher_dir: bytes, disk: bytes) -> bool:
        if disk == nm.CONF_NAME and cipher_dir == self.root:
            return True
        if self.params.plaintext_names:
            return False
        return (self.params.diriv and disk == nm.DIRIV_NAME) or nm.is_sidecar(disk)

    def _decrypt_disk_name(self, cipher_dir: bytes, disk: bytes, iv: bytes) -> bytes:
        if self.names.plaintext or not nm.is_longname(disk):
            return self.names.decrypt(disk, iv)
        sidecar = os.path.join(cipher_dir, disk + nm.LONGNAME_SUFFIX)
        try:
            encoded = self._read_meta(sidecar, nm.SIDECAR_MAX)
        except OSError as e:
            raise BadName(f"long-name sidecar unreadable ({e.strerror})") from None
        if not encoded or len(encoded) > nm.SIDECAR_MAX:
            raise BadName(f"long-name sidecar has {len(encoded)} bytes")
        if self.names.longname_hash(encoded) != disk:
            raise BadName("long-name sidecar does not match its hash")
        return self.names.decrypt(encoded, iv)

    def scan(self, rel: bytes) -> tuple[list[Entry], list[Problem]]:
        """Entries of a directory that decrypt, and the ones that do not (hidden, as gocryptfs)."""
        cdir = self.cipher_path(rel)
        iv = self.dir_iv(cdir)
        entries, problems = [], []
        for disk in self._list_disk(cdir):
            if self._hidden(cdir, disk):
                continue
            try:
                name = self._decrypt_disk_name(cdir, disk, iv)
            except BadName as e:
                problems.append(Problem(os.path.join(cdir, disk), f"undecryptable name: {e}"))
                continue
            entries.append(Entry(name, os.path.join(cdir, disk)))
        return entries, problems

    def listdir(self, rel: bytes) -> list[Entry]:
        return self.scan(rel)[0]

    def readdir(self, rel: bytes) -> list[DirEntry]:
        """The entries the mount lists: those that decrypt and still exist, with type and inode."""
        out = []
        for e in self.listdir(rel):
            try:
                st = os.lstat(e.cipher_path)
            except OSError:
                continue
            out.append(DirEntry(e.name, st.st_mode, st.st_ino))
        return out

    @property
    def block_path(self) -> str:
        return self.content.block_path

    # the backing store: every read of it below goes through these (cryptfs.pin checks them) ----
    def _read_meta(self, path: bytes, limit: int) -> bytes:
        """A dir IV or long-name sidecar: never blocks (a FIFO in its place is refused)."""
        return read_small_regular(path, limit)

    def _list_disk(self, cipher_dir: bytes) -> list[bytes]:
        return sorted(os.listdir(cipher_dir))

    def _lstat_backing(self, cpath: bytes, rel: bytes) -> os.stat_result:
        return os.lstat(cpath)

    def _read_target(self, cpath: bytes, rel: bytes) -> bytes:
        return os.readlink(cpath)

    # attributes and data ----------------------------------------------------
    def lstat(self, rel: bytes) -> os.stat_result:
        """The backing lstat with st_size replaced by the plaintext size."""
        cpath = self.cipher_path(rel)
        st = self._lstat_backing(cpath, rel)
        if stat.S_ISREG(st.st_mode):
            size = self.content.plain_size(st.st_size)
        elif stat.S_ISLNK(st.st_mode):
            size = len(self.readlink_cipher(cpath, rel))
        else:
            return st
        fields = list(st)
        fields[stat.ST_SIZE] = size
        return os.stat_result(fields, {k: getattr(st, k) for k in
                                       ("st_atime_ns", "st_mtime_ns", "st_ctime_ns",
                                        "st_blksize", "st_blocks", "st_rdev")
                                       if hasattr(st, k)})

    def readlink_cipher(self, cpath: bytes, rel: bytes) -> bytes:
        target = self._read_target(cpath, rel)
        if self.names.plaintext or not target:
            return target
        try:
            data = nm.b64decode_strict(target, self.params.raw64)
            if len(data) <= self._symlink_aead.overhead:
                raise AuthError
            return self._symlink_aead.open(data, bytes(8))
        except (BadName, AuthError):
            raise BlockError(0, "symlink target does not authenticate", show(rel)) from None

    def readlink(self, rel: bytes) -> bytes:
        return self.readlink_cipher(self.cipher_path(rel), rel)

    def open(self, rel: bytes) -> PlainFile:
        return PlainFile(self, rel)


class PlainFile(OpenFile):
    """An open regular file: the backing fd, its file ID and size, read at any offset."""

    def __init__(self, tree: CipherTree, rel: bytes):
        self.tree = tree
        self.rel = rel
        self.cipher_path = tree.cipher_path(rel)
        # O_NONBLOCK: a FIFO put in place of a file must not block the open (refused below)
        self.fd = os.open(self.cipher_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            st = os.fstat(self.fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "not a regular file in the cipher directory", show(rel))
            self.cipher_size = st.st_size
            self.plain_size = tree.content.plain_size(self.cipher_size)
            self.file_id = tree.content.read_file_id(self.fd)
        except BlockError as e:
            os.close(self.fd)
            raise e.with_path(show(rel)) from None
        except BaseException:
            os.close(self.fd)
            raise

    def read_into(self, plain_off: int, out: memoryview) -> int:
        if self.file_id is None:
            return 0
        try:
            return self.tree.content.read_into(self.fd, self.file_id, self.cipher_size, plain_off, out)
        except BlockError as e:
            raise e.with_path(show(self.rel)) from None


def conf_path_for(cipherdir: str, config: str | None = None) -> str:
    return config or os.path.join(cipherdir, "gocryptfs.conf")


def check_cipherdir(cipherdir: str) -> None:
    if not os.path.exists(cipherdir):
        raise CipherDirError(f"{cipherdir}: no such directory")
    if not os.path.isdir(cipherdir):
        raise CipherDirError(f"{cipherdir}: not a directory")


def open_tree(cipherdir: str, keys: KeySource, config: str | None = None,
              block_path: str | None = "auto", holes: bool = True) -> CipherTree:
    """Load the config, get the key from ``keys`` and return the unlocked tree.

    ``holes=False`` refuses all-zero cipher blocks (EIO / BlockError) instead of serving zeros.
    """
    check_cipherdir(cipherdir)
    conf_path = conf_path_for(cipherdir, config)
    master_key = keys.master_key()
    if master_key is None:
        conf = ConfFile.load(conf_path)
        return CipherTree(cipherdir, conf.params, conf.unlock(keys.password()), block_path, holes)
    try:
        params = ConfFile.load(conf_path).params
    except ConfigError:
        if config or os.path.exists(conf_path):
            raise
        params = FsParams()  # no config: gocryptfs' -masterkey defaults
    tree = CipherTree(cipherdir, params, master_key, block_path, holes)
    probe_master_key(tree)
    return tree


def _check_is_dir(cipher_dir: bytes) -> None:
    st = os.lstat(cipher_dir)  # FileNotFoundError propagates: the path does not exist
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", display(cipher_dir))


PROBE_FILES = 3  # authenticated blocks read to confirm a master key


def probe_master_key(tree: CipherTree) -> None:
    """A wrong --masterkey decrypts nothing: say so instead of reporting tampering later.

    Encrypted names are weak evidence (a wrong key gives valid padding for about one name in
    256), so the verdict comes from authenticated data: the first block of up to three
    non-empty files in the root. With most names failing, or every probed block failing, the
    key is wrong.
    """
    try:
        entries, problems = tree.scan(b"")
    except BadNameError:
        return
    if not tree.names.plaintext and problems and len(problems) >= len(entries):
        raise WrongPasswordError("the master key does not decrypt the names in the root directory: "
                                 "it is not the key of this filesystem")
    failed: list[str] = []
    for e in entries:
        if len(failed) == PROBE_FILES:
            break
        if not (os.path.isfile(e.cipher_path) and not os.path.islink(e.cipher_path)):
            continue
        try:
            with tree.open(e.name) as f:
                f.read(0, 1)
        except BlockError:
            failed.append(show(e.name))
            continue
        if f.file_id is not None:
            return  # one block authenticated: the key is right
    if failed:
        raise WrongPasswordError(f"the master key does not decrypt the first files in the root directory "
                                 f"({', '.join(failed)}): it is not the key of this filesystem, or those "
                                 "files are corrupt")
