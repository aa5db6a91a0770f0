"""``sam pack``: seal a model directory into ./KEY_ID/ (readable paths, sealed content, manifest).

Symlinks are followed (a Hugging Face snapshot links into its blob store). Work is split into
spans of whole chunks sealed in parallel (the C path releases the GIL). The package is built
in a hidden sibling directory and renamed into place only once its manifest is written, so a
crash or Ctrl-C never leaves a half-written package that looks complete.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import shutil
import stat
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass

from cryptfs.core.files import is_inside
from cryptfs.core.progress import bar

from . import __version__
from . import keys as keymod
from .content import PackageCodec, header
from .errors import ManifestError, OutputError, PackageError
from .manifest import (
    CHUNK_SIZE,
    FILES_MAX,
    ID_LEN,
    MANIFEST_MAX,
    META_DIR,
    PATH_MAX_DEPTH,
    FileEntry,
    Manifest,
    build_tree,
    digest,
    meta_paths,
    path_limit_problem,
)

SPAN_CHUNKS = 64  # chunks per job: 4 MiB with 64 KiB chunks
DROP_BEHIND = 4  # spans: written output older than this is handed to writeback and dropped
SYNC_FILE_RANGE_WRITE = 2

try:
    _sync_file_range = ctypes.CDLL(None, use_errno=True).sync_file_range
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
except (OSError, AttributeError):  # not Linux
    _sync_file_range = None


def _write_behind(fd: int, off: int, n: int) -> None:
    """Start writeback of what was just written, and drop output pages that are older.

    Without this, 1 GiB of output sits dirty until the final fsync (0.3 s on this VM's disk),
    and every page is a fresh page-cache page (first touch of memory the host may have
    reclaimed: up to 3-4 s of sys time per GiB here). Recycled pages keep the page cache of
    the output at a few spans. Both calls are advisory; the final fsync still decides.
    """
    if _sync_file_range is not None:
        _sync_file_range(fd, off, n, SYNC_FILE_RANGE_WRITE)
    if off > DROP_BEHIND * n:
        os.posix_fadvise(fd, 0, off - DROP_BEHIND * n, os.POSIX_FADV_DONTNEED)


@dataclass(frozen=True)
class Source:
    rel: str
    path: str  # in MODEL_DIR (symlinks resolved by open())
    size: int
    mode: int
    mtime_ns: int


@dataclass
class PackResult:
    out_dir: str
    digest: str
    files: int
    plain_bytes: int
    seconds: float


def collect(model_dir: str, follow_symlinks: bool = True) -> list[Source]:
    """Every regular file under ``model_dir``, symlinks followed (or refused), in a stable order."""
    if not os.path.isdir(model_dir):
        what = "does not exist" if not os.path.exists(model_dir) else "is not a directory"
        raise PackageError(f"model directory {model_dir} {what}")
    out: list[Source] = []
    _walk(model_dir, "", out, {_dev_ino(os.stat(model_dir))}, follow_symlinks)
    if not out:
        raise PackageError(f"model directory {model_dir} holds no files: nothing to pack")
    try:
        build_tree(out, lambda s: s.rel)  # the reader's own tree rules: the directory limit
    except ManifestError as e:
        raise PackageError(f"model directory {model_dir}: {str(e).removeprefix('manifest: ')}; readers "
                           "refuse such a package: pack the model in parts") from None
    return out


def _dev_ino(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _walk(path: str, rel: str, out: list[Source], ancestors: set, follow: bool) -> None:
    try:
        names = sorted(os.listdir(path))
    except OSError as e:
        raise PackageError(f"cannot list {path}: {e.strerror}") from None
    if names and rel.count("/") >= PATH_MAX_DEPTH:  # what it holds would be deeper still
        raise PackageError(f"{path}: nested {rel.count('/')} directories deep, and a path in a package has "
                           f"at most {PATH_MAX_DEPTH} components (readers refuse deeper ones): "
                           "flatten the model directory")
    for name in names:
        full = os.path.join(path, name)
        if not rel and name == META_DIR:
            raise PackageError(f"{full}: {META_DIR}/ is reserved for the package metadata; rename it")
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise PackageError(f"{os.fsencode(full)!r}: the name is not UTF-8; rename it") from None
        if not follow and os.path.islink(full):
            raise PackageError(f"{full}: a symlink (--no-follow-symlinks: the model must not point outside "
                               "itself; drop the option to pack what it points to)")
        try:
            st = os.stat(full)
        except FileNotFoundError:
            raise PackageError(f"{full}: a broken symlink (its target does not exist)") from None
        except OSError as e:
            raise PackageError(f"{full}: {e.strerror}") from None
        child = f"{rel}{name}"
        if stat.S_ISDIR(st.st_mode):
            if _dev_ino(st) in ancestors:
                raise PackageError(f"{full}: a symlink loop (it leads back to a parent directory)")
            _walk(full, child + "/", out, ancestors | {_dev_ino(st)}, follow)
        elif stat.S_ISREG(st.st_mode):
            _check_limits(full, child, len(out))
            out.append(Source(child, full, st.st_size, stat.S_IMODE(st.st_mode) & 0o1777, st.st_mtime_ns))
        else:
            raise PackageError(f"{full}: not a regular file or directory (a device, FIFO or socket)")


def _check_limits(full: str, rel: str, count: int) -> None:
    """Refuse what a reader would refuse (docs/sam-format.md §5.4), before anything is written."""
    problem = path_limit_problem(rel)
    if problem is not None:
        raise PackageError(f"{full}: its path in the package {problem}; readers refuse such a package: "
                           "shorten or flatten the model directory")
    if count >= FILES_MAX:
        raise PackageError(f"the model directory holds more than {FILES_MAX} files, the limit of a package "
                           "(readers refuse more): pack the model in parts")


def output_dir(key_id: str, parent: str | None) -> str:
    return os.path.join(parent if parent is not None else os.getcwd(), key_id)


def check_output(out_dir: str, model_dir: str) -> None:
    if os.path.lexists(out_dir):
        if not os.path.isdir(out_dir) or os.path.islink(out_dir):
            raise OutputError(f"{out_dir} exists and is not a directory")
        if os.listdir(out_dir):
            raise OutputError(f"{out_dir} exists and is not empty: refusing to overwrite a package "
                              "(remove it, or pack under another key ID or --out)")
    parent = os.path.dirname(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        what = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise OutputError(f"output parent directory {parent} {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output parent directory {parent} is not writable")
    if is_inside(out_dir, model_dir):
        raise OutputError(f"the package {out_dir} would be inside MODEL_DIR: choose another --out")


def pack(model_dir: str, key: bytes, key_id: str, parent: str | None = None,
         scrypt_logn: int = keymod.SCRYPT_LOGN_DEFAULT, threads: int | None = None,
         progress: bool | None = None, block_path: str = "auto",
         follow_symlinks: bool = True) -> PackResult:
    keymod.check_key(key)
    keymod.check_key_id(key_id)
    out_dir = output_dir(key_id, parent)
    check_output(out_dir, model_dir)
    sources = collect(model_dir, follow_symlinks)
    started = time.monotonic()
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    kdf = keymod.KdfParams.new(scrypt_logn)
    package_id = _nonzero_id()
    master = keymod.new_master_key()
    keys = keymod.package_keys(master, key_id)
    kek = _Background(keymod.derive_kek, key, key_id, kdf)  # scrypt runs while we seal
    codec = PackageCodec(keys.content, package_id, CHUNK_SIZE, block_path)
    work = os.path.join(os.path.dirname(os.path.abspath(out_dir)),
                        f".{key_id}.partial-{os.urandom(4).hex()}")
    os.mkdir(work, 0o755)
    try:
        entries = _create_files(work, sources, codec)
        _seal_all(sources, entries, work, codec, threads, progress)
        _check_unchanged(sources)
        kek_keys = kek.result()
        manifest = Manifest(key_id=key_id, package_id=package_id, kdf=kdf, key_check=kek_keys.check,
                            wrapped_key=keymod.wrap(kek_keys, master, package_id, key_id),
                            created=created,
                            packer=f"sam {__version__}", chunk_size=CHUNK_SIZE)
        raw = manifest_bytes(manifest, entries)
        if len(raw) > MANIFEST_MAX:
            raise PackageError(f"the manifest of {len(entries)} files would be {len(raw) >> 20} MiB, over "
                               f"the readers' {MANIFEST_MAX >> 20} MiB limit: pack the model in parts")
        _write_meta(work, raw, keymod.mac(keys, raw))
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)  # checked empty above
        os.rename(work, out_dir)
        _fsync_dir(os.path.dirname(os.path.abspath(out_dir)))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    total = sum(s.size for s in sources)
    return PackResult(out_dir, digest(raw), len(sources), total, time.monotonic() - started)


class _Background:
    """One call on its own thread (hashlib.scrypt releases the GIL); result() re-raises."""

    def __init__(self, func, *args):
        self._value = self._error = None
        self._thread = threading.Thread(target=self._run, args=(func, *args), name="sam-kdf", daemon=True)
        self._thread.start()

    def _run(self, func, *args) -> None:
        try:
            self._value = func(*args)
        except BaseException as e:  # handed to the caller of result()
            self._error = e

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def manifest_bytes(manifest: Manifest, entries: list[FileEntry]) -> bytes:
    manifest.files = entries
    return manifest.to_bytes()


def _nonzero_id() -> bytes:
    while True:
        value = os.urandom(ID_LEN)
        if any(value):
            return value


def _create_files(work: str, sources: list[Source], codec: PackageCodec) -> list[FileEntry]:
    """Make every directory and file with its header; the chunks are written by _seal_all."""
    entries = []
    for src in sources:
        dst = os.path.join(work, *src.rel.split("/"))
        os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
        file_id = _nonzero_id()
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, header(file_id))
            os.ftruncate(fd, codec.cipher_size(src.size))
        finally:
            os.close(fd)
        entries.append(FileEntry(src.rel, src.size, src.mode, file_id))
    return entries


class _Buffers(threading.local):
    plain: bytearray | None = None
    sealed: bytearray | None = None


def _seal_all(sources, entries, work, codec: PackageCodec, threads, progress) -> None:
    span = SPAN_CHUNKS * codec.chunk_size
    bufs = _Buffers()
    # one writer per file at a time: concurrent pwrite()s to one ext4 file serialise on the
    # inode lock anyway, and the waiter spins in the kernel (rwsem_spin_on_owner) instead of
    # sealing its next span
    write_locks = {e.path: threading.Lock() for e in entries}

    def job(src: Source, entry: FileEntry, first_chunk: int) -> int:
        if bufs.plain is None:
            bufs.plain = bytearray(span)
            bufs.sealed = bytearray(span + SPAN_CHUNKS * (codec.cipher_cs - codec.chunk_size))
        plain_off = first_chunk * codec.chunk_size
        want = min(span, src.size - plain_off)
        view = memoryview(bufs.plain)[:want]
        with open(src.path, "rb", buffering=0) as f:
            f.seek(plain_off)
            got = 0
            while got < want:
                n = f.readinto(view[got:])
                if not n:
                    raise PackageError(f"{src.path} shrank while it was being packed: pack again")
                got += n
        n = codec.seal_into(view, first_chunk, src.size, entry.file_id, bufs.sealed)
        fd = os.open(os.path.join(work, *src.rel.split("/")), os.O_WRONLY)
        off = codec.cipher_off(first_chunk)
        try:
            with write_locks[entry.path]:
                _pwrite_all(fd, memoryview(bufs.sealed)[:n], off)
            _write_behind(fd, off, n)
        finally:
            os.close(fd)
        return want

    jobs = [(s, e, c) for s, e in zip(sources, entries, strict=True)
            for c in range(0, codec.chunks(s.size), SPAN_CHUNKS)]
    workers = threads or min(8, max(2, os.cpu_count() or 2))
    with bar(sum(s.size for s in sources), "packing", progress) as pbar, \
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sam-pack") as pool:
        futures = [pool.submit(job, *j) for j in jobs]
        try:
            for fut in futures:
                pbar.update(fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            wait(futures, return_when=FIRST_EXCEPTION)
            raise
    _fsync_tree(work, sources, workers)


def _pwrite_all(fd: int, data: memoryview, off: int) -> None:
    while len(data):
        n = os.pwrite(fd, data, off)
        data, off = data[n:], off + n


def _fsync_tree(work: str, sources: list[Source], workers: int) -> None:
    """Data on disk before the rename makes the package visible."""
    def sync(rel: str) -> None:
        fd = os.open(os.path.join(work, *rel.split("/")), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(sync, [s.rel for s in sources]))


def _check_unchanged(sources: list[Source]) -> None:
    for src in sources:
        st = os.stat(src.path)
        if st.st_size != src.size or st.st_mtime_ns != src.mtime_ns:
            raise PackageError(f"{src.path} changed while it was being packed: pack again")


def _write_meta(work: str, raw: bytes, mac_value: bytes) -> None:
    os.mkdir(os.path.join(work, META_DIR), 0o755)
    manifest_path, mac_path = meta_paths(work)
    for path, data in ((manifest_path, raw), (mac_path, mac_value.hex().encode() + b"\n")):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _pwrite_all(fd, memoryview(data), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
    _fsync_dir(os.path.join(work, META_DIR))


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
