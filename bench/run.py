"""Read benchmark: ``cryptfs mount`` against real gocryptfs on a model-sized file.

    python bench/run.py [--size 1G] [--pairs 3] [--out bench/results] [--quick]
                        [--workdir DIR] [--groups seq,mmap,par8,cold] [--configs A,B,...]
                        [--compare DIR] [--keep]

What it does (needs root, fuse3, gocryptfs and openssl on PATH; see bench/README.md):

1. Setup, in a fresh work dir (default under /var/tmp): a passfile, ``gocryptfs -init
   -scryptn 10``, one random file of ``--size`` bytes written through a gocryptfs mount, and
   a plaintext copy of it (for the no-crypto passthrough mount, ``bench/passthrough.py``).
   Both files are fsynced, so the page cache holds them clean. The plaintext copy is also
   packed with ``python -m sam pack --scryptn 10`` (64 KiB chunks) for the ``sam`` rows.
2. Correctness, once: sha256 of what ``cryptfs mount`` returns (C path: read() and private
   mmap; Python path: read()) and of what ``sam mount`` returns (read() and private mmap)
   must equal the sha256 of the plaintext written. A mismatch aborts the run.
3. FUSE workloads in paired, alternating rounds. A group lists the configs it compares;
   in every round each config gets a fresh mount (empty FUSE page cache), the workload,
   and an unmount, one config after the other, the order reversed every other round. So a
   config's samples of one round were taken seconds apart from the others', and ratios are
   taken within a round ("paired") before the median over rounds.
   - ``seq``: first sequential read (1 MiB ``readv`` loop); ``warm``: a second read of the
     same file on the same mount; ``mmap``: private mmap, copied out in 16 MiB slices (the
     safetensors pattern); ``par8``: 8 threads, each ``preadv``-ing its own 1/8 in 1 MiB;
     ``cold``: first read after evicting the ciphertext (``POSIX_FADV_DONTNEED``).
   - The ciphertexts (and plaintext copy) are read once before every hot sample.
   - ``sam``: ``python -m sam mount PKG MNT --key-file F`` at its defaults, which are the
     cryptfs mount's (same FUSE adapter and C block path, 64 KiB chunks instead of 4 KiB
     blocks); its ratio to ``ours`` is the issue-6 target ("as fast as the cryptfs mount").
   - ``--configs`` keeps only the named configs in every group (a reduced run).
   - ``ours-alt`` (only with ``--compare DIR``): ``python -m cryptfs mount`` of another checkout
     DIR (its ``DIR/.venv/bin/python`` if there is one, run in DIR), paired with ``ours`` in
     the same rounds: a before/after of a change. It is verified (sha256) like ``ours``.
4. In-process decryption (no FUSE) with the C block path (1 MiB and 16 MiB calls, also
   one thread), the Python path, and the Sam package's C path (1 MiB calls), each in a
   fresh subprocess, paired with ``openssl speed -evp aes-256-gcm -decrypt`` (one process,
   and ``-multi 2``).
5. ``python -m cryptfs decrypt`` of the cipher dir into a fresh directory against ``cat`` of
   the file through a gocryptfs mount (to a file on the same disk, and to /dev/null).
6. A table on stdout, ``results.json`` (every sample, medians, paired ratios, targets,
   machine info) and ``ratios.png`` in ``--out``.

Every mount this script makes is unmounted in ``finally`` (``fusermount3 -u``, waiting until
it has left /proc/mounts); a server that does not exit is stopped by its PID. Throughput is
MB/s with MB = 10^6 bytes. Nothing here asserts on timings: targets are reported, not enforced.
"""

from __future__ import annotations

import argparse
import ctypes.util
import hashlib
import importlib.metadata
import json
import mmap
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
MiB = 1 << 20
CHUNK = MiB  # read() and pread() size
MMAP_SLICE = 16 * MiB  # copy-out size from the private mapping
PAR_READERS = 8
FILE_NAME = "model.safetensors"  # random bytes; the name only says what it stands for
PASSWORD = "cryptfs-bench-password"
SAM_KEY = "sam-bench-key-0123456789"  # the Sam package's plaintext key (--key-file)
SAM_KEY_ID = "bench-model"
BASELINE = "gocryptfs"  # ratios are taken against real gocryptfs at its defaults
SAM_PAR = 0.95  # "as fast as the cryptfs mount": median paired ratio sam/ours, within 5 %
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class Config:
    name: str
    label: str
    kind: str  # "ours" | "sam" | "gocryptfs" | "passthrough"
    flags: tuple[str, ...] = ()  # extra `python -m cryptfs mount` / passthrough flags
    bdi_kb: int | None = None  # gocryptfs: bdi read_ahead_kb written after mounting


def _ours_default_ra() -> int:
    from cryptfs.core.options import READAHEAD_KB_DEFAULT

    return READAHEAD_KB_DEFAULT


RA_DEFAULT = _ours_default_ra()
CONFIGS = {c.name: c for c in (
    Config("ours", f"cryptfs, C path (defaults: ra {RA_DEFAULT} KiB)", "ours"),
    Config("sam", f"sam mount (package, 64 KiB chunks; defaults: ra {RA_DEFAULT} KiB)", "sam"),
    Config("ours-py", "cryptfs, --block-path python", "ours", ("--block-path", "python")),
    Config("gocryptfs", "gocryptfs 2.3, defaults (ra 128 KiB)", "gocryptfs"),
    Config(f"gocryptfs-ra{RA_DEFAULT}", f"gocryptfs, bdi ra {RA_DEFAULT} KiB", "gocryptfs",
           bdi_kb=RA_DEFAULT),
    Config("ours-ra0", "cryptfs, --readahead-kb 0 (kernel 128 KiB)", "ours", ("--readahead-kb", "0")),
    Config("ours-ra1024", "cryptfs, --readahead-kb 1024", "ours", ("--readahead-kb", "1024")),
    Config("ours-ra4096", "cryptfs, --readahead-kb 4096", "ours", ("--readahead-kb", "4096")),
    Config("passthrough", f"no-crypto passthrough (same FUSE stack, ra {RA_DEFAULT} KiB)", "passthrough"),
)}


@dataclass(frozen=True)
class Group:
    name: str
    workloads: tuple[str, ...]
    configs: tuple[str, ...]


_ALL = ("ours", "sam", "ours-py", BASELINE, f"gocryptfs-ra{RA_DEFAULT}", "ours-ra0", "ours-ra1024",
        "ours-ra4096", "passthrough")
