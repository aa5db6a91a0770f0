"""How model servers read safetensors weights: one loader per pattern, for bench/loading.py.

    python bench/loaders.py PATTERN MODEL_DIR --manifest MANIFEST [--verify] [--wait]

PATTERN is one of:

- ``vllm``: vLLM's default loader (``safetensors_weights_iterator``): the shards one after the
  other in natural order, ``safe_open(f, framework="pt")`` (a private mmap of the file) and
  ``get_tensor`` for every key in sorted order, on one thread. With mixed dtypes the sorted
  keys jump around in the file (safetensors lays a file out by dtype, then name).
- ``vllm-prefetch``: ``--safetensors-load-strategy prefetch``: a background pool of 8 threads,
  one shard per task, reads each shard sequentially with 16 MiB ``read()`` calls (into the page
  cache, data discarded) while the default mmap load above runs. vLLM does not wait for the
  prefetch; neither does the timing (``prefetch_s`` records when it ended).
- ``runai``: runai-model-streamer on a file system: the total of all tensors' bytes is split
  into 16 contiguous ranges, one per thread; each thread ``read()``s its range in 2 MiB chunks
  into one CPU buffer (own fd, ``lseek`` then ``readv``). Tensors are views of that buffer.
- ``fastsafetensors``: fastsafetensors without GPUDirect (``copier/nogds.py``): every shard's
  data section is cut into 16 MiB blocks, all blocks of all shards are queued in order, and up
  to 16 threads ``pread()`` them into a buffer per shard (one fd per shard).
- ``tp2``: tensor parallelism 2: two processes each run the ``vllm`` loader over every shard and
  copy only their half of each tensor (``tp_slice``: dim 0 for column-parallel weights, dim 1
  for ``o_proj``/``down_proj``, 1-D tensors replicated), as vLLM's weight loaders ``narrow()``
  the full mmap'd tensor.

Every loader ends in the same sink: each tensor (or slice) is copied into a preallocated,
pre-touched parameter buffer (the stand-in for ``param.data.copy_()`` into GPU memory), so every
byte is touched. Only the loading is timed: the process imports torch, allocates the parameters
and (with ``--wait``) prints ``ready`` before it reads a go line from stdin
(``{"start_at": <time.monotonic()>}`` to wait until then, e.g. a server's start-up delay).
It prints one JSON line: ``seconds``, ``t0``/``t1`` (CLOCK_MONOTONIC, comparable across
processes), the loader's own CPU seconds, bytes delivered.

``--verify`` replaces the copy with a sha256 of every tensor (or this rank's slice) compared
with the manifest written by bench/model_gen.py; the result lists mismatches (an empty list
and ``verified`` = number of tensors when all match). Verification is a separate, untimed pass.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

MiB = 1 << 20
TP_WORLD = 2
PREFETCH_THREADS = 8  # vLLM --safetensors-prefetch-num-threads default
PREFETCH_BLOCK = 16 * MiB  # vLLM's prefetch block size
RUNAI_THREADS = 16  # RUNAI_STREAMER_CONCURRENCY default for file systems
RUNAI_CHUNK = 2 * MiB  # RUNAI_STREAMER_CHUNK_BYTESIZE default
FST_THREADS = 16  # fastsafetensors nogds: up to 16 copier threads
FST_BLOCK = 16 * MiB  # fastsafetensors bbuf_size_kb / max_copy_block_size
PATTERNS = ("vllm", "vllm-prefetch", "runai", "fastsafetensors", "tp2")
ROW_PARALLEL = ("o_proj", "down_proj")  # split along the input dim (1); others along dim 0


# --------------------------------------------------------------------------- tensor parallel


def tp_dim(name: str, shape) -> int | None:
    """Which dim a TP rank splits: None (replicated) for 1-D tensors, else 1 for row-parallel."""
    if len(shape) < 2:
        return None
    return 1 if any(k in name for k in ROW_PARALLEL) else 0


def tp_slice(t, name: str, rank: int, world: int = TP_WORLD):
    """This rank's part of a tensor (numpy array or torch tensor; a view, not a copy)."""
    d = tp_dim(name, t.shape)
    if d is None:
        return t
    part = t.shape[d] // world
    idx = [slice(None)] * len(t.shape)
    idx[d] = slice(rank * part, (rank + 1) * part)
    return t[tuple(idx)]


# --------------------------------------------------------------------------- model files


def natural_key(name: str) -> tuple:
    return tuple(int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", name)))


def shard_files(model_dir: str) -> list[str]:
    """The shards named by the index's weight_map, in natural order (as vLLM sorts them)."""
    with open(os.path.join(model_dir, "model.safetensors.index.json")) as f:
        names = set(json.load(f)["weight_map"].values())
    return [os.path.join(model_dir, n) for n in sorted(names, key=natural_key)]


def read_header(path: str) -> tuple[int, dict]:
    """(offset of the data section, header dict without __metadata__)."""
    with open(path, "rb") as f:
        hlen = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(hlen))
    header.pop("__metadata__", None)
    return 8 + hlen, header


# --------------------------------------------------------------------------- the sink


