"""Loading-pattern benchmark: ``cryptfs mount`` against real gocryptfs, cold, one pattern per row.

    python bench/loading.py [--size 1G] [--shards 4] [--pairs 5] [--rows vllm,...] [--no-plain]
                            [--startup-s 3] [--workdir /var/tmp] [--out FILE.json] [--keep]

Needs root (drop_caches, FUSE mounts), fuse3, gocryptfs and openssl on PATH.

1. A model from bench/model_gen.py (``--size``, ``--shards``, seed 0: Llama-style, bf16/f32/f16/
   int8 tensors, index, config, tokenizer files), encrypted with ``python -m cryptfs encrypt
   --scryptn 10``. Both systems mount that one cipher dir:
   ``ours``: ``python -m cryptfs mount --fg --passfile F CIPHER MNT`` (defaults);
   ``gocryptfs``: ``gocryptfs -fg -ro -passfile F CIPHER MNT`` (defaults).
2. Verification, untimed: every loader pattern runs once per system with ``--verify`` (sha256 of
   every tensor, or of each TP rank's slice, against the generator's manifest). A mismatch aborts.
3. Rows (bench/loaders.py): ``vllm``, ``vllm-prefetch``, ``runai``, ``fastsafetensors``, ``tp2``,
   and ``vllm-startup``: vLLM's default loader after a ``--startup-s`` pause from the mount being
   ready (a model server's start-up), ``ours`` mounted with ``--warmup``. Each round runs every
   row for both systems, one right after the other, the order alternating from round to round
   and row to row. One sample: start the loader process (imports, parameter buffer), drop the
   page cache (``echo 3 > /proc/sys/vm/drop_caches``), mount, tell the loader to go (at
   mount-ready + the start-up pause), collect its JSON, read the server's utime+stime from
   /proc/PID/stat, unmount. Every sample is cold: a fresh mount (our mount keeps its page cache
   across opens, so it must be remounted) over ciphertext that is no longer in the page cache.
   After each pair (not in the start-up row) a reference sample, ``plain``: the same loader on
   the plaintext model on ext4 after drop_caches (no FUSE, no crypto; ``--no-plain`` skips it).
4. Per row: median [min-max] of the loading seconds, of the paired ratio gocryptfs s / ours s
   (> 1: ours faster), and the server's CPU seconds per GiB of model (from mount-ready to just
   before unmount, so the warm-up pass counts), with the paired ratio ours / gocryptfs. Also
   ``openssl speed -evp aes-256-gcm -decrypt`` (16 KiB and 4 KiB, before and after the rounds),
   the machine, and the targets of the issue "Load fast where it counts". Written to ``--out``.

Mounts are undone in ``finally`` (``fusermount3 -u``; a server that does not exit is stopped by its
PID; a loader stuck in the kernel is freed through /sys/fs/fuse/connections/N/abort). Nothing
asserts on timings; the targets are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import model_gen  # noqa: E402
from loaders import PATTERNS  # noqa: E402
from run import (  # noqa: E402
    BENCH_DIR,
    CLK_TCK,
    loadavg,
    log,
    machine_info,
    mount_dev,
    mounted,
    openssl_speed,
    parse_size,
    pid_alive,
    system_busy_cpu,
    write_results,
)

GiB = 1 << 30
PASSWORD = "cryptfs-loading-bench"
SYSTEMS = ("ours", "gocryptfs")
STARTUP_ROW = "vllm-startup"
ROWS = (*PATTERNS, STARTUP_ROW)
ROW_LABELS = {
    "vllm": "vLLM default (mmap, sorted keys, 1 thread)",
    "vllm-prefetch": "vLLM --safetensors-load-strategy prefetch (8 threads x 16 MiB read + mmap)",
    "runai": "runai-like (16 threads, contiguous ranges, 2 MiB read())",
    "fastsafetensors": "fastsafetensors-like (pread 16 MiB blocks, 16 threads)",
    "tp2": "TP=2 (2 processes, mmap, each its half of every tensor)",
    STARTUP_ROW: "vLLM default after a start-up pause (ours: --warmup)",
}
LOADER_TIMEOUT_S = 600


# --------------------------------------------------------------------------- processes


def cpu_split(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds of a process, all its threads (/proc/PID/stat utime, stime)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def read_line(fd: int, timeout: float) -> str:
    """One line from a raw pipe fd, or TimeoutError."""
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError("no line from the loader")
        b = os.read(fd, 1)
        if not b:
            raise EOFError("loader closed its stdout")
        buf += b
    return buf.decode().strip()


def read_all(fd: int, timeout: float) -> str:
    chunks = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError("loader did not finish")
        b = os.read(fd, 65536)
        if not b:
            return b"".join(chunks).decode()
        chunks.append(b)


class Loader:
    """A loader process started ahead of the mount: imports done, parameters allocated."""

    def __init__(self, pattern: str, model_dir: str, manifest: str, verify: bool, log_file: str):
        cmd = [sys.executable, str(BENCH_DIR / "loaders.py"), pattern, model_dir, "--manifest", manifest,
               "--wait", *(["--verify"] if verify else [])]
        self.err = open(log_file, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                     bufsize=0)
        line = read_line(self.proc.stdout.fileno(), 120)
        if line != "ready":
            raise RuntimeError(f"loader said {line!r}")

    def go(self, start_at: float) -> None:
        self.proc.stdin.write((json.dumps({"start_at": start_at}) + "\n").encode())
        self.proc.stdin.close()

    def result(self, timeout: float = LOADER_TIMEOUT_S) -> dict:
        out = read_all(self.proc.stdout.fileno(), timeout)
        rc = self.proc.wait(timeout=30)
        if rc != 0:
            raise RuntimeError(f"loader exited with {rc} (stderr in {self.err.name})")
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log(f"warning: loader {self.proc.pid} does not die (stuck in the kernel?)")
        self.err.close()


VMSTAT_KEYS = ("pgalloc_normal", "pgfault", "pgmajfault", "compact_stall", "allocstall_normal",
               "pgscan_direct", "thp_fault_alloc")


def vmstat() -> dict[str, int]:
    """A few /proc/vmstat counters (memory pressure, compaction, faults) for per-sample deltas."""
    out = {}
    with open("/proc/vmstat") as f:
        for line in f:
            k, _, v = line.partition(" ")
            if k in VMSTAT_KEYS:
                out[k] = int(v)
    return out


def meminfo_mib(key: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024
    return -1


def drop_caches() -> float:
    t0 = time.perf_counter()
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    return time.perf_counter() - t0


def abort_connection(mp: str) -> None:
    """Fail every pending request of the FUSE connection behind ``mp`` (frees stuck readers)."""
    dev = mount_dev(mp)
    if not dev:
        return
    path = f"/sys/fs/fuse/connections/{dev.split(':')[1]}/abort"
    try:
        with open(path, "w") as f:
            f.write("1")
        log(f"aborted FUSE connection {path}")
    except OSError as e:
        log(f"warning: {path}: {e}")


class Server:
    """One foreground FUSE server (ours or gocryptfs) mounted at ``mp``."""

    def __init__(self, system: str, env: Env, warmup: bool = False):
        self.mp = env.mnt
        if system == "ours":
            cmd = [sys.executable, "-m", "cryptfs", "mount", "--fg", "--passfile", env.passfile,
                   *(["--warmup"] if warmup else []), env.cipher, self.mp]
        else:
            cmd = ["gocryptfs", "-fg", "-ro", "-q", "-passfile", env.passfile, env.cipher, self.mp]
        self.log = open(os.path.join(env.logs, f"{system}.log"), "ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 30
        while not mounted(self.mp):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{system} mount exited with {self.proc.returncode} (log {self.log.name})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{system}: {self.mp} did not appear in /proc/mounts")
            time.sleep(0.002)
        self.ready = time.monotonic()
        self.mount_s = time.perf_counter() - t0
        self.cpu_ready = cpu_split(self.pid)

    def cpu(self) -> tuple[float, float] | None:
        return cpu_split(self.pid)

    def stop(self) -> None:
        deadline = time.monotonic() + 20
        while mounted(self.mp):
            p = subprocess.run(["fusermount3", "-u", self.mp], capture_output=True, text=True)
            if p.returncode == 0 or not mounted(self.mp):
                break
            if time.monotonic() > deadline:
                log(f"warning: {self.mp} stays busy ({p.stderr.strip()}); aborting the connection")
                abort_connection(self.mp)
                subprocess.run(["fusermount3", "-u", "-z", self.mp], capture_output=True)
                break
            time.sleep(0.1)
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and pid_alive(self.pid):
                log(f"warning: server {self.pid} still running after unmount; sending {sig.name}")
                os.kill(self.pid, sig)
            try:
                self.proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        self.log.close()


# --------------------------------------------------------------------------- environment


class Env:
    def __init__(self, work: str):
        self.work = work
        self.passfile = os.path.join(work, "passfile")
        self.gen = os.path.join(work, "gen")  # model_gen output: gen/model, gen/manifest.json
        self.cipher = os.path.join(work, "cipher")
        self.mnt = os.path.join(work, "mnt")
        self.logs = os.path.join(work, "logs")
        self.manifest_path = os.path.join(self.gen, "manifest.json")
        self.manifest: dict = {}

    @property
    def model_on_mount(self) -> str:
        return self.mnt  # the cipher dir holds the model dir's content at its root


def setup(env: Env, size: int, shards: int) -> dict:
    for d in (env.mnt, env.logs):
        os.mkdir(d)
    with open(env.passfile, "w") as f:
        f.write(PASSWORD + "\n")
    t0 = time.perf_counter()
    env.manifest = model_gen.generate(env.gen, size, shards, seed=0)
    t1 = time.perf_counter()
    model_gen.encrypt(os.path.join(env.gen, "model"), env.cipher, env.passfile)
    t2 = time.perf_counter()
    m = env.manifest
    log(f"model: {len(m['tensors'])} tensors, {len(m['shards'])} shards, {m['total_bytes'] / GiB:.3f} GiB "
        f"(generated in {t1 - t0:.1f} s, encrypted in {t2 - t1:.1f} s)")
    return {"generate_s": round(t1 - t0, 1), "encrypt_s": round(t2 - t1, 1), "files": m["files"],
            "total_bytes": m["total_bytes"], "weights_bytes": m["weights_bytes"],
            "tensors": len(m["tensors"]), "layers": m["layers"], "shards": m["shards"],
            "dtype_bytes": {dt: sum(t["nbytes"] for t in m["tensors"].values() if t["dtype"] == dt)
                            for dt in sorted({t["dtype"] for t in m["tensors"].values()})}}


# --------------------------------------------------------------------------- samples


def sample(env: Env, row: str, system: str, startup_s: float, verify: bool = False) -> dict:
    """One cold load: loader ready, drop_caches, mount, go (after the start-up pause), unmount.

    ``system`` "plain" is the reference: the loader on the plaintext model on ext4 (no FUSE, no
    crypto), after drop_caches, i.e. what the disk and the loader itself allow.
    """
    pattern = "vllm" if row == STARTUP_ROW else row
    delay = startup_s if row == STARTUP_ROW else 0.0
    model_dir = os.path.join(env.gen, "model") if system == "plain" else env.model_on_mount
    loader = Loader(pattern, model_dir, env.manifest_path, verify,
                    os.path.join(env.logs, f"loader-{pattern}.log"))
    server = None
    cpu_end = None
    try:
        drop_s = drop_caches()
        la = loadavg()
        if system != "plain":
            server = Server(system, env, warmup=(row == STARTUP_ROW and system == "ours"))
        ready = server.ready if server else time.monotonic()
        mem_free = meminfo_mib("MemFree")
        v0 = vmstat()
        b0 = system_busy_cpu()
        loader.go(ready + delay)
        try:
            res = loader.result()
        except (TimeoutError, EOFError):
            if server is not None:
                abort_connection(env.mnt)
            raise
        cpu_end = server.cpu() if server else None
        b1 = system_busy_cpu()
        v1 = vmstat()
    finally:
        loader.kill()
        if server is not None:
            server.stop()
    served_gib = env.manifest["total_bytes"] / GiB
    c0 = server.cpu_ready if server else None
    usr = sys_ = srv = None
    if cpu_end is not None and c0 is not None:
        usr, sys_ = cpu_end[0] - c0[0], cpu_end[1] - c0[1]
        srv = usr + sys_
    s = {"row": row, "system": system, "pattern": pattern, "startup_s": delay, "seconds": res["seconds"],
         "loader_cpu_s": res["cpu_s"], "bytes_delivered": res["bytes"], "start_late_s": res["start_late_s"],
         "server_cpu_s": srv, "server_user_s": usr, "server_sys_s": sys_,
         "server_cpu_total_s": None if cpu_end is None else sum(cpu_end),
         "server_cpu_at_ready_s": None if c0 is None else sum(c0),
         "server_cpu_s_per_gib": None if srv is None else srv / served_gib,
         "mount_s": server.mount_s if server else None, "drop_caches_s": drop_s, "loadavg1": la,
         "other_busy_cpu_s": (b1 - b0) - res["cpu_s"] - (srv or 0.0), "mem_free_mib": mem_free,
         "vmstat_delta": {k: v1[k] - v0[k] for k in v0 if k in v1}}
    for k in ("prefetch_s", "prefetch_done_before_load", "rank_seconds"):
        if k in res:
            s[k] = res[k]
    if verify:
        s.update(verified=res["verified"], mismatches=res["mismatches"], missing=res["missing"])
    return s


def verify_all(env: Env, rows: list[str]) -> dict:
    out = {}
    for pattern in dict.fromkeys("vllm" if r == STARTUP_ROW else r for r in rows):
        for system in SYSTEMS:
            s = sample(env, pattern, system, 0.0, verify=True)
            ok = not s["mismatches"] and not s["missing"] and s["verified"] == len(env.manifest["tensors"])
            out[f"{system}/{pattern}"] = {"ok": ok, "verified": s["verified"], "mismatches": s["mismatches"],
                                          "missing": s["missing"], "bytes_hashed": s["bytes_delivered"]}
            log(f"verify {system:<9} {pattern:<16} {'ok' if ok else 'MISMATCH'}: {s['verified']} tensors")
            if not ok:
                raise RuntimeError(f"DATA MISMATCH: {system} {pattern}: {s['mismatches'][:5]} "
                                   f"missing {s['missing'][:5]}")
    return out


def rounds(env: Env, rows: list[str], pairs: int, startup_s: float, plain: bool) -> list[dict]:
    samples = []
    for rnd in range(pairs):
        for i, row in enumerate(rows):
            order = SYSTEMS if (rnd + i) % 2 == 0 else tuple(reversed(SYSTEMS))
            if plain and row != STARTUP_ROW:
                order = (*order, "plain")  # the reference, after the pair (not part of it)
            for pos, system in enumerate(order):
                s = sample(env, row, system, startup_s)
                s.update(round=rnd, position=pos)
                samples.append(s)
                cpu = s["server_cpu_s_per_gib"]
                srv = "" if cpu is None else (f"  server cpu {cpu:.2f} s/GiB (user {s['server_user_s']:.2f}, "
                                              f"sys {s['server_sys_s']:.2f} s), mount {s['mount_s']:.2f} s")
                log(f"round {rnd + 1}/{pairs} {row:<16} {system:<9} {s['seconds']:7.3f} s{srv}, loader "
                    f"{s['loader_cpu_s']:.2f} s, others {s['other_busy_cpu_s']:.2f} s")
    return samples


# --------------------------------------------------------------------------- summary


def spread(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def paired(samples: list[dict], row: str, key: str, num: str, den: str) -> list[float]:
    by = {(s["round"], s["system"]): s[key] for s in samples if s["row"] == row and s[key] is not None}
    rnds = sorted({r for r, _ in by})
    return [by[(r, num)] / by[(r, den)] for r in rnds if (r, num) in by and (r, den) in by and by[(r, den)]]


def summarize(samples: list[dict], rows: list[str]) -> list[dict]:
    out = []
    for row in rows:
        mine = [s for s in samples if s["row"] == row]
        if not mine:
            continue
        r = {"row": row, "label": ROW_LABELS[row]}
        for system in SYSTEMS:
            ss = [s for s in mine if s["system"] == system]
            r[system] = {
                "seconds": spread([s["seconds"] for s in ss]),
                "server_cpu_s_per_gib": spread([s["server_cpu_s_per_gib"] for s in ss
                                                if s["server_cpu_s_per_gib"] is not None]),
                "server_user_s": spread([s["server_user_s"] for s in ss if s["server_user_s"] is not None]),
                "server_sys_s": spread([s["server_sys_s"] for s in ss if s["server_sys_s"] is not None]),
                "loader_cpu_s": spread([s["loader_cpu_s"] for s in ss]),
                "other_busy_cpu_s": spread([s["other_busy_cpu_s"] for s in ss]),
                "mount_s": spread([s["mount_s"] for s in ss]),
            }
        pl = [s["seconds"] for s in mine if s["system"] == "plain"]
        if pl:
            r["plain"] = {"seconds": spread(pl)}
        r["speedup"] = spread(paired(mine, row, "seconds", "gocryptfs", "ours"))
        r["cpu_ratio"] = spread(paired(mine, row, "server_cpu_s_per_gib", "ours", "gocryptfs"))
        out.append(r)
    return out


def targets(summary: list[dict], startup_s: float) -> list[dict]:
    rows = {r["row"]: r for r in summary}
    out = []

    def add(name: str, value, threshold: float, met: bool | None, detail: str = "") -> None:
        out.append({"target": name, "value": value, "threshold": threshold, "met": met, "detail": detail})

    if STARTUP_ROW in rows:
        sp = rows[STARTUP_ROW]["speedup"]
        add(f"after a {startup_s:g} s start-up, vLLM default >= 3x faster than gocryptfs (ours --warmup)",
            sp, 3.0, sp["median"] >= 3.0)
    delay_free = [r for r in summary if r["row"] != STARTUP_ROW]
    if delay_free:
        slow = [r["row"] for r in delay_free if r["speedup"]["median"] < 1.0]
        add("no start-up delay: no pattern slower than gocryptfs (median paired speedup >= 1)",
            {r["row"]: r["speedup"]["median"] for r in delay_free}, 1.0, not slow,
            f"slower: {', '.join(slow)}" if slow else "")
    if "vllm" in rows:
        sp = rows["vllm"]["speedup"]
        add("no start-up delay: vLLM default >= 1.5x faster than gocryptfs", sp, 1.5, sp["median"] >= 1.5)
    ratio_miss = [r["row"] for r in summary if r["cpu_ratio"] and r["cpu_ratio"]["median"] > 0.6]
    add("FUSE server CPU per GiB <= 0.6x gocryptfs's on every pattern",
        {r["row"]: r["cpu_ratio"]["median"] if r["cpu_ratio"] else None for r in summary}, 0.6,
        not ratio_miss, f"above: {', '.join(ratio_miss)}" if ratio_miss else "")
    abs_miss = [r["row"] for r in summary if r["ours"]["server_cpu_s_per_gib"]["median"] > 0.8]
    add("FUSE server CPU per GiB <= 0.8 s (ours) on every pattern",
        {r["row"]: r["ours"]["server_cpu_s_per_gib"]["median"] for r in summary}, 0.8, not abs_miss,
        f"above: {', '.join(abs_miss)}" if abs_miss else "")
    return out


def fmt(d: dict | None, f: str = "{:.2f}") -> str:
    if not d:
        return "-"
    return f"{f.format(d['median'])} [{f.format(d['min'])}-{f.format(d['max'])}]"


def print_report(res: dict) -> None:
    m = res["model"]
    print(f"\nLoading a {m['total_bytes'] / GiB:.2f} GiB model ({len(m['shards'])} shards), cold, "
          f"{res['meta']['pairs']} pairs; median [min-max]\n")
    head = (f"{'row':<16} {'ours s':>20} {'gocryptfs s':>20} {'speedup (paired)':>20} "
            f"{'cpu s/GiB ours':>20} {'cpu s/GiB gocryptfs':>20} {'cpu ours/gcfs':>18} {'plain ext4 s':>20}")
    print(head)
    print("-" * len(head))
    for r in res["summary"]:
        print(f"{r['row']:<16} {fmt(r['ours']['seconds'], '{:.3f}'):>20} "
              f"{fmt(r['gocryptfs']['seconds'], '{:.3f}'):>20} "
              f"{fmt(r['speedup']):>20} {fmt(r['ours']['server_cpu_s_per_gib']):>20} "
              f"{fmt(r['gocryptfs']['server_cpu_s_per_gib']):>20} {fmt(r['cpu_ratio']):>18} "
              f"{fmt(r.get('plain', {}).get('seconds'), '{:.3f}'):>20}")
    print("\nopenssl speed -evp aes-256-gcm -decrypt (MB/s):",
          ", ".join(f"{k} {v['mbps']:.0f}" for k, v in res["openssl"].items()))
    print("\nTargets")
    for t in res["targets"]:
        v = t["value"]
        vs = fmt(v) if isinstance(v, dict) and "median" in v else json.dumps(
            {k: None if x is None else round(x, 2) for k, x in v.items()})
        print(f"  {'MET' if t['met'] else 'missed':<7} {t['target']}: {vs} {t['detail']}")


# --------------------------------------------------------------------------- main


def openssl_round(tag: str, seconds: int) -> dict:
    return {f"{tag}-{b}": openssl_speed(["-bytes", str(b)], seconds) for b in (16384, 4096)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Loading patterns: cryptfs mount vs gocryptfs, cold, paired.")
    p.add_argument("--size", type=parse_size, default=1 << 30, help="model weights (default 1G)")
    p.add_argument("--shards", type=int, default=4, help="shards (default 4)")
    p.add_argument("--pairs", type=int, default=5, help="paired rounds (default 5)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"rows to run (default {','.join(ROWS)})")
    p.add_argument("--startup-s", type=float, default=3.0, help="start-up pause of the vllm-startup row")
    p.add_argument("--workdir", default="/var/tmp", help="where the temporary work dir is created")
    p.add_argument("--out", type=str, default=str(BENCH_DIR / "results" / "loading.json"),
                   help="results JSON (default bench/results/loading.json)")
    p.add_argument("--no-plain", action="store_true",
                   help="no reference samples (the loader on the plaintext model on ext4, cold)")
    p.add_argument("--openssl-seconds", type=int, default=3)
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    args = p.parse_args(argv)
    rows = args.rows.split(",")
    unknown = set(rows) - set(ROWS)
    if unknown:
        p.error(f"unknown rows {sorted(unknown)}; choose from {','.join(ROWS)}")
    missing = [t for t in ("gocryptfs", "fusermount3", "openssl") if not shutil.which(t)]
    if missing:
        raise SystemExit(f"missing tools: {', '.join(missing)}")
    if os.geteuid() != 0:
        raise SystemExit("run as root (drop_caches, bdi readahead)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    work = tempfile.mkdtemp(prefix="cryptfs-loading-", dir=args.workdir)
    env = Env(work)
    log(f"work dir {work}")
    res: dict = {}
    try:
        machine = machine_info()
        res["model"] = setup(env, args.size, args.shards)
        res["openssl"] = openssl_round("before", args.openssl_seconds)
        log("openssl: " + ", ".join(f"{k} {v['mbps']:.0f} MB/s" for k, v in res["openssl"].items()))
        res["verification"] = verify_all(env, rows)
        samples = rounds(env, rows, args.pairs, args.startup_s, not args.no_plain)
        res["openssl"].update(openssl_round("after", args.openssl_seconds))
        res["summary"] = summarize(samples, rows)
        res["targets"] = targets(res["summary"], args.startup_s)
        meta = {"argv": sys.argv[1:], "pairs": args.pairs, "rows": rows, "startup_s": args.startup_s,
                "row_labels": {r: ROW_LABELS[r] for r in rows}, "started": started,
                "systems": {"ours": "python -m cryptfs mount --fg --passfile F CIPHER MNT (defaults; "
                                    "vllm-startup row: --warmup)",
                            "gocryptfs": "gocryptfs -fg -ro -q -passfile F CIPHER MNT (defaults)"},
                "speedup": "gocryptfs seconds / ours seconds, paired within a round (> 1: ours faster)",
                "cpu": "FUSE server utime+stime (/proc/PID/stat) from mount-ready to just before unmount, "
                       "per GiB of model files",
                "plain": "reference: the loader on the plaintext model on ext4 (no FUSE, no crypto), cold"}
        res["meta"] = {**meta, "size_bytes": res["model"]["total_bytes"]}
        print_report(res)
        summary = {k: res[k] for k in ("model", "openssl", "verification", "summary", "targets")}
        write_results(Path(args.out), dict(res["meta"]), machine, summary, samples)
        log(f"wrote {args.out} ({time.time() - started:.0f} s in all)")
    finally:
        if mounted(env.mnt):
            subprocess.run(["fusermount3", "-u", "-z", env.mnt], capture_output=True)
        if mounted(env.mnt):
            log(f"warning: {env.mnt} still mounted; work dir {work} left in place")
        elif args.keep:
            log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