GROUPS = {g.name: g for g in (
    Group("seq", ("seq", "warm"), _ALL),
    Group("mmap", ("mmap",), _ALL),
    Group("par8", ("par8",), ("ours", "sam", "ours-py", BASELINE, f"gocryptfs-ra{RA_DEFAULT}")),
    Group("cold", ("cold",), ("ours", "sam", BASELINE)),
)}
WORKLOAD_LABELS = {
    "seq": "first sequential read (1 MiB read())",
    "warm": "second read, same mount",
    "mmap": "private mmap, 16 MiB copy-out",
    "par8": "8 threads x pread 1 MiB, 1/8 each",
    "cold": "first read, ciphertext cold",
}


# --------------------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([KMGT]?)(i?B?)?", text.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 1G, 256M)")
    return int(m.group(1)) << (10 * " KMGT".index(m.group(2).upper() or " "))


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a command; raise with its output if it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def mounted(mountpoint: str) -> bool:
    with open("/proc/mounts") as f:
        return any(line.split()[1].replace("\\040", " ") == mountpoint for line in f)


def fusermount_u(mp: str, busy_s: float = 20) -> None:
    """Unmount, retrying while busy; after busy_s detach it (lazy) rather than leave it behind."""
    deadline = time.monotonic() + busy_s
    while mounted(mp):
        proc = subprocess.run(["fusermount3", "-u", mp], capture_output=True, text=True)
        if proc.returncode == 0 or not mounted(mp):
            break
        if time.monotonic() > deadline:
            log(f"warning: {mp} stays busy ({proc.stderr.strip()}); lazy unmount")
            subprocess.run(["fusermount3", "-u", "-z", mp], capture_output=True)
            break
        time.sleep(0.1)


def write_results(path: Path, meta: dict, machine: dict, summary, samples) -> None:
    """The JSON envelope every bench script writes: meta, machine (with the load at the end), data."""
    started = meta.pop("started")
    meta = {**meta, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "duration_s": round(time.time() - started, 1)}
    res = {"meta": meta, "machine": dict(machine, loadavg_end=open("/proc/loadavg").read().strip()),
           "summary": summary, "samples": samples}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1) + "\n")


def mount_line(mountpoint: str) -> str:
    with open("/proc/mounts") as f:
        return next((line.strip() for line in f if line.split()[1] == mountpoint), "")


def mount_dev(mountpoint: str) -> str | None:
    """"major:minor" of a mount point, from /proc/self/mountinfo."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[4] == mountpoint:
                return parts[2]
    return None


def bdi_path(mountpoint: str) -> str:
    return f"/sys/class/bdi/{mount_dev(mountpoint)}/read_ahead_kb"


def read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def proc_cpu(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (all its threads), or None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def system_busy_cpu() -> float:
    """CPU seconds all CPUs spent busy (not idle/iowait), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK  # user..steal minus idle and iowait


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def read_file_fully(path: str | os.PathLike, hasher=None) -> int:
    """Sequential read in CHUNK-sized read() calls; returns the byte count."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        while n := os.readv(fd, [buf]):
            if hasher is not None:
                hasher.update(view[:n])
            total += n
    finally:
        os.close(fd)
    return total


def evict(path: str | os.PathLike) -> None:
    """Drop a (clean) file from the page cache; drop_caches is refused in this VM."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def resident_bytes(path: str | os.PathLike) -> int | None:
    """Bytes of the file in the page cache (util-linux fincore), or None if unavailable."""
    try:
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                             capture_output=True, text=True, check=True).stdout
        return int(out.split()[0])
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------- workloads


def wl_seq(path: str, hasher=None) -> int:
    return read_file_fully(path, hasher)