class Sink:
    """Where every loaded tensor goes: a copy into its parameter, or a sha256 check."""

    def __init__(self, manifest: dict, verify: bool, rank: int | None):
        import torch

        self.torch = torch
        self.verify = verify
        self.rank = rank
        self.tensors = manifest["tensors"]
        self.bytes = 0
        self.seen: set[str] = set()
        self.mismatches: list[str] = []
        self.params: dict = {}
        if verify:
            return
        shapes = {}
        for name, t in self.tensors.items():
            shape = list(t["shape"])
            d = tp_dim(name, shape) if rank is not None else None
            if d is not None:
                shape[d] //= TP_WORLD
            shapes[name] = (_torch_dtype(t["dtype"]), shape)
        sizes = {n: torch.empty(0, dtype=dt).element_size() * _prod(s) for n, (dt, s) in shapes.items()}
        self.buf = torch.zeros(sum(sizes.values()), dtype=torch.uint8)  # zeros: pages touched up front
        off = 0
        for name, (dt, shape) in shapes.items():
            n = sizes[name]
            self.params[name] = self.buf[off : off + n].view(dt).view(shape)
            off += n

    def __call__(self, name: str, t) -> None:
        if self.rank is not None:
            t = tp_slice(t, name, self.rank)
        self.seen.add(name)
        if not self.verify:
            self.params[name].copy_(t)
            self.bytes += t.numel() * t.element_size()
            return
        raw = t.contiguous().view(self.torch.uint8).reshape(-1).numpy()
        self.bytes += raw.nbytes
        want = self.tensors[name]
        want = want["sha256"] if self.rank is None else want["tp2_sha256"][self.rank]
        if hashlib.sha256(raw).hexdigest() != want:
            self.mismatches.append(name)

    def missing(self) -> list[str]:
        return sorted(set(self.tensors) - self.seen)


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# --------------------------------------------------------------------------- loaders


def load_vllm(files: list[str], sink: Sink) -> dict:
    from safetensors import safe_open

    for path in files:
        with safe_open(path, framework="pt") as f:
            for name in sorted(f.keys()):
                sink(name, f.get_tensor(name))
    return {}


def _prefetch_file(path: str) -> None:
    with open(path, "rb") as f:
        while f.read(PREFETCH_BLOCK):
            pass


def load_vllm_prefetch(files: list[str], sink: Sink) -> dict:
    t0 = time.monotonic()
    done: dict = {}

    def prefetch_all() -> None:
        with ThreadPoolExecutor(max_workers=PREFETCH_THREADS) as ex:
            list(ex.map(_prefetch_file, files))
        done["prefetch_end"] = time.monotonic()

    th = threading.Thread(target=prefetch_all, daemon=True)
    th.start()
    load_vllm(files, sink)
    t_load = time.monotonic()
    th.join()  # untimed: the caller's t1 is taken before (vLLM does not wait either)
    return {"prefetch_s": round(done["prefetch_end"] - t0, 4),
            "prefetch_done_before_load": done["prefetch_end"] <= t_load, "_t1": t_load}


def _torch_dtype(name: str):
    import torch

    return {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
            "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
            "BOOL": torch.bool}[name]


def _tensor_views(data, header: dict):
    """(name, tensor) views of ``data``, a uint8 tensor holding one shard's data section."""
    for name, info in header.items():
        b, e = info["data_offsets"]
        yield name, data[b:e].view(_torch_dtype(info["dtype"])).view(info["shape"])


