"""Warm the page cache through the mount, in the order a model server reads, on spare cycles.

Why: the mount keeps the kernel page cache across opens (keep_cache), so a page read once
through the mount is served at page-cache speed ever after. A pass that reads every file right
after the mount is ready turns the server's first load (mmap faults, each a FUSE request and a
decryption) into page-cache copies wherever the pass is ahead of the loader.

How foreground reads go first (the choice, documented in docs/cryptfs.md "Warm-up"):

- The pass is one thread of the mount daemon, niced to 19 (Linux nice is per thread). It needs
  no key and no second process, and it shares the adapter's request clock.
- Priority alone cannot put the loader first: decryption runs in libfuse's serving threads,
  whoever asked. So the adapter tells the pass's read requests from all others by the
  requesting thread id (``fuse_get_context``) and stamps the time of every foreground one
  (:class:`ForegroundGate`); the pass issues its next read only once no foreground read arrived
  for ``QUIET_S``. When a loader starts, at most one chunk plus the kernel's readahead of
  warm-up work is still in flight. The summary line reports the time spent paused.
- Memory: a budget fixed when the pass starts (default 75 % of MemAvailable, i.e. keep 25 %
  free) that no read crosses: near it, the kernel's readahead is switched off for the file
  (``POSIX_FADV_RANDOM``) so nothing is cached past the budget. The pass also stops if
  MemAvailable falls under a quarter of its start value (others now need the memory: reading
  on would evict what was warmed).
- Unmounting: as root the pass reads in its own copy of the mount namespace, so its open
  files never make a plain ``fusermount3 -u`` fail with "busy"; it watches the daemon's mount
  table and stops when the mount is gone (its namespace, and with it the last reference to
  the file system, dies with the thread). A read on an aborted connection ends the pass too.

Python API: :func:`plan` (the order), :func:`parse_budget`, :class:`Warmup` (``run()`` works on
any directory, mounted or not), :class:`ForegroundGate`.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger("cryptfs.mount")

DEFAULT_BUDGET = "75%"  # of MemAvailable when the pass starts: keep at least 25 % free
RESERVE_FRACTION = 0.25  # stop when MemAvailable falls under this share of its start value
QUIET_S = 0.05  # the pass reads only after this long without a foreground read request
CHUNK = 1 << 20  # one read() = one FUSE request at most (libfuse3's 1 MiB max_pages)
PAGE = 4096
SMALL_BYTES = 1 << 20  # config, tokenizer, index files: read before any weight shard
SMALL_SUFFIXES = (".json", ".txt", ".model", ".tiktoken", ".py", ".jinja", ".yaml", ".yml")
PROGRESS_S = 5.0  # a progress line at most this often
MOUNT_CHECK_S = 0.1  # how often the pass checks that the mount is still there
MEMORY_CHECK_S = 0.5
GONE = (errno.ENOTCONN, errno.ECONNABORTED, errno.ENODEV)  # the FUSE connection is gone
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")


# the order ----------------------------------------------------------------------------------
def natural_key(name: str) -> tuple:
    """Digit runs compare as numbers: model-00002-of-00010 before model-00010-of-00010, x2 < x10.

    re.split with a capturing group alternates text and digits, so positions never mix types.
    """
    return tuple(int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name)))


def is_small(name: str, size: int) -> bool:
    """What a server reads before the weights: configs, tokenizers, the shard index."""
    return size <= SMALL_BYTES or name.lower().endswith(SMALL_SUFFIXES)


def order(listing: Iterable[tuple[str, int]]) -> list[str]:
    """(relative path, size) pairs -> paths: small files first, then the rest, each in natural order."""
    items = sorted(listing, key=lambda e: (not is_small(e[0], e[1]), natural_key(e[0]), e[0]))
    return [name for name, _ in items]


def listing(root: str) -> list[tuple[str, int]]:
    """Every regular file under ``root`` once, as (relative path, size).

    Symlinks to files inside the tree count under the link's name (a Hugging Face cache's
    snapshot names, not its blob hashes, say where a shard falls in the order); directory links
    are not followed, and a link that does not resolve (the mount refuses some) is skipped.
    """
    seen: dict[tuple[int, int], tuple[str, int, bool]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            try:
                is_link = os.path.islink(full)
                st = os.stat(full)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            key = (st.st_dev, st.st_ino)
            if key not in seen or (is_link and not seen[key][2]):
                seen[key] = (os.path.relpath(full, root), st.st_size, is_link)
    return [(rel, size) for rel, size, _ in seen.values()]


def plan(root: str) -> list[str]:
    """The paths under ``root`` in the order the pass reads them (see :func:`order`)."""
    return [os.path.join(root, rel) for rel in order(listing(root))]


# the budget ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """At most ``size`` bytes, or ``percent`` of MemAvailable as read when the pass starts."""

    size: int | None = None
    percent: float | None = None

    def resolve(self, mem_available: int) -> int:
        if self.size is not None:
            return self.size
        return int(mem_available * (self.percent or 0) / 100)

    def __str__(self) -> str:
        return f"{self.percent:g}% of MemAvailable" if self.size is None else human(self.size)


def parse_budget(spec: str | int | Budget) -> Budget:
    """``8G``, ``512M``, ``1.5GiB``, ``1048576`` (bytes), ``75%``; ValueError otherwise.

    Units are binary (G = GiB). Zero is refused: a warm-up that may read nothing is a mistake.
    """
    if isinstance(spec, Budget):
        return spec
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec <= 0:
            raise ValueError("warm-up budget must be more than 0 bytes")
        return Budget(size=spec)
    text = str(spec).strip()
    m = _PERCENT.fullmatch(text)
    if m:
        pct = float(m.group(1))
        if not 0 < pct <= 100:
            raise ValueError(f"warm-up budget {text}: a percentage must be above 0 and at most 100")
        return Budget(percent=pct)
    m = _SIZE.fullmatch(text)
    if not m:
        raise ValueError(f"warm-up budget {text!r}: give a size (8G, 512M) or a percentage (75%)")
    size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if size <= 0:
        raise ValueError(f"warm-up budget {text}: must be more than 0 bytes")
    return Budget(size=size)


def mem_available() -> int:
    """MemAvailable in bytes (free memory where /proc/meminfo lacks it)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def human(n: float) -> str:
    """Sizes in log lines, binary units like the budget's."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


# foreground first -------------------------------------------------------------------------------
class ForegroundGate:
    """The adapter's record of who reads: the pass waits while foreground reads are recent.

    :meth:`note` runs in libfuse's threads for every read request (the adapter passes the
    requesting thread id); ``warm_ids`` holds the pass's thread id. Counters make the effect
    measurable: after a complete pass, a loader's reads should add no foreground requests.
    """

    def __init__(self, quiet: float = QUIET_S, clock: Callable[[], float] = time.monotonic):
        self.quiet = quiet
        self.clock = clock
        self.warm_ids: set[int] = set()
        self.last_foreground = float("-inf")
        self.requests = {"foreground": [0, 0], "warm-up": [0, 0]}  # [requests, bytes]
        self._lock = threading.Lock()

    def note(self, pid: int, size: int) -> None:
        """One read request from thread ``pid``: counted, and stamped unless it is the pass's."""
        warm = pid in self.warm_ids
        if not warm:
            self.last_foreground = self.clock()
        with self._lock:
            count = self.requests["warm-up" if warm else "foreground"]
            count[0] += 1
            count[1] += size

    def wait_quiet(self, stop: threading.Event, sleep: Callable[[float], object] | None = None) -> float:
        """Block until no foreground read came for ``quiet`` seconds (or ``stop``); seconds waited."""
        sleep = sleep or stop.wait
        waited = 0.0
        while not stop.is_set():
            left = self.quiet - (self.clock() - self.last_foreground)
            if left <= 0:
                break
            left = max(left, 0.005)  # a floor: float rounding must not spin on a tiny remainder
            sleep(left)
            waited += left
        return waited

    def report(self) -> str:
        """The daemon's closing line: how many read requests each side sent (the measurable part)."""
        (fg, fg_bytes), (warm, warm_bytes) = self.requests["foreground"], self.requests["warm-up"]
        return (f"read requests served: foreground {fg} ({fg_bytes} bytes), "
                f"warm-up {warm} ({warm_bytes} bytes)")