def wl_mmap(path: str, hasher=None) -> int:
    """Private read-only mapping copied out in 16 MiB slices (safetensors + copy to params)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        mm = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    dst = memoryview(bytearray(MMAP_SLICE))
    with mm:
        src = memoryview(mm)
        try:
            for off in range(0, size, MMAP_SLICE):
                n = min(MMAP_SLICE, size - off)
                dst[:n] = src[off : off + n]
                if hasher is not None:
                    hasher.update(dst[:n])
        finally:
            src.release()
    return size


def wl_par(path: str, hasher=None, readers: int = PAR_READERS) -> int:
    """``readers`` threads, each with its own open file, preadv-ing one contiguous share."""
    size = os.stat(path).st_size
    share = -(-size // readers // CHUNK) * CHUNK
    got = [0] * readers
    errors: list[BaseException] = []

    def reader(i: int) -> None:
        try:
            lo, hi = i * share, min(size, (i + 1) * share)
            view = memoryview(bytearray(CHUNK))
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                off = lo
                while off < hi:
                    n = os.preadv(fd, [view[: min(CHUNK, hi - off)]], off)
                    if n <= 0:
                        break
                    off += n
                got[i] = off - lo
            finally:
                os.close(fd)
        except BaseException as e:  # re-raised in the caller
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sum(got)


WORKLOADS = {"seq": wl_seq, "warm": wl_seq, "mmap": wl_mmap, "par8": wl_par, "cold": wl_seq}


# --------------------------------------------------------------------------- mounts


@dataclass
class Mounted:
    config: Config
    mountpoint: str
    pid: int | None  # the FUSE server
    mount_s: float
    bdi_kb: int | None
    options: str
    block_path: str | None = None

    @property
    def file(self) -> str:
        return os.path.join(self.mountpoint, FILE_NAME)


def find_server_pid(mountpoint: str) -> int | None:
    """The daemon serving ``mountpoint``: the process whose argv contains it."""
    want = os.fsencode(mountpoint)
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if want in argv or any(a.endswith(b"=" + want) for a in argv):
            pids.append(int(d))
    return min(pids) if pids else None


class MountManager:
    """Mounts one config at a time and guarantees every mount is undone."""

    def __init__(self, env: Env):
        self.env = env
        self.active: dict[str, int | None] = {}  # mountpoint -> server pid

    def mount(self, cfg: Config, mountpoint: str | None = None, rw: bool = False) -> Mounted:
        env = self.env
        mp = mountpoint or env.mnt
        if cfg.kind == "gocryptfs":
            cmd = ["gocryptfs", *([] if rw else ["-ro"]), "-passfile", env.passfile, env.cipher, mp]
        elif cfg.kind == "ours":
            cmd = [sys.executable, "-m", "cryptfs", "mount", "--passfile", env.passfile,
                   "--log", env.log_path(cfg), *cfg.flags, env.cipher, mp]
        elif cfg.kind == "ours-alt":
            cmd = [env.alt_python, "-m", "cryptfs", "mount", "--passfile", env.passfile,
                   "--log", env.log_path(cfg), *cfg.flags, env.cipher, mp]
        elif cfg.kind == "sam":
            cmd = [sys.executable, "-m", "sam", "mount", "--key-file", env.sam_keyfile,
                   "--log", env.log_path(cfg), *cfg.flags, env.sam_pkg, mp]
        else:
            cmd = [sys.executable, str(BENCH_DIR / "passthrough.py"), "--log", env.log_path(cfg),
                   *cfg.flags, env.plain, mp]
        t0 = time.perf_counter()
        self.active[mp] = None  # registered first: a half-done mount is still cleaned up
        run(cmd, cwd=env.alt_dir if cfg.kind == "ours-alt" else None)
        deadline = time.monotonic() + 10
        while not mounted(mp):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cfg.name}: {mp} did not appear in /proc/mounts")
            time.sleep(0.005)
        mount_s = time.perf_counter() - t0
        pid = find_server_pid(mp)
        self.active[mp] = pid
        if cfg.bdi_kb is not None:
            with open(bdi_path(mp), "w") as f:
                f.write(str(cfg.bdi_kb))
        m = Mounted(cfg, mp, pid, mount_s, read_int(bdi_path(mp)), mount_line(mp))
        if cfg.kind != "gocryptfs":
            m.block_path = env.logged_block_path(cfg)
        return m

    def unmount(self, mp: str) -> None:
        pid = self.active.get(mp)
        fusermount_u(mp)
        deadline = time.monotonic() + 10
        while mounted(mp) and time.monotonic() < deadline:
            time.sleep(0.01)
        if pid is not None:
            stop_pid(pid)
        self.active.pop(mp, None)

    def close(self) -> None:
        for mp in list(self.active):
            try:
                self.unmount(mp)
            except Exception as e:  # keep going: every other mount must still be undone
                log(f"warning: unmounting {mp}: {e}")


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_pid(pid: int, grace: float = 10.0) -> None:
    """Wait for a server to exit after its unmount; SIGTERM, then SIGKILL, by PID."""
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            log(f"warning: server {pid} still running after unmount; sending {sig.name}")
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
        deadline = time.monotonic() + grace
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if not pid_alive(pid):
            return


# --------------------------------------------------------------------------- environment


@dataclass
class Env:
    work: str
    size: int
    sha256: str = ""

    def __post_init__(self) -> None:
        self.passfile = os.path.join(self.work, "passfile")
        self.cipher = os.path.join(self.work, "cipher")
        self.plain = os.path.join(self.work, "plain")
        self.mnt = os.path.join(self.work, "mnt")
        self.logs = os.path.join(self.work, "logs")
        self.cipher_file = ""
        self.sam_keyfile = os.path.join(self.work, "sam-key")
        self.sam_pkg = os.path.join(self.work, "sam", SAM_KEY_ID)
        self.alt_dir: str | None = None  # --compare: the other checkout

    @property
    def alt_python(self) -> str:
        venv = os.path.join(self.alt_dir or "", ".venv", "bin", "python")
        return venv if os.path.exists(venv) else sys.executable

    def log_path(self, cfg: Config) -> str:
        return os.path.join(self.logs, f"{cfg.name}.log")

    def logged_block_path(self, cfg: Config) -> str | None:
        """The block path the last mount of ``cfg`` reported in its log."""
        try:
            with open(self.log_path(cfg)) as f:
                found = re.findall(r"block path: (.+)", f.read())
        except OSError:
            return None
        return found[-1].strip() if found else None

    @property
    def plain_file(self) -> str:
        return os.path.join(self.plain, FILE_NAME)

    @property
    def sam_file(self) -> str:
        return os.path.join(self.sam_pkg, FILE_NAME)

    def source_file(self, cfg: Config) -> str:
        """The backing file a config's mount reads (what the cold rows evict)."""
        return {"sam": self.sam_file, "passthrough": self.plain_file}.get(cfg.kind, self.cipher_file)

    def warm(self) -> None:
        """Make the ciphertexts and the plaintext copy hot in the page cache."""
        read_file_fully(self.cipher_file)
        read_file_fully(self.plain_file)
        if os.path.exists(self.sam_file):
            read_file_fully(self.sam_file)


def setup(env: Env, mounts: MountManager) -> None:
    for d in (env.cipher, env.plain, env.mnt, env.logs):
        os.mkdir(d)
    with open(env.passfile, "w") as f:
        f.write(PASSWORD + "\n")
    run(["gocryptfs", "-init", "-q", "-scryptn", "10", "-passfile", env.passfile, env.cipher])
    log(f"writing {env.size / MiB:.0f} MiB of random data through a gocryptfs mount")
    m = mounts.mount(CONFIGS[BASELINE], rw=True)
    sha = hashlib.sha256()
    t0 = time.perf_counter()
    try:
        with open(os.path.join(env.mnt, FILE_NAME), "wb") as enc, open(env.plain_file, "wb") as plain:
            left = env.size
            while left:
                block = os.urandom(min(16 * MiB, left))
                sha.update(block)
                enc.write(block)
                plain.write(block)
                left -= len(block)
            plain.flush()
            os.fsync(plain.fileno())
    finally:
        mounts.unmount(m.mountpoint)
    env.sha256 = sha.hexdigest()
    names = [n for n in os.listdir(env.cipher) if not n.startswith("gocryptfs.")]
    if len(names) != 1:
        raise RuntimeError(f"expected one file in the cipher dir, found {names}")
    env.cipher_file = os.path.join(env.cipher, names[0])
    fd = os.open(env.cipher_file, os.O_RDONLY)
    try:
        os.fsync(fd)  # clean pages: fadvise(DONTNEED) can then evict them for the cold rows
    finally:
        os.close(fd)
    with open(env.sam_keyfile, "w") as f:
        f.write(SAM_KEY + "\n")
    os.mkdir(os.path.dirname(env.sam_pkg))
    t1 = time.perf_counter()
    run([sys.executable, "-m", "sam", "pack", env.plain, SAM_KEY_ID, "--key-file", env.sam_keyfile,
         "--out", os.path.dirname(env.sam_pkg), "--scryptn", "10", "-q"])
    log(f"sam pack of the plaintext copy: {time.perf_counter() - t1:.1f} s, "
        f"{os.path.getsize(env.sam_file)} bytes")
    log(f"setup done in {time.perf_counter() - t0:.1f} s; ciphertext {os.path.getsize(env.cipher_file)} "
        f"bytes, sha256(plain) {env.sha256[:16]}...")


