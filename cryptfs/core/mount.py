"""The mount life cycle: serve a MountSource read-only through FUSE (libfuse3, mfusepy).

``cryptfs mount`` and ``sam mount`` both end here. Daemonizes like gocryptfs: the command
returns once the mount is ready (exit 0) or with a clear error and a non-zero code. The
daemon logs to syslog or ``--log FILE``; ``-fg`` stays in the foreground and logs to stderr.
SIGINT/SIGTERM unmount cleanly; so does ``fusermount3 -u`` or ``python -m cryptfs unmount``.
With ``--warmup`` a background pass (:mod:`cryptfs.core.warmup`) starts after readiness is
signalled, so it never delays whoever waits for the mount, and ends with the mount.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import shutil
import subprocess
import sys
import time

from . import chunks, warmup
from .errors import MountPointError, UsageError
from .fuse import ReadOnlyOps, fuse_class
from .hardening import lock_memory
from .options import MountOptions
from .source import MountSource

log = logging.getLogger("cryptfs.mount")


def load_mfusepy():
    """mfusepy on libfuse3 (libfuse2 caps requests at 128 KiB); a clear error otherwise."""
    if not os.environ.get("FUSE_LIBRARY_PATH"):
        os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    try:
        import mfusepy
    except (ImportError, OSError) as e:
        raise MountPointError(f"libfuse3 is not available ({e}): apt-get install fuse3") from None
    if mfusepy.fuse_version_major != 3:
        raise MountPointError("mfusepy loaded libfuse2; cryptfs needs libfuse3 (apt-get install fuse3)")
    return mfusepy


def mounted_paths() -> dict[str, str]:
    """Mount points of this mount namespace -> "major:minor" (from /proc/self/mountinfo)."""
    out = {}
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            parts = line.split()
            point = parts[4].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            out[point.replace("\\134", "\\")] = parts[2]
    return out


def check_mountpoint(cfg: MountOptions) -> str:
    mp = os.path.realpath(cfg.mountpoint)
    if not os.path.exists(mp):
        raise MountPointError(f"mount point {cfg.mountpoint} does not exist: create it first")
    if not os.path.isdir(mp):
        raise MountPointError(f"mount point {cfg.mountpoint} is not a directory")
    if mp in mounted_paths():
        raise MountPointError(f"{cfg.mountpoint} is already a mount point: unmount it first "
                              f"(python -m cryptfs unmount {cfg.mountpoint})")
    if not cfg.nonempty and os.listdir(mp):
        raise MountPointError(f"mount point {cfg.mountpoint} is not empty (use --nonempty to mount "
                              "over it anyway)")
    if os.path.realpath(cfg.source_dir) == mp:
        raise MountPointError("the encrypted directory and MOUNTPOINT must differ")
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as e:
        raise MountPointError(f"/dev/fuse cannot be opened ({e.strerror}): FUSE is not available "
                              "here (in a container, pass --device /dev/fuse and CAP_SYS_ADMIN)") from None
    return mp


def fuse_options(cfg: MountOptions) -> dict:
    opts: dict = {"ro": True, "default_permissions": True, "subtype": cfg.subtype,
                  "fsname": os.path.realpath(cfg.source_dir).replace(",", "_")}
    if cfg.allow_other:
        opts["allow_other"] = True
    for item in cfg.extra_options:
        for opt in filter(None, item.split(",")):
            key, eq, value = opt.partition("=")
            if key in ("rw",):
                raise UsageError("-o rw: the mount is read-only")
            opts[key] = value if eq else True
    return opts


def set_readahead(mountpoint: str, kb: int) -> None:
    """Raise the mount's bdi read_ahead_kb so reads and mmap faults arrive as large requests."""
    dev = mounted_paths().get(mountpoint)
    if dev is None:
        log.warning("readahead: %s not found in mountinfo; left at the kernel default", mountpoint)
        return
    path = f"/sys/class/bdi/{dev}/read_ahead_kb"
    try:
        with open(path, "w") as f:
            f.write(str(kb))
        log.info("readahead: %s = %d KiB", path, kb)
    except OSError as e:
        log.warning("readahead: cannot write %s (%s); continuing with the kernel default "
                    "(reads will arrive in smaller requests)", path, e.strerror)


def setup_logging(cfg: MountOptions, daemon: bool) -> None:
    root = logging.getLogger("cryptfs")
    root.setLevel(logging.INFO)
    root.handlers.clear()
    fmt = f"%(asctime)s {cfg.subtype}[%(process)d] %(levelname)s %(message)s"
    if cfg.log_file:
        handler: logging.Handler = logging.FileHandler(cfg.log_file)
    elif not daemon:
        handler = logging.StreamHandler(sys.stderr)
    elif os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(address="/dev/log")
        fmt = f"{cfg.subtype}[%(process)d]: %(levelname)s %(message)s"
    else:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter(fmt))
    root.addHandler(handler)


