"""The one read-only FUSE adapter over a :class:`~cryptfs.core.source.MountSource`.

All errno mapping lives here: missing -> ENOENT, authentication failure -> EIO (logged with
file and block), every write-like call -> EROFS. Only regular files, directories and symlinks
are served (a FIFO or device in the storage is invisible), and a symlink whose target is
absolute or climbs out of the tree answers EIO: the model server sees the owner's tree or an
error, never a file of the machine. The adapter is a plain object whose methods
mfusepy hooks up by name, so its callbacks run (and are tested) without a kernel mount;
only :func:`fuse_class` touches mfusepy, to read straight into libfuse's buffer.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import stat
import threading

from .errors import ChunkError, Failure, IntegrityError
from .files import link_stays_inside
from .options import MountOptions
from .source import MountSource, OpenFile

log = logging.getLogger("cryptfs.mount")

PREFETCH_BYTES = 8 << 20  # ciphertext hinted ahead of a sequential reader (cold data)
SERVED_TYPES = (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK)
STATFS_FIELDS = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
                 "f_favail", "f_namemax")


def _rel(path: str | None) -> bytes:
    return os.fsencode(path or "/").lstrip(b"/")


def errno_of(exc: BaseException, path: str | None) -> int:
    """The errno a failure becomes; authentication failures are logged, never served."""
    if isinstance(exc, ChunkError):
        log.error("read failed: %s", exc)
        return errno.EIO
    if isinstance(exc, IntegrityError):
        log.error("%s: %s", path, exc)
        return errno.EIO
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    log.exception("unexpected error on %s", path)
    return errno.EIO


def _fail(exc: BaseException, path: str | None) -> OSError:
    code = errno_of(exc, path)
    return OSError(code, os.strerror(code))


class _Handle:
    __slots__ = ("file", "next_off", "prefetched_to", "lock")

    def __init__(self, file: OpenFile):
        self.file = file
        self.next_off = 0
        self.prefetched_to = 0
        self.lock = threading.Lock()


class ReadOnlyOps:
    """The FUSE callbacks (mfusepy calls them by name; OSError(errno) becomes -errno)."""

    use_ns = True
    gate = None  # a warmup.ForegroundGate while a warm-up may run: told who sends each read

    def __init__(self, source: MountSource, options: MountOptions, on_ready=None):
        self.source = source
        self.opts = options
        self.on_ready = on_ready
        self._handles: dict[int, _Handle] = {}
        self._next_fh = 1
        self._lock = threading.Lock()
        self.ready_seen = False  # init ran: the kernel accepted the mount

    # life cycle -------------------------------------------------------------
    def init_with_config(self, conn_info, config) -> None:
        if config is not None:
            config.use_ino = 1
            config.kernel_cache = 0 if self.opts.direct_io else 1
            config.direct_io = 1 if self.opts.direct_io else 0
            config.attr_timeout = config.entry_timeout = self.opts.cache_timeout
            config.negative_timeout = self.opts.cache_timeout
        self.ready_seen = True
        if self.on_ready is not None:
            threading.Thread(target=self.on_ready, name="cryptfs-ready", daemon=True).start()

    def destroy(self, path) -> None:
        with self._lock:
            handles, self._handles = list(self._handles.values()), {}
        for h in handles:
            h.file.close()

    # metadata ---------------------------------------------------------------
    def getattr(self, path, fh=None) -> dict:
        try:
            st = self.source.lstat(_rel(path))
        except (Failure, OSError) as e:
            raise _fail(e, path) from None
        if stat.S_IFMT(st.st_mode) not in SERVED_TYPES:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))  # FIFOs, devices, sockets: never served
        return {
            "st_mode": st.st_mode, "st_ino": st.st_ino, "st_nlink": st.st_nlink,
            "st_uid": st.st_uid, "st_gid": st.st_gid, "st_size": st.st_size,
            "st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns, "st_ctime": st.st_ctime_ns,
            "st_blocks": st.st_blocks, "st_blksize": st.st_blksize, "st_rdev": st.st_rdev,
        }

    def readdir(self, path, fh) -> list:
        """Names with type and inode: with use_ino, an entry without an inode is invisible."""
        rel = _rel(path)
        try:
            entries = self.source.readdir(rel)
            here = self.source.lstat(rel)
            parent = self.source.lstat(os.path.dirname(rel)) if rel else here
        except (Failure, OSError) as e:
            raise _fail(e, path) from None
        out = [(".", _dirent(here.st_mode, here.st_ino), 0),
               ("..", _dirent(parent.st_mode, parent.st_ino), 0)]
        out.extend((os.fsdecode(e.name), _dirent(e.mode, e.ino), 0) for e in entries
                   if stat.S_IFMT(e.mode) in SERVED_TYPES)
        return out

    def readlink(self, path) -> str:
        rel = _rel(path)
        try:
            target = self.source.readlink(rel)
        except (Failure, OSError) as e:
            raise _fail(e, path) from None
        if not link_stays_inside(rel, target):
            log.error("%s: symlink target %r leaves the tree: refused (EIO)", path, os.fsdecode(target))
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return os.fsdecode(target)

    def statfs(self, path) -> dict:
        sv = os.statvfs(self.source.root)
        return {k: getattr(sv, k) for k in STATFS_FIELDS}

    def listxattr(self, path) -> list:
        return []

    def getxattr(self, path, name, position=0):
        raise OSError(errno.ENODATA, os.strerror(errno.ENODATA))

    # files --------------------------------------------------------------------
    def open(self, path, fi) -> int:
        if fi.flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        try:
            file = self.source.open(_rel(path))
        except (Failure, OSError) as e:
            raise _fail(e, path) from None
        with self._lock:
            fh, self._next_fh = self._next_fh, self._next_fh + 1
            self._handles[fh] = _Handle(file)
        fi.fh = fh
        fi.keep_cache = 0 if self.opts.direct_io else 1
        fi.direct_io = 1 if self.opts.direct_io else 0
        return 0

    def read(self, path, size, offset, fh) -> bytes:
        """bytes-returning read, used only by a plain mfusepy.FUSE (not by the read-into class)."""
        buf = bytearray(size)
        n = self.read_into(path, fh.fh if hasattr(fh, "fh") else fh, memoryview(buf), offset)
        return bytes(buf[:n])

    def read_into(self, path, fh: int, out: memoryview, offset: int) -> int:
        h = self._handles.get(fh)
        if h is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        self._prefetch(h, offset, len(out))
        try:
            return h.file.read_into(offset, out)
        except (Failure, OSError) as e:
            raise _fail(e, path) from None

    def _prefetch(self, h: _Handle, offset: int, size: int) -> None:
        """Hint the kernel to read ciphertext ahead of a sequential reader (cold data)."""
        with h.lock:
            sequential = offset == h.next_off
            h.next_off = offset + size
            if not sequential or h.prefetched_to > offset + PREFETCH_BYTES // 2:
                return
            start = max(h.prefetched_to, offset + size)
            h.prefetched_to = start + PREFETCH_BYTES
        try:
            os.posix_fadvise(h.file.fd, start, PREFETCH_BYTES, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass

    def release(self, path, fi) -> int:
        with self._lock:
            h = self._handles.pop(getattr(fi, "fh", fi), None)
        if h is not None:
            h.file.close()
        return 0

    # everything that would write ---------------------------------------------
    def _erofs(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    chmod = chown = create = link = mkdir = mknod = rename = rmdir = _erofs
    setxattr = removexattr = symlink = truncate = unlink = utimens = write = _erofs


def _dirent(mode: int, ino: int) -> dict:
    return {"st_mode": stat.S_IFMT(mode), "st_ino": ino}


PIN_THREAD_STATE = os.environ.get("CRYPTFS_PIN_TSTATE", "1") != "0"
_pinned = threading.local()


def _pin_thread_state() -> None:
    """Keep a libfuse worker thread's Python thread state alive across callbacks.

    A ctypes callback on a thread Python did not create gets a fresh thread state and
    deletes it on return: per FUSE request a gettid, an mmap and an munmap (with TLB
    shootdowns). One unmatched PyGILState_Ensure per thread makes the state persist
    (measured +13-28 % with 128 KiB requests, bench/README.md). CRYPTFS_PIN_TSTATE=0 disables it.
    """
    if not getattr(_pinned, "done", False):
        ctypes.pythonapi.PyGILState_Ensure()
        _pinned.done = True


def fuse_class(mfusepy):
    """mfusepy.FUSE that decrypts straight into libfuse's buffer instead of returning bytes."""

    class ReadIntoFUSE(mfusepy.FUSE):
        def _wrapper(self, func, *args, **kwargs):
            if PIN_THREAD_STATE:
                _pin_thread_state()
            return super()._wrapper(func, *args, **kwargs)

        def read(self, path, buf, size, offset, fip):
            fh = fip.contents.fh
            if self.operations.gate is not None:  # the requesting thread: warm-up or foreground
                self.operations.gate.note(mfusepy.fuse_get_context()[2], size)
            out = (ctypes.c_char * size).from_address(ctypes.cast(buf, ctypes.c_void_p).value)
            return self.operations.read_into(None if path is None else os.fsdecode(path), fh,
                                             memoryview(out).cast("B"), offset)

    return ReadIntoFUSE