def verify(env: Env, mounts: MountManager) -> dict:
    """sha256 of what cryptfs serves must equal the plaintext's; raises otherwise."""
    out = {}
    checks = [("ours", "read", wl_seq), ("ours", "mmap", wl_mmap), ("ours-py", "read", wl_seq),
              ("sam", "read", wl_seq), ("sam", "mmap", wl_mmap)]
    if env.alt_dir:
        checks += [("ours-alt", "read", wl_seq), ("ours-alt", "mmap", wl_mmap)]
    for name, how, fn in checks:
        env.warm()
        m = mounts.mount(CONFIGS[name])
        try:
            c_path = m.block_path is None or m.block_path.startswith("c")
            if name in ("ours", "ours-alt", "sam") and not c_path:
                raise RuntimeError(f"{name} mounted with block path {m.block_path!r}, expected c")
            h = hashlib.sha256()
            n = fn(m.file, h)
        finally:
            mounts.unmount(m.mountpoint)
        ok = n == env.size and h.hexdigest() == env.sha256
        out[f"{name}/{how}"] = {"bytes": n, "sha256": h.hexdigest(), "ok": ok,
                                "block_path": m.block_path}
        log(f"verify {name} {how}: {'ok' if ok else 'MISMATCH'} (block path {m.block_path})")
        if not ok:
            raise RuntimeError(f"DATA MISMATCH: {name} {how} returned {n} bytes with sha256 "
                               f"{h.hexdigest()}, expected {env.size} bytes {env.sha256}")
    return out


# --------------------------------------------------------------------------- FUSE rounds


def measure(fn, path: str, server_pid: int | None) -> dict:
    """Run one workload; throughput plus where the CPU time went (server, reader, whole box)."""
    s0, c0, b0, la = proc_cpu(server_pid), self_cpu(), system_busy_cpu(), loadavg()
    t0 = time.perf_counter()
    n = fn(path)
    dt = time.perf_counter() - t0
    s1, c1, b1 = proc_cpu(server_pid), self_cpu(), system_busy_cpu()
    server = None if s0 is None or s1 is None else s1 - s0
    # busy CPU outside the server and the reader: other tenants, kworkers, this script's setup
    other = b1 - b0 - (c1 - c0) - (server or 0.0)
    return {"bytes": n, "seconds": dt, "mbps": n / dt / 1e6, "server_cpu_s": server,
            "client_cpu_s": c1 - c0, "other_busy_cpu_s": other, "box_busy_cpu_s": b1 - b0,
            "loadavg1": la}


def run_sample(group: Group, cfg: Config, env: Env, mounts: MountManager) -> list[dict]:
    cold = group.name == "cold"
    env.warm()
    resident = None
    if cold:
        evict(env.source_file(cfg))
        resident = resident_bytes(env.source_file(cfg))
    m = mounts.mount(cfg)
    try:
        samples = []
        for wl in group.workloads:
            s = measure(WORKLOADS[wl], m.file, m.pid)
            if s["bytes"] != env.size:
                raise RuntimeError(f"{cfg.name} {wl}: read {s['bytes']} bytes, expected {env.size}")
            s.update(workload=wl, config=cfg.name, mount_s=m.mount_s, bdi_read_ahead_kb=m.bdi_kb,
                     block_path=m.block_path)
            if cold:
                s["cipher_resident_before"] = resident
            samples.append(s)
        return samples
    finally:
        mounts.unmount(m.mountpoint)


def fuse_rounds(env: Env, mounts: MountManager, groups: list[Group], pairs: int) -> list[dict]:
    samples = []
    for rnd in range(pairs):
        for group in groups:
            order = list(group.configs) if rnd % 2 == 0 else list(reversed(group.configs))
            for pos, name in enumerate(order):
                for s in run_sample(group, CONFIGS[name], env, mounts):
                    s.update(round=rnd, position=pos, group=group.name)
                    samples.append(s)
                    log(f"round {rnd + 1}/{pairs} {s['workload']:<5} {name:<16} {s['mbps']:8.0f} MB/s"
                        f"  (cpu s: server {_fmt(s['server_cpu_s'])}, reader {s['client_cpu_s']:.2f}, "
                        f"others {s['other_busy_cpu_s']:.2f}; ra {s['bdi_read_ahead_kb']} KiB)")
    return samples


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


# --------------------------------------------------------------------------- in-process


INPROC_VARIANTS = {
    "c-1MiB": {"block_path": "c", "chunk": MiB, "threads": None},
    "c-16MiB": {"block_path": "c", "chunk": 16 * MiB, "threads": None},
    "c-1MiB-1thread": {"block_path": "c", "chunk": MiB, "threads": 0},
    "python-1MiB": {"block_path": "python", "chunk": MiB, "threads": None},
    "sam-c-1MiB": {"block_path": "c", "chunk": MiB, "threads": None, "format": "sam"},
}
OPENSSL_VARIANTS = {
    "openssl-16384": ["-bytes", "16384"],
    "openssl-multi2-16384": ["-multi", "2", "-bytes", "16384"],
    "openssl-4096": ["-bytes", "4096"],
    "openssl-multi2-4096": ["-multi", "2", "-bytes", "4096"],  # the format's block size
}


def add_compare(alt_dir: str) -> None:
    """Register ``ours-alt`` (another checkout's cryptfs mount) next to ``ours`` in every group."""
    CONFIGS["ours-alt"] = Config("ours-alt", f"cryptfs of {alt_dir} (--compare), defaults", "ours-alt")
    for name, g in GROUPS.items():
        if "ours" in g.configs and "ours-alt" not in g.configs:
            i = g.configs.index("ours") + 1
            GROUPS[name] = Group(g.name, g.workloads, (*g.configs[:i], "ours-alt", *g.configs[i:]))


def keep_configs(names: list[str]) -> None:
    """Reduce every group to the named configs (their order kept); drop groups left empty."""
    for name, g in list(GROUPS.items()):
        kept = tuple(c for c in g.configs if c in names)
        if kept:
            GROUPS[name] = Group(g.name, g.workloads, kept)
        else:
            del GROUPS[name]


