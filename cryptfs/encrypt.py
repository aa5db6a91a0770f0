"""Write direction: encrypt a plaintext tree into a fresh gocryptfs v2 directory.

The result is what real gocryptfs would have written through its mount: conf, one
gocryptfs.diriv per directory, long names with sidecars, encrypted symlink targets, and
holes kept as holes. gocryptfs.conf is written last, so a run that fails half way never
leaves a directory that looks mountable (and the partial output is removed anyway).
"""

from __future__ import annotations

import errno
import os
import stat

from . import names as nm
from .config import ConfFile, FsParams
from .content import PLAIN_BS, new_header
from .core.files import TreeStats, is_inside, prepare_empty_dir, remove_created, set_times_and_mode
from .core.progress import bar, warn
from .core.text import display
from .errors import CipherDirError, CryptfsError, UsageError
from .tree import CipherTree

CHUNK_BLOCKS = 256  # 1 MiB of plaintext per read


def data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    """Data extents of a file (SEEK_DATA/SEEK_HOLE); the whole file where unsupported."""
    ranges, pos = [], 0
    try:
        while pos < size:
            start = os.lseek(fd, pos, os.SEEK_DATA)
            end = os.lseek(fd, start, os.SEEK_HOLE)
            ranges.append((start, min(end, size)))
            pos = end
    except OSError as e:
        if e.errno == errno.ENXIO:  # no data after pos
            return ranges
        return [(0, size)]
    return ranges


