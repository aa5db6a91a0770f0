"""Profile one loading pattern on one mount: FUSE requests, server CPU split, optional perf.

    python bench/loadtrace.py CIPHERDIR PASSFILE MANIFEST [--pattern vllm] [--system ours|gocryptfs]
                              [--hot] [--perf OUT.txt] [--show N]

The diagnostic behind the "Loading patterns" notes in bench/README.md. CIPHERDIR, PASSFILE and
MANIFEST come from a kept bench/loading.py work dir (``--keep``: cipher/, passfile,
gen/manifest.json) or from bench/model_gen.py ``--encrypt``.

- ``--system ours`` mounts CIPHERDIR with the cryptfs FUSE stack at its defaults
  (``cryptfs.core.mount.mount``, as ``python -m cryptfs mount`` does) through the wrapper of
  bench/reqtrace.py, which timestamps every read request in the server (``read_into``: pread of
  the ciphertext + decryption into libfuse's buffer). ``--system gocryptfs`` mounts real
  gocryptfs (``-fg -ro``); its requests are not traced, only its CPU.
- Cold by default: drop_caches before the mount (as bench/loading.py). ``--hot`` reads every
  ciphertext file once instead, so the server's preads hit the page cache: cold minus hot
  service time is the time spent waiting for the disk.
- Runs bench/loaders.py PATTERN against the mount (its own timing), then prints: the load's
  seconds, the server's user and system CPU seconds per GiB of model, and for ``ours`` the
  requests: sizes, the share that continue the previous request on the same file
  ("sequential", which is when the mount's ciphertext prefetch, a POSIX_FADV_WILLNEED 8 MiB
  ahead, kicks in), bytes asked for more than once (decrypted twice), mean requests in flight,
  the share of wall time with no request in service, and service times.
- ``--perf OUT.txt``: ``perf record -e cpu-clock -g`` of the server process during the load
  (``--perf-loader``: of the loader process instead); the report (by DSO and by symbol, no
  children) goes to OUT.txt and its head to stdout.
- ``--backing-probe``: no mount; read the ciphertext files cold in this process with 1 MiB
  buffered preads (plus the mount's WILLNEED hint) and with O_DIRECT, and print the CPU per GiB
  of each: what reading the ciphertext costs the server besides decryption.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from loading import Loader, abort_connection, drop_caches  # noqa: E402
from reqtrace import TracedFile, TracedSource  # noqa: E402
from run import CLK_TCK, fusermount_u, mounted, read_file_fully  # noqa: E402

from cryptfs.core.mount import mount  # noqa: E402
from cryptfs.core.options import MountOptions  # noqa: E402
from cryptfs.password import KeySource  # noqa: E402
from cryptfs.tree import open_tree  # noqa: E402

GiB = 1 << 30


class NamedTracedFile(TracedFile):
    """TracedFile whose records also carry the file's name (element 6)."""

    def __init__(self, inner, trace_path: str, name: str):
        super().__init__(inner, trace_path)
        self.name = name

    def read_into(self, plain_off: int, out: memoryview) -> int:
        t0 = time.perf_counter()
        n = self.inner.read_into(plain_off, out)
        t1 = time.perf_counter()
        with self.lock:
            self.records.append((t0, t1, plain_off, len(out), n, threading.get_ident(), self.name))
        return n


class NamedTracedSource(TracedSource):
    def open(self, rel: bytes) -> NamedTracedFile:
        return NamedTracedFile(self.inner.open(rel), self.trace_path, os.fsdecode(rel))


def daemon_pid() -> int:
    """The mount daemon forked from this script: the other process with this script's argv."""
    with open("/proc/self/cmdline", "rb") as f:
        me = f.read()
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if f.read() == me:
                        return int(d)
            except OSError:
                continue
    raise SystemExit("cannot find the mount daemon's PID")


def backing_probe(cipherdir: str, chunk: int = 1 << 20) -> dict:
    """CPU per GiB of reading the ciphertext files cold: buffered pread (as the mount does, with
    its WILLNEED hint 8 MiB ahead) against O_DIRECT pread into one reused aligned buffer."""
    import mmap

    files = [os.path.join(cipherdir, n) for n in sorted(os.listdir(cipherdir))
             if os.path.getsize(os.path.join(cipherdir, n)) >= chunk]
    total = sum(os.path.getsize(f) for f in files)
    out = {}
    for mode in ("buffered", "o_direct", "buffered", "o_direct"):
        drop_caches()
        buf = mmap.mmap(-1, chunk)  # page-aligned, as O_DIRECT needs
        view = memoryview(buf)
        t = os.times()
        t0 = time.perf_counter()
        for path in files:
            flags = os.O_RDONLY | (os.O_DIRECT if mode == "o_direct" else 0)
            fd = os.open(path, flags)
            try:
                off = 0
                while True:
                    if mode == "buffered" and off % (8 << 20) == 0:
                        os.posix_fadvise(fd, off + chunk, 8 << 20, os.POSIX_FADV_WILLNEED)
                    n = os.preadv(fd, [view], off)
                    off += n
                    if n < chunk:
                        break
            finally:
                os.close(fd)
        wall = time.perf_counter() - t0
        t1 = os.times()
        view.release()
        buf.close()
        gib = total / GiB
        out.setdefault(mode, []).append({"wall_s": round(wall, 3), "MBps": round(total / wall / 1e6),
                                         "user_s_per_gib": round((t1.user - t.user) / gib, 3),
                                         "sys_s_per_gib": round((t1.system - t.system) / gib, 3)})
    return out