def inproc_worker(spec: dict) -> dict:
    """Runs in a fresh interpreter: decrypt the whole file with ContentCodec.read_into."""
    from cryptfs.content import ContentCodec
    from cryptfs.core import chunks
    from cryptfs.password import KeySource
    from cryptfs.tree import open_tree

    if spec["threads"] is not None:
        chunks.set_decrypt_threads(spec["threads"])  # before first use: the pool never shrinks
    if spec.get("format") == "sam":
        return inproc_worker_sam(spec)
    tree = open_tree(spec["cipherdir"], KeySource([spec["passfile"]]), block_path=spec["block_path"])
    codec = ContentCodec(tree.content.aead, spec["block_path"])
    if codec.block_path != spec["block_path"]:
        raise RuntimeError(f"asked for block path {spec['block_path']}, got {codec.block_path}")
    fd = os.open(spec["cipher_file"], os.O_RDONLY)
    cipher_size = os.fstat(fd).st_size
    plain_size = codec.plain_size(cipher_size)
    file_id = codec.read_file_id(fd)
    out = memoryview(bytearray(spec["chunk"]))
    codec.read_into(fd, file_id, cipher_size, 0, out)  # warm-up: pool threads, contexts
    c0 = self_cpu()
    t0 = time.perf_counter()
    off = 0
    while off < plain_size:
        n = codec.read_into(fd, file_id, cipher_size, off, out)
        if n <= 0:
            break
        off += n
    dt = time.perf_counter() - t0
    os.close(fd)
    if off != plain_size:
        raise RuntimeError(f"decrypted {off} of {plain_size} bytes")
    return {"bytes": off, "seconds": dt, "mbps": off / dt / 1e6, "cpu_s": self_cpu() - c0}


def inproc_worker_sam(spec: dict) -> dict:
    """The Sam package's C path: PlainFile.read_into (PackageCodec, 64 KiB chunks) over the file."""
    from sam.keys import read_key_file
    from sam.package import Package

    pkg = Package.open(spec["sam_pkg"]).unlock(bytes(read_key_file(spec["sam_keyfile"])), spec["block_path"])
    if pkg.codec.block_path != spec["block_path"]:
        raise RuntimeError(f"asked for block path {spec['block_path']}, got {pkg.codec.block_path}")
    out = memoryview(bytearray(spec["chunk"]))
    with pkg.open(FILE_NAME) as f:
        f.read_into(0, out)  # warm-up: pool threads, contexts
        c0 = self_cpu()
        t0 = time.perf_counter()
        off = 0
        while off < f.plain_size:
            n = f.read_into(off, out)
            if n <= 0:
                break
            off += n
        dt = time.perf_counter() - t0
        if off != f.plain_size:
            raise RuntimeError(f"decrypted {off} of {f.plain_size} bytes")
    return {"bytes": off, "seconds": dt, "mbps": off / dt / 1e6, "cpu_s": self_cpu() - c0}


def openssl_speed(args: list[str], seconds: int) -> dict:
    cmd = ["openssl", "speed", "-seconds", str(seconds), "-evp", "aes-256-gcm", "-decrypt", *args]
    out = run(cmd).stdout
    rows = re.findall(r"^AES-256-GCM\s+([\d.]+)k\s*$", out, re.M)
    if not rows:
        raise RuntimeError(f"cannot parse openssl speed output:\n{out}")
    return {"mbps": float(rows[-1]) * 1000 / 1e6, "cmd": " ".join(cmd)}


def inprocess_rounds(env: Env, pairs: int, openssl_seconds: int) -> list[dict]:
    names = list(INPROC_VARIANTS) + list(OPENSSL_VARIANTS)
    samples = []
    for rnd in range(pairs):
        order = names if rnd % 2 == 0 else list(reversed(names))
        for pos, name in enumerate(order):
            env.warm()
            if name in INPROC_VARIANTS:
                spec = dict(INPROC_VARIANTS[name], cipherdir=env.cipher, passfile=env.passfile,
                            cipher_file=env.cipher_file, sam_pkg=env.sam_pkg, sam_keyfile=env.sam_keyfile)
                proc = run([sys.executable, __file__, "--inproc-worker", json.dumps(spec)])
                s = json.loads(proc.stdout.strip().splitlines()[-1])
            else:
                s = openssl_speed(OPENSSL_VARIANTS[name], openssl_seconds)
            s.update(variant=name, round=rnd, position=pos, loadavg1=loadavg())
            samples.append(s)
            log(f"round {rnd + 1}/{pairs} in-process {name:<22} {s['mbps']:8.0f} MB/s")
    return samples


# --------------------------------------------------------------------------- decrypt vs cat


def decrypt_vs_cat(env: Env, mounts: MountManager, pairs: int) -> list[dict]:
    outdir = os.path.join(env.work, "decrypted")
    catfile = os.path.join(env.work, "cat.out")
    names = ["cryptfs-decrypt", "gocryptfs-cat-to-file", "gocryptfs-cat-to-devnull"]
    samples = []
    for rnd in range(pairs):
        order = names if rnd % 2 == 0 else list(reversed(names))
        for pos, name in enumerate(order):
            env.warm()
            s: dict = {"variant": name, "round": rnd, "position": pos, "loadavg1": loadavg()}
            if name == "cryptfs-decrypt":
                cmd = [sys.executable, "-m", "cryptfs", "decrypt", "-q", "--passfile", env.passfile,
                       env.cipher, outdir]
                ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                run(cmd)
                dt = time.perf_counter() - t0
                ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                if rnd == 0:
                    h = hashlib.sha256()
                    read_file_fully(os.path.join(outdir, FILE_NAME), h)
                    s["sha256_ok"] = h.hexdigest() == env.sha256
                    if not s["sha256_ok"]:
                        raise RuntimeError("DATA MISMATCH: cryptfs decrypt output differs from the plaintext")
                shutil.rmtree(outdir)
                s["note"] = "whole CLI run: interpreter start, scrypt (N=2^10), decrypt, write"
            else:
                m = mounts.mount(CONFIGS[BASELINE])
                try:
                    dst = catfile if name.endswith("file") else os.devnull
                    with open(dst, "wb") as f:
                        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                        t0 = time.perf_counter()
                        subprocess.run(["cat", m.file], stdout=f, check=True)
                        dt = time.perf_counter() - t0
                        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                finally:
                    mounts.unmount(m.mountpoint)
                if os.path.exists(catfile):
                    os.unlink(catfile)
                s.update(mount_s=m.mount_s, note="cat only (mount time excluded, see mount_s)")
            # CPU of the decrypt CLI, or of cat (the gocryptfs daemon is not our child)
            s.update(seconds=dt, mbps=env.size / dt / 1e6, child_user_s=ru1.ru_utime - ru0.ru_utime,
                     child_sys_s=ru1.ru_stime - ru0.ru_stime)
            samples.append(s)
            log(f"round {rnd + 1}/{pairs} {name:<26} {s['mbps']:8.0f} MB/s (user {s['child_user_s']:.2f} s, "
                f"sys {s['child_sys_s']:.2f} s)")
    return samples