def load_runai(files: list[str], sink: Sink) -> dict:
    import torch

    # the request: every shard's tensor bytes (its data section), concatenated
    spans = []  # (path, file offset, length, offset in the buffer)
    headers = []
    total = 0
    for path in files:
        base, header = read_header(path)
        size = os.path.getsize(path) - base
        spans.append((path, base, size, total))
        headers.append((header, total, size))
        total += size
    buf = torch.empty(total, dtype=torch.uint8)
    mv = memoryview(buf.numpy())
    share = -(-total // RUNAI_THREADS)
    errors: list[BaseException] = []

    def worker(lo: int, hi: int) -> None:
        try:
            for path, foff, length, boff in spans:
                a, b = max(lo, boff), min(hi, boff + length)
                if a >= b:
                    continue
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.lseek(fd, foff + a - boff, os.SEEK_SET)
                    pos = a
                    while pos < b:
                        n = os.readv(fd, [mv[pos : min(b, pos + RUNAI_CHUNK)]])
                        if n <= 0:
                            raise OSError(f"short read in {path} at {foff + pos - boff}")
                        pos += n
                finally:
                    os.close(fd)
        except BaseException as e:  # re-raised by the caller
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i * share, min(total, (i + 1) * share)))
               for i in range(RUNAI_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    for header, boff, size in headers:
        for name, t in _tensor_views(buf[boff : boff + size], header):
            sink(name, t)
    return {}


def load_fastsafetensors(files: list[str], sink: Sink) -> dict:
    import torch

    shards = []
    blocks = []  # (fd, file offset, memoryview of the destination)
    fds = []
    try:
        for path in files:
            base, header = read_header(path)
            size = os.path.getsize(path) - base
            buf = torch.empty(size, dtype=torch.uint8)
            mv = memoryview(buf.numpy())
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            fds.append(fd)
            shards.append((buf, header))
            for off in range(0, size, FST_BLOCK):
                blocks.append((fd, base + off, mv[off : min(size, off + FST_BLOCK)]))

        def read_block(job) -> None:
            fd, foff, dst = job
            got = 0
            while got < len(dst):
                n = os.preadv(fd, [dst[got:]], foff + got)
                if n <= 0:
                    raise OSError(f"short pread at {foff + got}")
                got += n

        with ThreadPoolExecutor(max_workers=min(FST_THREADS, len(blocks))) as ex:
            list(ex.map(read_block, blocks))
    finally:
        for fd in fds:
            os.close(fd)
    for buf, header in shards:
        for name, t in _tensor_views(buf, header):
            sink(name, t)
    return {}


LOADERS = {"vllm": load_vllm, "vllm-prefetch": load_vllm_prefetch, "runai": load_runai,
           "fastsafetensors": load_fastsafetensors}


# --------------------------------------------------------------------------- process protocol


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def wait_for_go(wait: bool) -> float:
    """With --wait: say ready, read the go line, sleep until its start_at (monotonic)."""
    if not wait:
        return 0.0
    print("ready", flush=True)
    line = sys.stdin.readline()
    if not line:
        raise SystemExit("no go line on stdin")
    start_at = float(json.loads(line).get("start_at") or 0.0)
    late = time.monotonic() - start_at if start_at else 0.0
    if start_at and late < 0:
        time.sleep(-late)
    return late


def run_one(pattern: str, model_dir: str, manifest: dict, verify: bool, wait: bool, rank: int | None) -> dict:
    import torch

    torch.set_num_threads(1)  # one loading thread: the copies stand in for DMA to the GPU
    sink = Sink(manifest, verify, rank)
    late = wait_for_go(wait)
    c0 = cpu_s()
    t0 = time.monotonic()
    files = shard_files(model_dir)  # the index is read through the mount too: part of the load
    extra = LOADERS[pattern](files, sink)
    t1 = extra.pop("_t1", None) or time.monotonic()
    out = {"pattern": pattern, "rank": rank, "seconds": t1 - t0, "t0": t0, "t1": t1, "cpu_s": cpu_s() - c0,
           "bytes": sink.bytes, "tensors": len(sink.seen), "verify": verify,
           "start_late_s": round(late, 4) if late > 0 else 0.0, **extra}
    if verify:
        out["mismatches"] = sink.mismatches
        out["missing"] = sink.missing()
        out["verified"] = len(sink.seen) - len(sink.mismatches) if not out["missing"] else 0
    return out


def run_tp2(args, manifest: dict) -> dict:
    """Two rank processes (fresh interpreters) over the same shards; time = first start to last end."""
    cmd = [sys.executable, os.path.abspath(__file__), "vllm", args.model_dir, "--manifest", args.manifest,
           "--wait", *(["--verify"] if args.verify else [])]
    procs = [subprocess.Popen([*cmd, "--rank", str(r)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for r in range(TP_WORLD)]
    try:
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a TP rank did not start")
        go = json.dumps({"start_at": 0})
        if args.wait:
            print("ready", flush=True)
            go = sys.stdin.readline().strip() or go
        for p in procs:
            p.stdin.write(go + "\n")
            p.stdin.flush()
        ranks = []
        for p in procs:
            out, _ = p.communicate()
            if p.returncode != 0:
                raise RuntimeError(f"TP rank exited with {p.returncode}")
            ranks.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    t0, t1 = min(r["t0"] for r in ranks), max(r["t1"] for r in ranks)
    out = {"pattern": "tp2", "seconds": t1 - t0, "t0": t0, "t1": t1, "cpu_s": sum(r["cpu_s"] for r in ranks),
           "bytes": sum(r["bytes"] for r in ranks), "tensors": min(r["tensors"] for r in ranks),
           "verify": args.verify, "start_late_s": max(r["start_late_s"] for r in ranks),
           "rank_seconds": [round(r["seconds"], 4) for r in ranks]}
    if args.verify:
        out["mismatches"] = [f"rank{r['rank']}:{n}" for r in ranks for n in r["mismatches"]]
        out["missing"] = [f"rank{r['rank']}:{n}" for r in ranks for n in r["missing"]]
        out["verified"] = min(r["verified"] for r in ranks)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Load a safetensors model the way a model server does.")
    p.add_argument("pattern", choices=PATTERNS)
    p.add_argument("model_dir")
    p.add_argument("--manifest", required=True, help="manifest.json from bench/model_gen.py")
    p.add_argument("--verify", action="store_true", help="sha256 every tensor against the manifest instead")
    p.add_argument("--wait", action="store_true", help="print ready, then wait for a go line on stdin")
    p.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    with open(args.manifest) as f:
        manifest = json.load(f)
    if args.pattern == "tp2":
        res = run_tp2(args, manifest)
    else:
        res = run_one(args.pattern, args.model_dir, manifest, args.verify, args.wait, args.rank)
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