# the pass -------------------------------------------------------------------------------------
@dataclass
class Summary:
    bytes: int = 0
    files: int = 0  # read whole, and so warm
    planned: int = 0
    failed: int = 0  # a read failed (e.g. EIO): not warm
    seconds: float = 0.0
    paused: float = 0.0  # waiting for foreground reads to go quiet
    stopped: str = ""  # why it stopped early; "" = complete

    def line(self) -> str:
        """The pass's one summary line, in the log whatever the outcome (tests parse it)."""
        rate = self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0
        end = f"stopped early: {self.stopped}" if self.stopped else "complete"
        return (f"warm-up summary: warmed {self.bytes} bytes ({human(self.bytes)}) in "
                f"{self.seconds:.2f} s, {rate:.2f} GB/s, {self.files}/{self.planned} files warm, "
                f"{self.failed} failed, paused {self.paused:.2f} s for foreground reads; {end}")


class Warmup:
    """One warm-up pass over ``root``: :meth:`run` in the caller's thread, or :meth:`start`.

    ``is_mounted`` tells whether the mount still exists (the daemon checks its mount table);
    ``readahead`` is the mount's readahead in bytes (how far the kernel may read past the pass);
    ``pace`` sleeps after every chunk (a test hook: makes a pass long enough to cancel).
    """

    def __init__(self, root: str, budget: str | int | Budget = DEFAULT_BUDGET,
                 gate: ForegroundGate | None = None, is_mounted: Callable[[], bool] = lambda: True,
                 readahead: int = 128 << 10, pace: float = 0.0, private_namespace: bool = False):
        self.root = root
        self.budget = parse_budget(budget)
        self.gate = gate or ForegroundGate()
        self.is_mounted = is_mounted
        self.margin = 2 * max(readahead, CHUNK)
        self.pace = pace
        self.private_namespace = private_namespace
        self.stop_event = threading.Event()
        self._stop_reason = "stopped"
        self.summary: Summary | None = None
        self._thread: threading.Thread | None = None
        self._buf = memoryview(bytearray(CHUNK))

    # the thread
    def start(self) -> None:
        """Run the pass on a daemon thread: never delays the caller (readiness is already out)."""
        self._thread = threading.Thread(target=self._thread_main, name="cryptfs-warmup", daemon=True)
        self._thread.start()

    def stop(self, reason: str = "stopped", timeout: float = 5.0) -> None:
        """Ask the pass to end and wait for it (reads on an unmounted FUSE fs fail at once)."""
        self._stop_reason = reason
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("warm-up: still in a read %.0f s after the stop; leaving it", timeout)

    def _thread_main(self) -> None:
        """The pass as the mount daemon runs it: tagged for the gate, niced, own mount namespace."""
        tid = threading.get_native_id()
        self.gate.warm_ids.add(tid)
        try:
            lower_priority()
            if self.private_namespace:
                enter_private_mount_namespace()
            self.run()
        except Exception:
            log.exception("warm-up failed")
        finally:
            self.gate.warm_ids.discard(tid)  # the id may be reused by another process's thread

    # the pass
    def run(self) -> Summary:
        """One pass in the calling thread: list, order, read until done or a stop; the summary.

        The budget and the reserve come from MemAvailable now, before anything is read.
        """
        t0 = time.monotonic()
        avail = mem_available()
        self._limit, self._reserve = self.budget.resolve(avail), int(avail * RESERVE_FRACTION)
        files = listing(self.root)
        sizes = dict(files)
        names = order(files)
        s = self.summary = Summary(planned=len(names))
        self._t0 = self._next_progress = t0
        self._next_mount_check = self._next_memory_check = 0.0
        log.info("warm-up: %d files, %s; budget %s (%s; MemAvailable %s at start)", len(names),
                 human(sum(sizes.values())), human(self._limit), self.budget, human(avail))
        for rel in names:
            s.stopped = self._warm_file(os.path.join(self.root, rel), sizes[rel], s)
            if s.stopped:
                break
        s.seconds = time.monotonic() - t0
        log.info("%s", s.line())
        return s

    def _warm_file(self, path: str, size: int, s: Summary) -> str:
        """Read one file whole through the mount; returns why the pass must stop, or ""."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            return self._failed(path, 0, e, s)
        try:
            off, readahead_off = 0, False
            while off < size:
                why = self._why_stop()
                if why:
                    return why
                s.paused += self.gate.wait_quiet(self.stop_event)
                room = self._limit - s.bytes
                if room < self.margin and not readahead_off:  # nothing cached past the budget
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                    readahead_off = True
                n = min(CHUNK, room)
                if off + n < size:
                    n -= n % PAGE  # whole pages: the kernel caches no partial one past the budget
                if n <= 0:
                    return f"budget of {human(self._limit)} reached"
                got = os.preadv(fd, [self._buf[:n]], off)
                if got == 0:
                    break
                off += got
                s.bytes += got
                if self.pace:
                    self.stop_event.wait(self.pace)
                self._progress(s)
            s.files += 1
            return ""
        except OSError as e:
            return self._failed(path, off, e, s)
        finally:
            try:
                os.close(fd)  # a FUSE flush: fails with ENOTCONN once the connection is gone
            except OSError:
                pass

    def _failed(self, path: str, off: int, e: OSError, s: Summary) -> str:
        """A read failed: the end of the pass if the mount is gone, else this file is not warm."""
        if self.stop_event.is_set():
            return self._stop_reason
        if e.errno in GONE or not self.is_mounted():
            return "unmounted"
        s.failed += 1
        log.error("warm-up: %s: read failed at offset %d (%s): not warm; continuing with the next "
                  "file", os.path.relpath(path, self.root), off, e.strerror or e)
        return ""

    def _why_stop(self) -> str:
        """Checked before every read: a stop, a vanished mount, memory others now need; or ""."""
        now = time.monotonic()
        if self.stop_event.is_set():
            return self._stop_reason
        if now >= self._next_mount_check:
            self._next_mount_check = now + MOUNT_CHECK_S
            if not self.is_mounted():
                return "unmounted"
        if now >= self._next_memory_check:
            self._next_memory_check = now + MEMORY_CHECK_S
            avail = mem_available()
            if avail < self._reserve:
                return f"MemAvailable {human(avail)} under the reserve {human(self._reserve)}"
        return ""

    def _progress(self, s: Summary) -> None:
        """A progress line every PROGRESS_S: a long pass shows it is alive and how fast it goes."""
        now = time.monotonic()
        if now >= self._next_progress + PROGRESS_S:
            self._next_progress = now
            rate = s.bytes / max(now - self._t0, 1e-9) / 1e9
            log.info("warm-up: %s warmed, %d/%d files, %.2f GB/s, paused %.1f s", human(s.bytes),
                     s.files, s.planned, rate, s.paused)


# the thread's surroundings -----------------------------------------------------------------------
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18


def lower_priority() -> None:
    """Nice 19 for the calling thread only (Linux applies setpriority to a thread id)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError as e:
        log.info("warm-up: could not lower its priority (%s)", e.strerror)


def enter_private_mount_namespace() -> bool:
    """Give the calling thread its own copy of the mount table, with no propagation.

    Files the pass opens then pin the copy, not the mount users see, so ``fusermount3 -u``
    is never refused as busy. unshare(CLONE_NEWNS) works in a threaded process (it only
    unshares this thread's fs state); it needs CAP_SYS_ADMIN. Without it the pass reads in
    the shared namespace, where a plain ``fusermount3 -u`` can fail while it reads.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
        if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
            raise OSError(ctypes.get_errno(), "making the copy private")
        return True
    except (OSError, AttributeError) as e:
        log.info("warm-up reads in the shared mount namespace (%s): until it finishes, unmount with "
                 "SIGTERM or 'fusermount3 -u -z'; a plain 'fusermount3 -u' may find the mount busy",
                 os.strerror(e.errno) if getattr(e, "errno", None) else e)
        return False