# --------------------------------------------------------------------------- summary


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values), "samples": values}


def paired_ratios(samples: list[dict], key: str, a: str, b: str, wl_key: str = "workload",
                  workload: str | None = None) -> list[float]:
    """Per-round ratio sample(a) / sample(b) (same workload, same round)."""
    def by_round(name: str) -> dict[int, float]:
        return {s["round"]: s["mbps"] for s in samples
                if s[key] == name and (workload is None or s[wl_key] == workload)}

    ra, rb = by_round(a), by_round(b)
    return [ra[r] / rb[r] for r in sorted(ra) if r in rb]


def summarize_fuse(samples: list[dict]) -> list[dict]:
    rows = []
    for wl in WORKLOADS:
        for name in CONFIGS:
            vals = [s["mbps"] for s in samples if s["workload"] == wl and s["config"] == name]
            if not vals:
                continue
            row = {"workload": wl, "config": name, "mbps": spread(vals)}
            for base in (BASELINE, f"gocryptfs-ra{RA_DEFAULT}", "passthrough", "ours"):
                r = paired_ratios(samples, "config", name, base, workload=wl)
                if r and name != base:
                    row[f"ratio_vs_{base}"] = spread(r)
            srv = [s["server_cpu_s"] for s in samples
                   if s["workload"] == wl and s["config"] == name and s["server_cpu_s"] is not None]
            cli = [s["client_cpu_s"] for s in samples if s["workload"] == wl and s["config"] == name]
            secs = [s["seconds"] for s in samples if s["workload"] == wl and s["config"] == name]
            mine = [s for s in samples if s["workload"] == wl and s["config"] == name]
            row["median_server_cpu_s"] = statistics.median(srv) if srv else None
            row["median_client_cpu_s"] = statistics.median(cli)
            row["median_other_busy_cpu_s"] = statistics.median(s["other_busy_cpu_s"] for s in mine)
            row["median_seconds"] = statistics.median(secs)
            row["median_mount_s"] = statistics.median(s["mount_s"] for s in mine)
            rows.append(row)
    return rows


def summarize_variants(samples: list[dict], base: str) -> list[dict]:
    rows = []
    for name in dict.fromkeys(s["variant"] for s in samples):
        row = {"variant": name, "mbps": spread([s["mbps"] for s in samples if s["variant"] == name])}
        r = paired_ratios(samples, "variant", name, base)
        if r and name != base:
            row[f"ratio_vs_{base}"] = spread(r)
        rows.append(row)
    return rows


def evaluate_targets(fuse: list[dict], inproc: list[dict], dec: list[dict]) -> list[dict]:
    def ratio(samples, key, a, b, wl=None):
        return paired_ratios(samples, key, a, b, workload=wl) if samples else []

    checks = [
        ("first sequential read >= 1.5x gocryptfs defaults", 1.5,
         ratio(fuse, "config", "ours", BASELINE, "seq")),
        ("first sequential read >= 0.9x no-crypto passthrough FUSE (aim)", 0.9,
         ratio(fuse, "config", "ours", "passthrough", "seq")),
        ("private-mmap read >= 1.3x gocryptfs defaults", 1.3,
         ratio(fuse, "config", "ours", BASELINE, "mmap")),
        ("warm re-read >= 5x gocryptfs defaults", 5.0,
         ratio(fuse, "config", "ours", BASELINE, "warm")),
        ("in-process C decrypt (16 MiB calls) >= 0.9x openssl speed -multi 2", 0.9,
         ratio(inproc, "variant", "c-16MiB", "openssl-multi2-16384")),
        ("in-process C decrypt (1 MiB calls, as the mount uses) >= 0.9x openssl speed -multi 2", 0.9,
         ratio(inproc, "variant", "c-1MiB", "openssl-multi2-16384")),
        ("pure-Python path (first read through FUSE) >= 0.5x gocryptfs defaults", 0.5,
         ratio(fuse, "config", "ours-py", BASELINE, "seq")),
        *[(f"sam mount as fast as the cryptfs mount (>= {SAM_PAR}x): {wl}", SAM_PAR,
           ratio(fuse, "config", "sam", "ours", wl)) for wl in WORKLOADS],
    ]
    out = []
    for name, target, values in checks:
        if not values:
            continue
        med = statistics.median(values)
        out.append({"target": name, "threshold": target, "paired_ratios": values, "median": med,
                    "min": min(values), "max": max(values), "met": med >= target,
                    "met_in_every_pair": min(values) >= target})
    records = [
        *[(f"record only: sam mount vs gocryptfs defaults: {wl}", ratio(fuse, "config", "sam", BASELINE, wl))
          for wl in WORKLOADS],
        ("record only: in-process sam C path vs cryptfs C path (1 MiB calls)",
         ratio(inproc, "variant", "sam-c-1MiB", "c-1MiB")),
        ("record only: cryptfs decrypt vs cat through gocryptfs (to a file)",
         ratio(dec, "variant", "cryptfs-decrypt", "gocryptfs-cat-to-file")),
        ("context: in-process C (16 MiB calls) vs openssl -multi 2 -bytes 4096 (the format's block size)",
         ratio(inproc, "variant", "c-16MiB", "openssl-multi2-4096")),
        ("context: in-process C, one thread vs openssl -bytes 4096 (one core)",
         ratio(inproc, "variant", "c-1MiB-1thread", "openssl-4096")),
    ]
    for name, values in records:
        if values:
            out.append({"target": name, "threshold": None, "paired_ratios": values,
                        "median": statistics.median(values), "min": min(values), "max": max(values),
                        "met": None, "met_in_every_pair": None})
    return out


def fmt_spread(d: dict | None, fmt: str = "{:.2f}") -> str:
    if not d:
        return ""
    return f"{fmt.format(d['median'])} [{fmt.format(d['min'])}-{fmt.format(d['max'])}]"