def cpu_split(pid: int) -> tuple[float, float] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def analyse(records: list[tuple], wall: float) -> dict:
    """Requests: sizes, sequential share, bytes asked twice, concurrency, service times."""
    records = sorted(records)
    sizes = collections.Counter(r[3] for r in records)
    last_end: dict[str, int] = {}
    seq = 0
    seen: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    for r in records:
        name, off, n = r[6], r[2], r[4]
        if last_end.get(name) == off:
            seq += 1
        last_end[name] = off + r[3]
        seen[name].append((off, off + n))
    asked = sum(r[4] for r in records)
    unique = 0
    for spans in seen.values():
        spans.sort()
        cur_a, cur_b = None, None
        for a, b in spans:
            if cur_b is None or a > cur_b:
                if cur_b is not None:
                    unique += cur_b - cur_a
                cur_a, cur_b = a, b
            else:
                cur_b = max(cur_b, b)
        if cur_b is not None:
            unique += cur_b - cur_a
    busy = sum(r[1] - r[0] for r in records)
    events = sorted([(r[0], 1) for r in records] + [(r[1], -1) for r in records])
    covered, depth, last = 0.0, 0, None
    for t, d in events:
        if depth > 0 and last is not None:
            covered += t - last
        depth += d
        last = t
    by_size: dict[str, list[float]] = collections.defaultdict(list)
    for r in records:
        key = "1MiB" if r[3] >= 1 << 20 else ">=128KiB" if r[3] >= 128 << 10 else "<128KiB"
        by_size[key].append((r[1] - r[0]) * 1e3)
    return {
        "requests": len(records),
        "sizes_KiB_top": {k // 1024: v for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:6]},
        "sequential_pct": round(100 * seq / len(records), 1) if records else None,
        "bytes_asked": asked,
        "bytes_asked_more_than_once": asked - unique,
        "threads": len({r[5] for r in records}),
        "mean_in_flight": round(busy / wall, 2),
        "wall_with_no_request_in_service_pct": round(100 * (1 - covered / wall), 1),
        "service_ms_median": {k: round(statistics.median(v), 3) for k, v in sorted(by_size.items())},
        "service_ms_sum": round(busy * 1e3, 1),
    }


PERF_PATHS = (  # inclusive shares worth reading in a server profile
    "filemap_read", "page_cache_ra_unbounded", "fuse_dev_write", "fuse_dev_do_write", "fuse_copy_args",
    "fuse_dev_read", "ext4_mpage_readpages", "submit_bio", "__filemap_add_folio", "__alloc_pages_noprof",
    "folio_alloc_noprof", "generic_fadvise", "EVP_DecryptUpdate", "EVP_DecryptFinal_ex",
    "_PyEval_EvalFrameDefault", "schedule", "futex_wait", "gup_fast_fallback")


def perf_report(data: str, out: str) -> str:
    parts = []
    for sort in ("dso", "dso,sym"):
        p = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", sort,
                            "--percent-limit", "1", "-g", "none"], capture_output=True, text=True)
        parts.append(f"### perf report --sort {sort}\n" + "\n".join(
            line for line in p.stdout.splitlines() if line.strip() and not line.startswith("#")))
    # inclusive (children) share of a few kernel and library paths: where the time goes, by caller
    p = subprocess.run(["perf", "report", "-i", data, "--stdio", "--children", "--sort", "sym", "-g", "none"],
                       capture_output=True, text=True)
    rows = []
    for line in p.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+([\d.]+)%\s+\[.\]\s+(\S+)", line)
        if m and m.group(3) in PERF_PATHS:
            rows.append(f"{float(m.group(1)):6.2f}%  {m.group(3)}")
    parts.append("### inclusive (children) share of selected paths\n" + "\n".join(rows))
    text = "\n\n".join(parts)
    with open(out, "w") as f:
        f.write(text + "\n")
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cipherdir")
    p.add_argument("passfile")
    p.add_argument("manifest")
    p.add_argument("--pattern", default="vllm")
    p.add_argument("--system", choices=("ours", "gocryptfs"), default="ours")
    p.add_argument("--readahead-kb", type=int, default=None,
                   help="ours: the mount's bdi read_ahead_kb (default: the mount's; 0 keeps the kernel's)")
    p.add_argument("--hot", action="store_true", help="ciphertext in the page cache (default: drop_caches)")
    p.add_argument("--perf", metavar="OUT", help="perf record the server; write the report here")
    p.add_argument("--perf-loader", action="store_true",
                   help="with --perf: record the loader process (not tp2) instead of the server")
    p.add_argument("--show", type=int, default=0, metavar="N", help="print the first N requests")
    p.add_argument("--backing-probe", action="store_true",
                   help="only: read the ciphertext files cold in process, buffered vs O_DIRECT (CPU per GiB)")
    args = p.parse_args()
    if args.backing_probe:
        print(json.dumps(backing_probe(args.cipherdir), indent=1))
        return 0
    with open(args.manifest) as f:
        model_bytes = json.load(f)["total_bytes"]
    work = tempfile.mkdtemp(prefix="cryptfs-loadtrace-", dir="/var/tmp")
    mnt, trace = os.path.join(work, "mnt"), os.path.join(work, "trace.jsonl")
    os.mkdir(mnt)
    loader = Loader(args.pattern, mnt, args.manifest, False, os.path.join(work, "loader.log"))
    server_proc = None
    perf = None
    records: list[tuple] = []
    try:
        if args.hot:
            for name in os.listdir(args.cipherdir):
                read_file_fully(os.path.join(args.cipherdir, name))
        else:
            drop_caches()
        if args.system == "ours":
            source = open_tree(args.cipherdir, KeySource([args.passfile]))
            cfg = MountOptions(source_dir=args.cipherdir, mountpoint=mnt, log_file=os.path.join(work, "log"),
                               **({} if args.readahead_kb is None else {"readahead_kb": args.readahead_kb}))
            pid = os.fork()
            if pid == 0:  # mount() daemonizes; keep this process's own state out of it
                os._exit(mount(NamedTracedSource(source, trace), cfg))
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit("mount failed")
            server = daemon_pid()
        else:
            server_proc = subprocess.Popen(["gocryptfs", "-fg", "-ro", "-q", "-passfile", args.passfile,
                                            args.cipherdir, mnt], stdout=subprocess.DEVNULL)
            server = server_proc.pid
            while not mounted(mnt):
                time.sleep(0.002)
        c0 = cpu_split(server)
        if args.perf:
            target = loader.proc.pid if args.perf_loader else server
            perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "2000", "-g",
                                     "-p", str(target), "-o", os.path.join(work, "perf.data")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        loader.go(0)
        try:
            res = loader.result()
        except (TimeoutError, EOFError):
            abort_connection(mnt)
            raise
        c1 = cpu_split(server)
        if perf is not None:
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=60)
            perf = None
    finally:
        loader.kill()
        if perf is not None:
            perf.kill()
            perf.wait()
        fusermount_u(mnt)
        if server_proc is not None:
            try:
                server_proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server_proc.terminate()
                server_proc.wait(timeout=10)
        if sys.exc_info()[0] is not None:
            cleanup(work, mnt)
    gib = model_bytes / GiB
    state = "hot" if args.hot else "cold"
    print(f"{args.system} {args.pattern} ({state} ciphertext): {res['seconds']:.3f} s "
          f"for {gib:.2f} GiB; loader CPU {res['cpu_s']:.2f} s")
    if c0 and c1:
        print(f"server CPU per GiB: user {(c1[0] - c0[0]) / gib:.2f} s, system {(c1[1] - c0[1]) / gib:.2f} s")
    if args.system == "ours":
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not os.path.exists(trace):
            time.sleep(0.05)
        time.sleep(0.5)
        with open(trace) as f:
            records = [tuple(json.loads(line)) for line in f]
        print(json.dumps(analyse(records, res["seconds"]), indent=1))
        if args.show:
            t_first = min(r[0] for r in records)
            for r in sorted(records)[: args.show]:
                print(f"  +{(r[0] - t_first) * 1e3:8.2f} ms {r[6]:<36} off {r[2] >> 10:>8} KiB size "
                      f"{r[3] >> 10:>5} KiB {1e3 * (r[1] - r[0]):6.2f} ms")
    if args.perf:
        print(perf_report(os.path.join(work, "perf.data"), args.perf)[:4000])
    cleanup(work, mnt)
    return 0


def cleanup(work: str, mnt: str) -> None:
    """Remove the work dir, unless the mount is somehow still there."""
    if mounted(mnt):
        print(f"warning: {mnt} still mounted; {work} left in place", file=sys.stderr)
        return
    for name in os.listdir(work):
        if name != "mnt":
            os.unlink(os.path.join(work, name))
    os.rmdir(mnt)
    os.rmdir(work)


if __name__ == "__main__":
    sys.exit(main())
