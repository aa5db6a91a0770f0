"""Packing throughput: ``python -m sam pack`` of a model-sized file, against gocryptfs encryption.

    python bench/sam_pack.py [--size 1G] [--rounds 5] [--targets disk,shm] [--no-gocryptfs]
                             [--workdir /var/tmp] [--diskdir /tmp] [--json bench/results/sam_pack.json]
                             [--compare DIR]

Setup: a model dir with one random file of ``--size`` bytes (default 1 GiB), fsynced, and a
key file. Before every sample the source file is read once, so it is in the page cache
(DAMON pageout in this VM evicts page cache that stays idle for 60 s).

Variants, per output target (``disk``: a fresh dir under ``--diskdir``, ext4 on virtio;
``shm``: under /dev/shm, tmpfs), taken in alternating order each round:

* ``sam``: the whole command ``python -m sam pack MODEL KEY_ID --key-file F --out PARENT -q``
  at its defaults (scrypt N=2^17, ~0.45 s on this box, paid once per package), wall time
  from fork to exit. The packer fsyncs every file before the rename that publishes it.
* ``sam-n10``: the same with ``--scryptn 10`` (scrypt ~1 ms): the per-byte rate.
* ``gocryptfs``: ``gocryptfs -init -q -scryptn 16`` (its default cost) of a fresh cipher dir,
  mount, ``cp`` of the file into the mount, ``fsync`` of the copy through the mount (so both
  sides end with the data on disk), unmount. Recorded: the whole sequence, and ``cp + fsync``
  alone (the per-byte rate).

* ``alt`` / ``alt-n10`` (only with ``--compare DIR``): the same two commands with DIR first on
  PYTHONPATH, i.e. a patched copy of ``sam/`` in DIR/sam, paired in the same rounds (an A/B of
  a proposed change; its packages are not verified, as a timing prototype may not write a
  readable package).

scrypt at N=2^17 is timed on its own in process (``hashlib.scrypt``, the packer's call) so the
fixed cost can be read next to the per-byte rate. The first package of each target is
checked with ``python -m sam verify`` (every chunk authenticated). CPU per sample comes from
``RUSAGE_CHILDREN`` (user, sys of the command; the gocryptfs daemon is a child too, as
``gocryptfs`` runs in the foreground here via ``-fg``). MB/s = 10^6 B/s. Every mount is
unmounted in ``finally``; nothing asserts on timings.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from run import (  # noqa: E402
    MiB,
    fusermount_u,
    log,
    machine_info,
    mounted,
    parse_size,
    read_file_fully,
    stop_pid,
    write_results,
)

KEY = b"sam-bench-key-0123456789"
KEY_ID = "bench-model-1"
PASSWORD = "sam-bench-password"
TARGET_MBPS = 1000  # issue 6: packing a 1 GiB model >= 1 GB/s on 2 cores


def timed(cmd: list[str], **kw) -> tuple[float, float, float, subprocess.CompletedProcess]:
    """Wall seconds, child user and sys CPU seconds of one command (raises if it fails)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return dt, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, proc


