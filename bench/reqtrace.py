"""Diagnostic: which FUSE read requests a workload produces, and how long each takes in the server.

    python bench/reqtrace.py CIPHERDIR PASSFILE [--readahead-kb KB] [--block-path c|python]
                             [--workload seq|mmap] [--plaindir DIR]

Mounts CIPHERDIR with the cryptfs FUSE stack (``cryptfs.core.mount.mount``, daemonized) through a
wrapper that timestamps every ``read_into`` call (the per-request work: pread + decrypt
straight into libfuse's buffer), runs one workload over every file at the root, unmounts and
prints: request sizes, how many requests were in flight on average (sum of service times /
wall time), the server-side throughput of a single request, and how much of the wall time
had no request in service at all (time spent in the kernel, in libfuse or in the reader).
With ``--plaindir`` it serves that plaintext directory instead (no crypto; see passthrough.py).
Needs root (bdi readahead) and a running workload-free machine for clean numbers.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from passthrough import PlainSource  # noqa: E402
from run import wl_mmap, wl_seq  # noqa: E402

from cryptfs.core.mount import mount  # noqa: E402
from cryptfs.core.options import READAHEAD_KB_DEFAULT, MountOptions  # noqa: E402
from cryptfs.core.source import DirEntry, MountSource, OpenFile  # noqa: E402
from cryptfs.password import KeySource  # noqa: E402
from cryptfs.tree import open_tree  # noqa: E402

_pinned = threading.local()


def pin_thread_state() -> None:
    """Keep this (libfuse worker) thread's Python thread state alive across callbacks.

    A ctypes callback on a thread Python did not create gets a fresh PyThreadState and
    deletes it on return: per FUSE request that is a gettid, an mmap and an munmap of the
    16 KiB frame stack (and TLB-shootdown IPIs to the other threads' CPUs). One unmatched
    PyGILState_Ensure makes the state outlive the callback.
    """
    if not getattr(_pinned, "done", False):
        ctypes.pythonapi.PyGILState_Ensure()
        _pinned.done = True


class TracedFile(OpenFile):
    pin = False

    def __init__(self, inner, trace_path: str):
        self.inner = inner
        self.plain_size = inner.plain_size
        self.fd = inner.fd
        self.trace_path = trace_path
        self.records: list[tuple] = []
        self.lock = threading.Lock()

    def read_into(self, plain_off: int, out: memoryview) -> int:
        if self.pin:
            pin_thread_state()
        t0 = time.perf_counter()
        n = self.inner.read_into(plain_off, out)
        t1 = time.perf_counter()
        with self.lock:
            self.records.append((t0, t1, plain_off, len(out), n, threading.get_ident()))
        return n

    def close(self) -> None:
        self.inner.close()
        self.fd = -1
        with open(self.trace_path, "a") as f:
            for r in self.records:
                f.write(json.dumps(r) + "\n")


class TracedSource(MountSource):
    """Delegates to ``inner``; only open() wraps the file to time its reads."""

    def __init__(self, inner: MountSource, trace_path: str):
        self.inner = inner
        self.trace_path = trace_path
        self.root = inner.root

    @property
    def block_path(self) -> str:
        return self.inner.block_path

    def lstat(self, rel: bytes) -> os.stat_result:
        return self.inner.lstat(rel)

    def readdir(self, rel: bytes) -> list[DirEntry]:
        return self.inner.readdir(rel)

    def readlink(self, rel: bytes) -> bytes:
        return self.inner.readlink(rel)

    def open(self, rel: bytes) -> TracedFile:
        return TracedFile(self.inner.open(rel), self.trace_path)


def analyse(records: list[tuple], wall: float) -> dict:
    sizes = collections.Counter(r[3] for r in records)
    busy = sum(r[1] - r[0] for r in records)
    # time with at least one request in service
    events = sorted([(r[0], 1) for r in records] + [(r[1], -1) for r in records])
    covered, depth, last = 0.0, 0, None
    for t, d in events:
        if depth > 0 and last is not None:
            covered += t - last
        depth += d
        last = t
    nbytes = sum(r[4] for r in records)
    big = [r[1] - r[0] for r in records if r[3] >= 1 << 20]
    return {
        "requests": len(records),
        "sizes_KiB": {k // 1024: v for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:6]},
        "threads": len({r[5] for r in records}),
        "bytes": nbytes,
        "wall_s": round(wall, 3),
        "mean_in_flight": round(busy / wall, 2),
        "per_request_MBps": round(nbytes / busy / 1e6) if busy else None,
        "mean_service_ms": round(busy / len(records) * 1e3, 3) if records else None,
        "median_service_ms_1MiB": round(sorted(big)[len(big) // 2] * 1e3, 3) if big else None,
        "wall_with_no_request_in_service_pct": round(100 * (1 - covered / wall), 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cipherdir")
    p.add_argument("passfile")
    p.add_argument("--readahead-kb", type=int, default=READAHEAD_KB_DEFAULT)
    p.add_argument("--block-path", choices=("c", "python"), default="c")
    p.add_argument("--workload", choices=("seq", "mmap"), default="seq")
    p.add_argument("--plaindir", help="serve this plaintext directory instead (no crypto)")
    p.add_argument("--threads", type=int, default=None,
                   help="C block path workers besides the caller (MountOptions.decrypt_threads; "
                        "default: the mount's, 0 without --direct-io)")
    p.add_argument("--pin-tstate", action="store_true",
                   help="experiment: keep a Python thread state per libfuse thread (see pin_thread_state)")
    p.add_argument("--show-small", type=int, default=0, metavar="N",
                   help="print the first N requests smaller than 64 KiB (time order)")
    args = p.parse_args()
    TracedFile.pin = args.pin_tstate
    work = tempfile.mkdtemp(prefix="cryptfs-reqtrace-", dir="/var/tmp")
    mnt, trace = os.path.join(work, "mnt"), os.path.join(work, "trace.jsonl")
    os.mkdir(mnt)
    if args.plaindir:
        source = PlainSource(args.plaindir)
    else:
        source = open_tree(args.cipherdir, KeySource([args.passfile]), block_path=args.block_path)
    cfg = MountOptions(source_dir=args.plaindir or args.cipherdir, mountpoint=mnt,
                       readahead_kb=args.readahead_kb, log_file=os.path.join(work, "log"),
                       block_path=args.block_path, decrypt_threads=args.threads)
    pid = os.fork()
    if pid == 0:  # mount() daemonizes; keep this process's own state out of it
        os._exit(mount(TracedSource(source, trace), cfg))
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("mount failed")
    try:
        fn = wl_seq if args.workload == "seq" else wl_mmap
        results = {}
        for name in sorted(os.listdir(mnt)):
            path = os.path.join(mnt, name)
            t0 = time.perf_counter()
            n = fn(path)
            results[name] = (n, time.perf_counter() - t0)
    finally:
        subprocess.run(["fusermount3", "-u", mnt], check=False)
        deadline = time.monotonic() + 10
        while not os.path.exists(trace) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    for name, (n, wall) in results.items():
        with open(trace) as f:
            records = [tuple(json.loads(line)) for line in f]
        print(f"{name}: {n / wall / 1e6:.0f} MB/s client-side, {args.workload}, ra {args.readahead_kb} KiB, "
              f"{'passthrough' if args.plaindir else 'block path ' + args.block_path}")
        print(json.dumps(analyse(records, wall), indent=1))
        if args.show_small:
            small = sorted(r for r in records if r[3] < 64 * 1024)[: args.show_small]
            print("first small requests (offset KiB, size KiB):",
                  [(r[2] // 1024, r[3] // 1024) for r in small])
    os.unlink(trace)
    os.rmdir(mnt)
    for leftover in os.listdir(work):
        os.unlink(os.path.join(work, leftover))
    os.rmdir(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