def print_report(res: dict) -> None:
    ra = f"gocryptfs-ra{RA_DEFAULT}"
    print(f"\nFUSE reads of a {res['meta']['size_bytes'] / MiB:.0f} MiB file, median [min-max] over "
          f"{res['meta']['pairs']} paired rounds; MB/s = 10^6 B/s; ratios are per round\n")
    head = (f"{'workload':<6} {'config':<18} {'MB/s':>22} {'x gocryptfs':>20} {'x ' + ra:>20} "
            f"{'x passthrough':>20} {'x ours':>20} {'srv cpu s':>9}")
    print(head)
    print("-" * len(head))
    for row in res["fuse"]["summary"]:
        print(f"{row['workload']:<6} {row['config']:<18} {fmt_spread(row['mbps'], '{:.0f}'):>22} "
              f"{fmt_spread(row.get('ratio_vs_' + BASELINE)):>20} "
              f"{fmt_spread(row.get('ratio_vs_' + ra)):>20} "
              f"{fmt_spread(row.get('ratio_vs_passthrough')):>20} {fmt_spread(row.get('ratio_vs_ours')):>20} "
              f"{_fmt(row['median_server_cpu_s']):>9}")
    for title, key, base in (("In-process decryption (no FUSE)", "inprocess", "openssl-multi2-16384"),
                             ("cryptfs decrypt vs cat through gocryptfs", "decrypt_vs_cat",
                              "gocryptfs-cat-to-file")):
        if not res[key]["summary"]:
            continue
        print(f"\n{title}")
        for row in res[key]["summary"]:
            print(f"  {row['variant']:<26} {fmt_spread(row['mbps'], '{:.0f}'):>22} MB/s"
                  f"  {fmt_spread(row.get('ratio_vs_' + base)):>20} x {base}")
    print("\nTargets (median of paired ratios)")
    for t in res["targets"]:
        verdict = "record" if t["met"] is None else ("MET" if t["met"] else "missed")
        print(f"  {verdict:<7} {t['median']:5.2f}x [{t['min']:.2f}-{t['max']:.2f}]  {t['target']}")


TARGET_MARKS = {("seq", "ours"): 1.5, ("mmap", "ours"): 1.3, ("warm", "ours"): 5.0, ("seq", "ours-py"): 0.5}