def scrypt_seconds(log_n: int = 17, reps: int = 3) -> list[float]:
    out = []
    for _ in range(reps):
        n = 1 << log_n
        t0 = time.perf_counter()
        hashlib.scrypt(KEY, salt=os.urandom(32), n=n, r=8, p=1, dklen=32, maxmem=128 * 8 * (n + 3) + MiB)
        out.append(time.perf_counter() - t0)
    return out


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="sam-pack-bench-", dir=args.workdir)
        self.model = os.path.join(self.work, "model")
        self.keyfile = os.path.join(self.work, "key")
        self.passfile = os.path.join(self.work, "passfile")
        self.out_dirs = {"disk": tempfile.mkdtemp(prefix="sam-pack-out-", dir=args.diskdir),
                         "shm": tempfile.mkdtemp(prefix="sam-pack-out-", dir="/dev/shm")}
        self.mounts: dict[str, subprocess.Popen] = {}
        self.verified: set[str] = set()

    @property
    def src(self) -> str:
        return os.path.join(self.model, "model.safetensors")

    def setup(self) -> None:
        os.mkdir(self.model)
        with open(self.keyfile, "wb") as f:
            f.write(KEY + b"\n")
        with open(self.passfile, "w") as f:
            f.write(PASSWORD + "\n")
        log(f"writing {self.args.size / MiB:.0f} MiB of random data to {self.src}")
        with open(self.src, "wb") as f:
            left = self.args.size
            while left:
                block = os.urandom(min(16 * MiB, left))
                f.write(block)
                left -= len(block)
            f.flush()
            os.fsync(f.fileno())

    def warm(self) -> None:
        read_file_fully(self.src)

    # ------------------------------------------------------------------ variants
    def sam(self, target: str, scryptn: int | None, alt: str | None = None) -> dict:
        parent = os.path.join(self.out_dirs[target], "pkg")
        os.mkdir(parent)
        cmd = [sys.executable, "-m", "sam", "pack", self.model, KEY_ID, "--key-file", self.keyfile,
               "--out", parent, "-q"]
        if scryptn is not None:
            cmd += ["--scryptn", str(scryptn)]
        env = None
        if alt is not None:
            path = [alt, os.environ.get("PYTHONPATH")]
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
        try:
            # cwd: the work dir, so that ``-m sam`` does not pick up ./sam of the caller's
            # directory ahead of PYTHONPATH (sys.path[0] is the cwd for ``-m``)
            dt, user, sys_, _ = timed(cmd, env=env, cwd=self.work)
            pkg = os.path.join(parent, KEY_ID)
            if target not in self.verified and alt is None:
                t0 = time.perf_counter()
                timed([sys.executable, "-m", "sam", "verify", pkg, "--key-file", self.keyfile, "-q"])
                self.verified.add(target)
                log(f"sam verify of the {target} package: ok ({time.perf_counter() - t0:.1f} s)")
            cipher = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(pkg) for f in fs)
        finally:
            shutil.rmtree(parent)
        return {"seconds": dt, "mbps": self.args.size / dt / 1e6, "user_s": user, "sys_s": sys_,
                "package_bytes": cipher}

    def gocryptfs(self, target: str) -> dict:
        base = os.path.join(self.out_dirs[target], "gc")
        cipher, mnt = os.path.join(base, "cipher"), os.path.join(base, "mnt")
        os.makedirs(cipher)
        os.mkdir(mnt)
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        try:
            subprocess.run(["gocryptfs", "-init", "-q", "-passfile", self.passfile, cipher], check=True,
                           capture_output=True)
            t_init = time.perf_counter()
            # -fg: the daemon is our child, so its CPU shows up in RUSAGE_CHILDREN when it exits
            proc = subprocess.Popen(["gocryptfs", "-fg", "-q", "-passfile", self.passfile, cipher, mnt],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.mounts[mnt] = proc
            deadline = time.monotonic() + 10
            while not mounted(mnt):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gocryptfs mount failed: {proc.stderr.read().decode()}")
                time.sleep(0.002)
            t_mount = time.perf_counter()
            dst = os.path.join(mnt, "model.safetensors")
            subprocess.run(["cp", self.src, dst], check=True)
            t_cp = time.perf_counter()
            fd = os.open(dst, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            t_sync = time.perf_counter()
            self.unmount(mnt)
            t_end = time.perf_counter()
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cipher_bytes = sum(os.path.getsize(os.path.join(cipher, f)) for f in os.listdir(cipher))
        finally:
            self.unmount(mnt)
            shutil.rmtree(base)
        copy_s = t_sync - t_mount
        return {"seconds": t_end - t0, "mbps": self.args.size / (t_end - t0) / 1e6,
                "init_s": t_init - t0, "mount_s": t_mount - t_init, "cp_s": t_cp - t_mount,
                "fsync_s": t_sync - t_cp, "unmount_s": t_end - t_sync, "copy_fsync_s": copy_s,
                "copy_mbps": self.args.size / copy_s / 1e6, "user_s": r1.ru_utime - r0.ru_utime,
                "sys_s": r1.ru_stime - r0.ru_stime, "package_bytes": cipher_bytes}

    def unmount(self, mnt: str) -> None:
        proc = self.mounts.get(mnt)
        fusermount_u(mnt)
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                stop_pid(proc.pid)
                proc.wait()
            self.mounts.pop(mnt, None)

    def close(self) -> None:
        for mnt in list(self.mounts):
            try:
                self.unmount(mnt)
            except Exception as e:  # every other mount must still be undone
                log(f"warning: unmounting {mnt}: {e}")
        left = [m for m in self.mounts if mounted(m)]
        if left:
            log(f"warning: still mounted: {left}; work dirs left in place")
            return
        for d in (self.work, *self.out_dirs.values()):
            shutil.rmtree(d, ignore_errors=True)


def summarize(samples: list[dict]) -> list[dict]:
    rows = []
    for key in dict.fromkeys((s["target"], s["variant"]) for s in samples):
        mine = [s for s in samples if (s["target"], s["variant"]) == key]
        row = {"target": key[0], "variant": key[1]}
        for field in ("mbps", "seconds", "copy_mbps", "user_s", "sys_s"):
            vals = [s[field] for s in mine if field in s]
            if vals:
                row[field] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
                              "samples": vals}
        row["package_bytes"] = mine[0]["package_bytes"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=parse_size, default=1 << 30)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--targets", default="disk,shm")
    p.add_argument("--no-gocryptfs", action="store_true")
    p.add_argument("--workdir", default="/var/tmp", help="where the model dir is created")
    p.add_argument("--diskdir", default="/tmp", help="parent of the on-disk outputs")
    p.add_argument("--json", type=Path, default=BENCH_DIR / "results" / "sam_pack.json")
    p.add_argument("--compare", metavar="DIR", help="also time DIR/sam (a patched copy), paired")
    args = p.parse_args(argv)
    if os.geteuid() != 0 and not args.no_gocryptfs:
        raise SystemExit("run as root for the gocryptfs rows (or --no-gocryptfs)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` unmounts
    targets = args.targets.split(",")
    variants = (["sam", "sam-n10"] + (["alt", "alt-n10"] if args.compare else [])
                + ([] if args.no_gocryptfs else ["gocryptfs"]))
    started = time.time()
    b = Bench(args)
    samples: list[dict] = []
    try:
        machine = machine_info()
        b.setup()
        log("timing scrypt N=2^17 r=8 p=1 in process")
        scrypt = scrypt_seconds()
        log(f"scrypt: {', '.join(f'{x:.3f}' for x in scrypt)} s")
        combos = [(t, v) for t in targets for v in variants]
        for rnd in range(args.rounds):
            for pos, (target, variant) in enumerate(combos if rnd % 2 == 0 else combos[::-1]):
                b.warm()
                if variant == "gocryptfs":
                    s = b.gocryptfs(target)
                else:
                    s = b.sam(target, 10 if variant.endswith("-n10") else None,
                              args.compare if variant.startswith("alt") else None)
                s.update(round=rnd, position=pos, target=target, variant=variant,
                         loadavg1=float(open("/proc/loadavg").read().split()[0]))
                samples.append(s)
                extra = f", cp+fsync {s['copy_mbps']:.0f} MB/s" if "copy_mbps" in s else ""
                log(f"round {rnd + 1}/{args.rounds} {target:<4} {variant:<9} {s['mbps']:6.0f} MB/s "
                    f"({s['seconds']:.2f} s; cpu user {s['user_s']:.2f} sys {s['sys_s']:.2f}{extra})")
    finally:
        b.close()
    rows = summarize(samples)
    print(f"\n{args.size / MiB:.0f} MiB, {args.rounds} rounds, median [min-max], MB/s = 10^6 B/s; "
          f"scrypt N=2^17 alone: {statistics.median(scrypt):.3f} s\n")
    print("| output | variant | MB/s | seconds | CPU user / sys s |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        m = r["mbps"]
        line = (f"| {r['target']} | {r['variant']} | {m['median']:.0f} [{m['min']:.0f}–{m['max']:.0f}] | "
                f"{r['seconds']['median']:.2f} | {r['user_s']['median']:.2f} / {r['sys_s']['median']:.2f} |")
        print(line)
        if "copy_mbps" in r:
            c = r["copy_mbps"]
            print(f"| {r['target']} | gocryptfs cp+fsync only | "
                  f"{c['median']:.0f} [{c['min']:.0f}–{c['max']:.0f}] | | |")
    write_results(args.json, {"argv": sys.argv[1:], "size_bytes": args.size, "rounds": args.rounds,
                              "targets": targets, "variants": variants, "target_mbps": TARGET_MBPS,
                              "compare": args.compare, "started": started, "scrypt_n17_s": scrypt},
                  machine, rows, samples)
    log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