def hole_blocks(ranges: list[tuple[int, int]], size: int) -> set[int]:
    """Full plaintext blocks that lie entirely in a hole (the partial last block never does)."""
    full = size // PLAIN_BS
    data = set()
    for start, end in ranges:
        data.update(range(start // PLAIN_BS, min(full, -(-end // PLAIN_BS))))
    return set(range(full)) - data


class TreeWriter:
    def __init__(self, plaindir: str, cipherdir: str, params: FsParams, master_key: bytes,
                 dereference: bool = False, progress: bool | None = None, keep_external_links: bool = False):
        self.plaindir = os.path.abspath(plaindir)
        self.tree = CipherTree(cipherdir, params, master_key)
        self.codec = self.tree.content
        self.params = params
        self.dereference = dereference
        self.keep_external_links = keep_external_links or dereference  # -L: only broken links remain
        self.progress = progress
        self.stats = TreeStats()
        self._bar = None

    def run(self) -> TreeStats:
        total = _tree_bytes(self.plaindir, self.dereference)
        with bar(total, "encrypt", self.progress) as self._bar:
            root_st = os.stat(self.plaindir)
            self._new_diriv(self.tree.root)
            self._walk(self.plaindir, self.tree.root, {(root_st.st_dev, root_st.st_ino)})
        return self.stats

    # entries ----------------------------------------------------------------
    def _new_diriv(self, cdir: bytes) -> bytes:
        if not self.params.diriv or self.params.plaintext_names:
            return self.tree.dir_iv(cdir)
        iv = nm.new_diriv()
        path = os.path.join(cdir, nm.DIRIV_NAME)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        with os.fdopen(fd, "wb") as f:
            f.write(iv)
        self.tree._diriv[cdir] = iv
        return iv

    def _disk_path(self, cdir: bytes, name: bytes) -> bytes:
        if self.params.plaintext_names and cdir == self.tree.root and name == nm.CONF_NAME:
            raise CipherDirError("a file named gocryptfs.conf in the root cannot be stored with "
                                 "plaintext names (it is reserved); rename it first")
        disk, sidecar = self.tree.names.disk_name(name, self.tree.dir_iv(cdir))
        if sidecar is not None:
            path = os.path.join(cdir, disk + nm.LONGNAME_SUFFIX)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            with os.fdopen(fd, "wb") as f:
                f.write(sidecar)
        return os.path.join(cdir, disk)

    def _walk(self, src_dir: str, cdir: bytes, ancestors: set) -> None:
        with os.scandir(src_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            name = os.fsencode(entry.name)
            src = entry.path
            st = os.lstat(src)
            if stat.S_ISLNK(st.st_mode):
                if not self.dereference:
                    self._symlink(src, cdir, name, st)
                    continue
                try:
                    st = os.stat(src)
                except OSError:
                    warn(f"{src}: broken symlink kept as a symlink")
                    self._symlink(src, cdir, name, os.lstat(src))
                    continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    raise UsageError(f"{src}: symlink loop (a directory contains itself); "
                                     "encrypt without -L or remove the loop")
                sub = self._disk_path(cdir, name)
                os.mkdir(sub, 0o700)
                self._new_diriv(sub)
                self._walk(src, sub, ancestors | {key})
                set_times_and_mode(sub, st)
                self.stats.dirs += 1
            elif stat.S_ISREG(st.st_mode):
                self._file(src, cdir, name, st)
            elif stat.S_ISFIFO(st.st_mode):
                path = self._disk_path(cdir, name)
                os.mkfifo(path, stat.S_IMODE(st.st_mode))
                set_times_and_mode(path, st)
            else:
                warn(f"{src}: skipped (device or socket files are not encrypted)")
                self.stats.skipped += 1

    def _symlink(self, src: str, cdir: bytes, name: bytes, st: os.stat_result) -> None:
        target = os.readlink(os.fsencode(src))
        resolved = os.path.join(os.path.dirname(src), os.fsdecode(target))
        if os.path.isabs(target) or not is_inside(resolved, self.plaindir):
            where = f"{display(src)} -> {display(target)} points outside {display(self.plaindir)}"
            if not self.keep_external_links:
                raise UsageError(f"{where}: the encrypted tree would hold a link the mount refuses to serve "
                                 "(a Hugging Face snapshot links into ../../blobs). Give -L (--dereference) "
                                 "to encrypt what it points to, or --keep-external-links to store the link "
                                 "as it is")
            warn(f"{where}; stored as a symlink (--keep-external-links): the mount and decrypt will "
                 "refuse it")
        path = self._disk_path(cdir, name)
        os.symlink(self.encrypt_symlink(target), path)
        set_times_and_mode(path, st, is_link=True)
        self.stats.symlinks += 1

    def encrypt_symlink(self, target: bytes) -> bytes:
        if self.params.plaintext_names or not target:
            return target
        sealed = self.codec.aead.seal(os.urandom(self.codec.aead.nonce_len), target, bytes(8))
        return nm.b64encode(sealed, self.params.raw64)

    def _file(self, src: str, cdir: bytes, name: bytes, st: os.stat_result) -> None:
        path = self._disk_path(cdir, name)
        src_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        try:
            dst_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                self.encrypt_fd(src_fd, dst_fd, os.fstat(src_fd).st_size)
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)
        set_times_and_mode(path, st)
        self.stats.files += 1
        self.stats.plain_bytes += st.st_size

    def encrypt_fd(self, src_fd: int, dst_fd: int, plain_size: int) -> None:
        """Encrypt one file; full blocks that are holes in the source stay holes."""
        if plain_size == 0:
            return
        header, file_id = new_header()
        os.pwrite(dst_fd, header, 0)
        holes = hole_blocks(data_ranges(src_fd, plain_size), plain_size)
        nblocks = -(-plain_size // PLAIN_BS)
        for first in range(0, nblocks, CHUNK_BLOCKS):
            count = min(CHUNK_BLOCKS, nblocks - first)
            plain = os.pread(src_fd, count * PLAIN_BS, first * PLAIN_BS)
            self._write_chunk(dst_fd, memoryview(plain), first, file_id, holes)
            self._bar.update(len(plain))
        os.ftruncate(dst_fd, self.codec.cipher_size(plain_size))

    def _write_chunk(self, dst_fd: int, plain: memoryview, first: int, file_id: bytes,
                     holes: set[int]) -> None:
        run: list[bytes] = []
        run_start = first
        for i in range(0, len(plain), PLAIN_BS):
            block_no = first + i // PLAIN_BS
            if block_no in holes:
                self._flush(dst_fd, run, run_start)
                run, run_start = [], block_no + 1
                continue
            run.append(self.codec.encrypt_block(plain[i : i + PLAIN_BS], block_no, file_id))
        self._flush(dst_fd, run, run_start)

    def _flush(self, dst_fd: int, run: list[bytes], block_no: int) -> None:
        if run:
            os.pwrite(dst_fd, b"".join(run), self.codec.cipher_off(block_no))


def _tree_bytes(top: str, follow: bool) -> int:
    total = 0
    for root, _, files in os.walk(top, followlinks=follow):
        for f in files:
            try:
                st = os.stat(os.path.join(root, f)) if follow else os.lstat(os.path.join(root, f))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def encrypt_tree(plaindir: str, cipherdir: str, password: bytes, params: FsParams, logn: int,
                 dereference: bool = False, progress: bool | None = None,
                 config: str | None = None, keep_external_links: bool = False) -> TreeStats:
    if not os.path.isdir(plaindir):
        raise CipherDirError(f"{plaindir}: no such directory (PLAINDIR must be a directory)")
    if is_inside(cipherdir, plaindir):
        raise UsageError(f"CIPHERDIR {cipherdir} is inside PLAINDIR {plaindir}: choose another place")
    created = prepare_empty_dir(cipherdir, CipherDirError, "CIPHERDIR")
    conf_path = config or os.path.join(cipherdir, "gocryptfs.conf")
    try:
        master_key = os.urandom(32)
        conf = ConfFile.create(password, master_key, params, logn)
        stats = TreeWriter(plaindir, cipherdir, params, master_key, dereference, progress,
                           keep_external_links).run()
        _write_conf(conf_path, conf.dumps())
    except BaseException as e:
        remove_created(cipherdir, created)
        if isinstance(e, OSError) and not isinstance(e, CryptfsError):
            raise CipherDirError(f"encrypt failed, nothing was kept: {e}") from e
        raise
    return stats


def _write_conf(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)