class Readiness:
    """Runs once the kernel has the mount: readahead, detach stdio, tell whoever waits.

    ``then`` (the warm-up's start) runs last: whoever waits is told first.
    """

    def __init__(self, cfg: MountOptions, mountpoint: str, ready_pipe: int | None, then=None):
        self.cfg = cfg
        self.mountpoint = mountpoint
        self.ready_pipe = ready_pipe
        self.then = then

    def __call__(self) -> None:
        deadline = time.monotonic() + 10
        while self.mountpoint not in mounted_paths() and time.monotonic() < deadline:
            time.sleep(0.005)
        # A request to our own mount completes only after the kernel processed libfuse's INIT
        # reply, which clamps the bdi readahead to the negotiated max_readahead: set it after.
        try:
            os.stat(self.mountpoint)
        except OSError as e:
            log.warning("mount point not answering yet: %s", e.strerror)
        if self.cfg.readahead_kb > 0:
            set_readahead(self.mountpoint, self.cfg.readahead_kb)
        log.info("mounted %s on %s (read-only)", self.cfg.source_dir, self.mountpoint)
        if self.ready_pipe is not None:
            detach_stdio()
            _write_line(self.ready_pipe, "ok")
        if self.cfg.notify_fd is not None:
            _write_line(self.cfg.notify_fd, f"ready {self.mountpoint}")
        if self.then is not None:
            self.then()


def _write_line(fd: int, line: str) -> None:
    try:
        os.write(fd, (line + "\n").encode())
        os.close(fd)
    except OSError as e:
        log.warning("could not signal readiness on fd %d: %s", fd, e.strerror)


def detach_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def make_warmup(cfg: MountOptions, mountpoint: str) -> warmup.Warmup | None:
    """The daemon's warm-up pass over its own mount, or None without --warmup.

    CRYPTFS_WARMUP_PACE (seconds slept after each 1 MiB) is a test hook: it makes a pass long
    enough to be cancelled half-way.
    """
    if not cfg.warmup:
        return None
    return warmup.Warmup(mountpoint, cfg.warmup_budget, warmup.ForegroundGate(),
                         is_mounted=lambda: mountpoint in mounted_paths(),
                         readahead=(cfg.readahead_kb or 128) << 10,
                         pace=float(os.environ.get("CRYPTFS_WARMUP_PACE") or 0),
                         private_namespace=True)


def serve(source: MountSource, cfg: MountOptions, mountpoint: str, ready_pipe: int | None) -> int:
    """Run the FUSE loop until unmounted; returns an exit code."""
    lock_memory()  # here, in the serving process: memory locks do not survive fork()
    mfusepy = load_mfusepy()
    chunks.set_decrypt_threads(cfg.threads())
    warm = make_warmup(cfg, mountpoint)
    ops = ReadOnlyOps(source, cfg, on_ready=Readiness(cfg, mountpoint, ready_pipe,
                                                      then=warm.start if warm else None))
    ops.gate = warm.gate if warm else None
    log.info("block path: %s", source.block_path)
    if source.block_path != "c":
        log.warning("the C block path is not active: decryption runs in Python and is slower")
    try:
        fuse_class(mfusepy)(ops, mountpoint, raw_fi=True, foreground=True, **fuse_options(cfg))
    except RuntimeError as e:
        # libfuse 3 returns non-zero (8) when SIGINT/SIGTERM/SIGHUP ended the loop; if it
        # unmounted, that is the clean shutdown we asked for.
        if not ops.ready_seen or mountpoint in mounted_paths():
            log.error("mount failed: libfuse returned %s", e)
            return 1
        log.info("stopped by a signal")
    finally:
        if warm is not None:  # the connection is closed by now: a read in flight fails at once
            warm.stop("unmounted")
            if ops.ready_seen:
                log.info("%s", warm.gate.report())
    log.info("unmounted %s", mountpoint)
    return 0


def mount(source: MountSource, cfg: MountOptions) -> int:
    """Mount ``source`` (unlocked); daemonize unless cfg.foreground."""
    mountpoint = check_mountpoint(cfg)
    fuse_options(cfg)  # usage errors before forking
    load_mfusepy()
    if cfg.foreground:
        setup_logging(cfg, daemon=False)
        return serve(source, cfg, mountpoint, None)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(r)
        code = 1
        try:
            os.setsid()
            setup_logging(cfg, daemon=True)
            code = serve(source, cfg, mountpoint, w)
        except BaseException:  # never return into the caller's code path
            log.exception("mount daemon failed")
        finally:
            logging.shutdown()
            os._exit(code)
    os.close(w)
    return wait_ready(r, pid, cfg)


def wait_ready(r: int, pid: int, cfg: MountOptions) -> int:
    with os.fdopen(r, "rb") as f:
        line = f.readline().decode(errors="replace").strip()
    if line == "ok":
        return 0
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    raise MountPointError(f"mounting {cfg.source_dir} on {cfg.mountpoint} failed (daemon exit {code}); "
                          "run with -fg to see libfuse's message")


def unmount(mountpoint: str, timeout: float = 10.0) -> None:
    mp = os.path.realpath(mountpoint)
    if mp not in mounted_paths():
        raise MountPointError(f"{mountpoint} is not mounted")
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    cmd = [tool, "-u", mp] if tool else ["umount", mp]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise MountPointError(f"unmounting {mountpoint} failed: {proc.stderr.strip() or proc.returncode} "
                              "(is a process still using it? see 'fuser -m')")
    deadline = time.monotonic() + timeout
    while mp in mounted_paths() and time.monotonic() < deadline:
        time.sleep(0.02)