def draw_chart(res: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no chart (pip install matplotlib)")
        return
    rows = [r for r in res["fuse"]["summary"] if f"ratio_vs_{BASELINE}" in r]
    inproc = [r for r in res["inprocess"]["summary"]]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 9), gridspec_kw={"width_ratios": [3, 2]})
    colors = {"seq": "tab:blue", "warm": "tab:green", "mmap": "tab:orange", "par8": "tab:purple",
              "cold": "tab:gray"}
    labels, meds, lo, hi, cols = [], [], [], [], []
    for r in rows:
        d = r[f"ratio_vs_{BASELINE}"]
        labels.append(f"{r['workload']}: {r['config']}")
        meds.append(d["median"])
        lo.append(d["median"] - d["min"])
        hi.append(d["max"] - d["median"])
        cols.append(colors.get(r["workload"], "black"))
    y = range(len(rows))
    bars = ax.barh(list(y), meds, xerr=[lo, hi], color=cols, capsize=2)
    ours = {r["workload"]: r[f"ratio_vs_{BASELINE}"]["median"] for r in rows if r["config"] == "ours"}
    sam_rows = [i for i, r in enumerate(rows) if r["config"] == "sam"]
    for i in sam_rows:  # the Sam package mount: hatched, with the cryptfs mount's bar as its target
        bars[i].set_hatch("///")
        bars[i].set_edgecolor("white")
    par = [(ours[rows[i]["workload"]], i) for i in sam_rows if rows[i]["workload"] in ours]
    if par:
        ax.scatter([x for x, _ in par], [i for _, i in par], marker="D", s=25, color="black", zorder=3,
                   label="cryptfs mount, same workload (the sam target)")
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ticks = [0.25, 0.5, 1, 1.5, 2, 3, 5, 10]
    ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    ax.minorticks_off()
    ax.axvline(1.0, color="black", lw=0.8)
    marks = [(i, TARGET_MARKS[(r["workload"], r["config"])]) for i, r in enumerate(rows)
             if (r["workload"], r["config"]) in TARGET_MARKS]
    if marks:
        ax.scatter([t for _, t in marks], [i for i, _ in marks], marker="|", s=300, color="red",
                   zorder=3, label="target")
    if marks or par:  # below the axis: bars reach both the left and the right edge
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=2, fontsize=8, frameon=False)
    ax.set_xlabel("throughput / gocryptfs defaults (median of paired rounds, bars: min-max)")
    ax.set_title("FUSE reads vs gocryptfs 2.3 defaults", fontsize=10)
    for i, (x, up) in enumerate(zip(meds, hi, strict=True)):
        vs_ours = rows[i].get("ratio_vs_ours") if rows[i]["config"] == "sam" else None
        note = f" ({vs_ours['median']:.2f}x cryptfs, paired)" if vs_ours else ""
        ax.text((x + up) * 1.04, i, f"{x:.2f}{note}", va="center", fontsize=7)
    if inproc:
        names = [r["variant"] for r in inproc]
        vals = [r["mbps"]["median"] for r in inproc]
        err = [[r["mbps"]["median"] - r["mbps"]["min"] for r in inproc],
               [r["mbps"]["max"] - r["mbps"]["median"] for r in inproc]]
        ax2.barh(names, vals, xerr=err, capsize=2,
                 color=["tab:red" if n.startswith("openssl") else "tab:cyan" if n.startswith("sam")
                        else "tab:blue" for n in names])
        ax2.invert_yaxis()
        ax2.set_xlabel("MB/s (in-process, no FUSE)")
        ax2.set_title("decryption throughput", fontsize=10)
        ax2.tick_params(axis="y", labelsize=8)
    m = res["machine"]
    fig.suptitle(f"cryptfs + sam bench: {res['meta']['size_bytes'] / MiB:.0f} MiB file, "
                 f"{res['meta']['pairs']} pairs; {m['cpu_model']}, {m['nproc']} CPUs, kernel {m['kernel']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# --------------------------------------------------------------------------- machine


def _cmd_out(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unavailable"


def machine_info() -> dict:
    info: dict = {}
    with open("/proc/cpuinfo") as f:
        cpuinfo = f.read()
    m = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    info["cpu_model"] = m.group(1).strip() if m else platform.processor()
    flags = set(re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M).group(1).split())
    wanted = {"aes", "vaes", "pclmulqdq", "vpclmulqdq", "avx2", "avx512f", "sha_ni"}
    info["cpu_flags"] = sorted(flags & wanted)
    info["nproc"] = os.cpu_count()
    with open("/proc/meminfo") as f:
        kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
    info["ram_gib"] = round(kb / 1024 / 1024, 1)
    info["kernel"] = platform.release()
    lib = ctypes.util.find_library("fuse3")
    real = None
    if lib:
        for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib/x86_64-linux-gnu"):
            if os.path.exists(os.path.join(d, lib)):
                real = os.path.basename(os.path.realpath(os.path.join(d, lib)))
                break
    info["libfuse"] = f"{real or lib}; {_cmd_out(['fusermount3', '-V'])}"
    info["openssl_cli"] = _cmd_out(["openssl", "version"])
    from cryptfs.core import chunks

    info["openssl_c_block_path"] = chunks.openssl_version() or "C block path not built"
    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        info["openssl_python_path"] = (f"cryptography {importlib.metadata.version('cryptography')}, "
                                       f"{backend.openssl_version_text()}")
    except Exception as e:  # informational only
        info["openssl_python_path"] = f"unknown ({e})"
    info["gocryptfs"] = _cmd_out(["gocryptfs", "-version"])
    info["python"] = sys.version.split()[0]
    info["mfusepy"] = importlib.metadata.version("mfusepy")
    info["cryptfs_commit"] = _cmd_out(["git", "-C", str(BENCH_DIR.parent), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(BENCH_DIR.parent), "status", "--porcelain", "--", "cryptfs",
                            "sam"], capture_output=True, text=True).stdout.strip()
    info["cryptfs_tree_dirty"] = bool(dirty)
    info["ext4_backing"] = _cmd_out(["findmnt", "-no", "FSTYPE,SOURCE", "--target", "/var/tmp"])
    info["loadavg_start"] = open("/proc/loadavg").read().strip()
    return info


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Paired read benchmark: cryptfs mount vs gocryptfs.",
                                epilog="See bench/README.md for the method and the latest results.")
    p.add_argument("--size", type=parse_size, default=None, help="test file size (default 1G; --quick 256M)")
    p.add_argument("--pairs", type=int, default=None, help="paired rounds (default 3; --quick 1)")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results",
                   help="results dir (default bench/results)")
    p.add_argument("--workdir", default="/var/tmp", help="where the temporary work dir is created")
    p.add_argument("--quick", action="store_true", help="smoke run: 256 MiB, 1 pair, short openssl runs")
    p.add_argument("--groups", default=",".join(GROUPS),
                   help=f"FUSE workload groups to run (default {','.join(GROUPS)})")
    p.add_argument("--configs", default=None,
                   help="keep only these configs in every group (comma-separated; default all)")
    p.add_argument("--compare", metavar="DIR", default=None,
                   help="also mount another checkout's cryptfs (config ours-alt), paired with ours")
    p.add_argument("--skip-inprocess", action="store_true", help="no in-process/openssl measurements")
    p.add_argument("--skip-decrypt", action="store_true", help="no cryptfs decrypt vs cat measurement")
    p.add_argument("--keep", action="store_true", help="keep the work dir (for debugging)")
    p.add_argument("--inproc-worker", metavar="JSON", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.size = args.size or (256 * MiB if args.quick else 1 << 30)
    args.pairs = args.pairs or (1 if args.quick else 3)
    if args.pairs < 1 or args.size < MiB:
        p.error("--pairs must be >= 1 and --size >= 1M")
    unknown = set(args.groups.split(",")) - set(GROUPS)
    if unknown:
        p.error(f"unknown groups {sorted(unknown)}; choose from {','.join(GROUPS)}")
    if args.compare:
        args.compare = os.path.abspath(args.compare)
        if not os.path.isdir(os.path.join(args.compare, "cryptfs")):
            p.error(f"--compare {args.compare}: no cryptfs/ package there")
        add_compare(args.compare)
    if args.configs:
        names = args.configs.split(",")
        unknown = set(names) - set(CONFIGS)
        if unknown:
            p.error(f"unknown configs {sorted(unknown)}; choose from {','.join(CONFIGS)}")
        keep_configs(names)
        missing = [g for g in args.groups.split(",") if g not in GROUPS]
        if missing:
            p.error(f"groups {missing} have none of the configs {args.configs}")
    return args


def preflight() -> None:
    missing = [t for t in ("gocryptfs", "fusermount3", "openssl", "fincore") if not shutil.which(t)]
    if missing:
        raise SystemExit(f"missing tools: {', '.join(missing)}")
    if os.geteuid() != 0:
        raise SystemExit("run as root: the bdi read_ahead_kb of a mount is root-only")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.inproc_worker:
        print(json.dumps(inproc_worker(json.loads(args.inproc_worker))))
        return 0
    preflight()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` unmounts
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    work = tempfile.mkdtemp(prefix="cryptfs-bench-", dir=args.workdir)
    env = Env(work, args.size)
    env.alt_dir = args.compare
    mounts = MountManager(env)
    groups = [GROUPS[g] for g in args.groups.split(",")]
    res: dict = {"meta": {"argv": sys.argv[1:], "size_bytes": args.size, "pairs": args.pairs,
                          "groups": [asdict(g) for g in groups], "workdir": work,
                          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                          "configs": {n: asdict(c) for n, c in CONFIGS.items()},
                          "workloads": WORKLOAD_LABELS}}
    log(f"work dir {work}")
    try:
        res["machine"] = machine_info()
        if args.compare:
            res["machine"]["compare"] = {
                "dir": args.compare, "python": env.alt_python,
                "commit": _cmd_out(["git", "-C", args.compare, "rev-parse", "--short", "HEAD"])}
        setup(env, mounts)
        res["verification"] = verify(env, mounts)
        fuse = fuse_rounds(env, mounts, groups, args.pairs)
        res["fuse"] = {"samples": fuse, "summary": summarize_fuse(fuse)}
        inproc = [] if args.skip_inprocess else inprocess_rounds(env, args.pairs, 1 if args.quick else 3)
        res["inprocess"] = {"samples": inproc, "summary": summarize_variants(inproc, "openssl-multi2-16384")}
        dec = [] if args.skip_decrypt else decrypt_vs_cat(env, mounts, args.pairs)
        res["decrypt_vs_cat"] = {"samples": dec, "summary": summarize_variants(dec, "gocryptfs-cat-to-file")}
        res["targets"] = evaluate_targets(fuse, inproc, dec)
        res["machine"]["loadavg_end"] = open("/proc/loadavg").read().strip()
        res["meta"]["duration_s"] = round(time.time() - started, 1)
        print_report(res)
        out_json = args.out / "results.json"
        out_json.write_text(json.dumps(res, indent=1) + "\n")
        draw_chart(res, args.out / "ratios.png")
        log(f"wrote {out_json} and {args.out / 'ratios.png'} ({res['meta']['duration_s']:.0f} s in all)")
    finally:
        mounts.close()
        leftover = [mp for mp in (env.mnt,) if mounted(mp)]
        if leftover:
            log(f"warning: still mounted: {leftover}; work dir {work} left in place")
        elif args.keep:
            log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
