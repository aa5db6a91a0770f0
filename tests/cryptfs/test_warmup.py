"""The warm-up pass (cryptfs/core/warmup.py): its order, budget, gate, and the daemon's pass.

Unit tests drive the ordering, the budget parser, the foreground gate and a pass over a plain
directory without any mount. The mount tests run our daemon with ``--warmup`` over a small
model-like tree and read its log: the pass's summary line, and the daemon's count of read
requests by origin (foreground or warm-up), which is how "the pages are cached" is measured:
after a complete pass, reading every file again sends no foreground read request at all.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from cryptfs.config import FsParams
from cryptfs.core import warmup
from cryptfs.core.errors import UsageError
from cryptfs.core.options import MountOptions
from cryptfs.encrypt import encrypt_tree
from tests.support import (
    PASSWORD_FILE,
    cryptfs_mount,
    daemon_pids,
    fuse_mounts,
    make_sample_tree,
    snapshot,
    wait_gone,
)

MiB = 1 << 20
SHARDS = {"model-00001-of-00003.safetensors": 3 * MiB + 123,
          "model-00002-of-00003.safetensors": 2 * MiB + 777,
          "model-00003-of-00003.safetensors": MiB + 5555}
SUMMARY = "warm-up summary:"


# the order -----------------------------------------------------------------------------------------
def test_natural_key_compares_digit_runs_as_numbers():
    names = ["x10", "x2", "x1", "model-00010-of-00010", "model-00002-of-00010", "a01b", "a1c"]
    assert sorted(names, key=warmup.natural_key) == [
        "a01b", "a1c", "model-00002-of-00010", "model-00010-of-00010", "x1", "x2", "x10"]


def test_order_small_files_first_then_shards_naturally():
    listing = [("model-00010-of-00010.safetensors", 5 << 30), ("model-00002-of-00010.safetensors", 5 << 30),
               ("model-00001-of-00010.safetensors", 5 << 30), ("config.json", 700),
               ("tokenizer.json", 9 * MiB), ("tokenizer.model", 2 * MiB), ("vocab.tiktoken", 3 * MiB),
               ("model.safetensors.index.json", 30000), ("generation_config.json", 200),
               ("sub/x10.bin", 2 * MiB), ("sub/x2.bin", 2 * MiB), ("notes", MiB), ("big.bin", MiB + 1)]
    assert warmup.order(listing) == [
        # small: at most 1 MiB, or a config/tokenizer/index extension whatever its size
        "config.json", "generation_config.json", "model.safetensors.index.json", "notes",
        "tokenizer.json", "tokenizer.model", "vocab.tiktoken",
        # then everything else in natural order
        "big.bin", "model-00001-of-00010.safetensors", "model-00002-of-00010.safetensors",
        "model-00010-of-00010.safetensors", "sub/x2.bin", "sub/x10.bin"]


def test_plan_walks_a_tree_once_per_file_under_link_names(tmp_path):
    """A Hugging Face cache: snapshot links name the blobs; each blob is read once, by its link."""
    root = tmp_path / "hf"
    (root / "blobs").mkdir(parents=True)
    snap = root / "snapshots" / "abc"
    snap.mkdir(parents=True)
    for blob, name, size in (("f00d", "model-00002-of-00002.safetensors", 2 * MiB),
                             ("beef", "model-00001-of-00002.safetensors", 2 * MiB),
                             ("c0de", "config.json", 10)):
        (root / "blobs" / blob).write_bytes(b"x" * size)
        os.symlink(f"../../blobs/{blob}", snap / name)
    os.symlink("/nonexistent/target", snap / "dangling")
    os.symlink("../../blobs", snap / "dirlink")  # directory links are not followed
    (root / "README").write_bytes(b"readme")
    assert warmup.plan(str(root)) == [str(p) for p in (
        root / "README", snap / "config.json", snap / "model-00001-of-00002.safetensors",
        snap / "model-00002-of-00002.safetensors")]


# the budget and the options ----------------------------------------------------------------------
@pytest.mark.parametrize("spec, size, percent", [
    ("8G", 8 << 30, None), ("512M", 512 * MiB, None), ("1.5GiB", 3 << 29, None), ("64k", 65536, None),
    ("1048576", MiB, None), (4096, 4096, None), ("75%", None, 75.0), ("12.5 %", None, 12.5)])
def test_parse_budget(spec, size, percent):
    budget = warmup.parse_budget(spec)
    assert (budget.size, budget.percent) == (size, percent)


@pytest.mark.parametrize("spec", ["0", "0%", "150%", "lots", "8X", "-1G", 0, ""])
def test_parse_budget_refuses(spec):
    with pytest.raises(ValueError):
        warmup.parse_budget(spec)


def test_budget_resolves_against_memavailable():
    assert warmup.parse_budget("75%").resolve(4 << 30) == 3 << 30
    assert warmup.parse_budget("1G").resolve(4 << 30) == 1 << 30
    assert warmup.mem_available() > 0


def test_mount_options_and_flags():
    from cryptfs.cli import build_parser as cryptfs_parser
    from sam.cli import build_parser as sam_parser

    opts = MountOptions(source_dir="/c", mountpoint="/m", warmup=True, warmup_budget="8G")
    assert opts.warmup and warmup.parse_budget(opts.warmup_budget).size == 8 << 30
    assert not MountOptions(source_dir="/c", mountpoint="/m").warmup
    with pytest.raises(UsageError, match="warmup-budget"):
        MountOptions(source_dir="/c", mountpoint="/m", warmup=True, warmup_budget="lots")
    with pytest.raises(UsageError, match="direct-io"):
        MountOptions(source_dir="/c", mountpoint="/m", warmup=True, direct_io=True)
    # the same flags on both commands; --warmup-budget implies --warmup
    for parser, key in ((cryptfs_parser(), []), (sam_parser(), ["--key-file", "/k"])):
        def opts_for(*flags: str) -> MountOptions:
            args = parser.parse_args(["mount", "/c", "/m", *key, *flags])  # noqa: B023
            return MountOptions.from_args(args, "/c", subtype="x")

        assert opts_for("--warmup-budget", "512M").warmup
        assert opts_for("--warmup-budget", "512M").warmup_budget == "512M"
        assert opts_for("--warmup").warmup_budget == warmup.DEFAULT_BUDGET
        assert not opts_for().warmup


# the foreground gate --------------------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_gate_tells_warmup_reads_from_foreground_ones():
    clock = FakeClock()
    gate = warmup.ForegroundGate(quiet=0.05, clock=clock)
    gate.warm_ids.add(4242)
    stop = threading.Event()
    gate.note(4242, MiB)  # the pass's own request: no reason to wait
    assert gate.wait_quiet(stop, clock.sleep) == 0
    gate.note(777, 131072)  # a loader's request: the pass waits until 50 ms without one
    start = clock.now
    waited = gate.wait_quiet(stop, clock.sleep)
    assert 0.05 <= waited < 0.06 and clock.now - start == pytest.approx(waited)
    assert gate.requests == {"foreground": [1, 131072], "warm-up": [1, MiB]}
    assert "foreground 1 (131072 bytes), warm-up 1 (1048576 bytes)" in gate.report()
    gate.note(777, 1)
    stop.set()  # a stopped pass never waits
    assert gate.wait_quiet(stop, clock.sleep) == 0


# a pass over a plain directory ----------------------------------------------------------------------
def write_model(root: Path) -> dict[str, bytes]:
    """A small model-like tree: configs, a tokenizer, an index and three shards."""
    root.mkdir(parents=True, exist_ok=True)
    files = {"config.json": b'{"model_type": "llama"}\n', "tokenizer.json": os.urandom(5000),
             "model.safetensors.index.json": b'{"weight_map": {}}\n'}
    files.update({name: os.urandom(size) for name, size in SHARDS.items()})
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


def test_pass_over_a_directory_complete_and_budget(tmp_path):
    files = write_model(tmp_path / "model")
    total = sum(map(len, files.values()))
    done = warmup.Warmup(str(tmp_path / "model"), "1G").run()
    assert (done.bytes, done.files, done.planned, done.failed, done.stopped) == (total, 6, 6, 0, "")
    assert "complete" in done.line() and f"warmed {total} bytes" in done.line()
    budget = 2 * MiB + 100
    cut = warmup.Warmup(str(tmp_path / "model"), budget).run()
    assert cut.stopped.startswith("budget") and "stopped early: budget" in cut.line()
    assert cut.bytes <= budget
    assert cut.files == 3  # the three small files; the first shard only in part
    assert (cut.bytes - sum(len(files[n]) for n in ("config.json", "tokenizer.json",
                                                     "model.safetensors.index.json"))) % 4096 == 0


def test_stop_ends_a_running_pass(tmp_path):
    write_model(tmp_path / "model")
    pass_ = warmup.Warmup(str(tmp_path / "model"), pace=0.2)  # 0.2 s per read: ~2 s in all
    pass_.start()
    pass_.stop()
    assert pass_.summary is not None and pass_.summary.stopped == "stopped"
    assert pass_.summary.files < pass_.summary.planned


# through the mount --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_tree(tmp_path_factory):
    """Plain and encrypted: a sample tree (odd names, sizes at block edges) plus a model."""
    base = tmp_path_factory.mktemp("warm")
    plain = make_sample_tree(base / "plain")
    write_model(plain / "model")
    encrypt_tree(str(plain), str(base / "cipher"), PASSWORD_FILE.read_bytes().strip(), FsParams(), 10,
                 keep_external_links=True)
    return plain, base / "cipher"


def wait_for_summary(log: Path, timeout: float = 120) -> str:
    """The pass's one summary line (a generous bound for a loaded machine; no timing assert)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        lines = [line for line in text.splitlines() if SUMMARY in line]
        if lines:
            assert len(lines) == 1, lines
            return lines[0]
        time.sleep(0.05)
    pytest.fail(f"no warm-up summary in {log} after {timeout} s:\n{log.read_text()}")


def warmed(summary: str) -> int:
    return int(re.search(r"warmed (\d+) bytes", summary).group(1))


def requests(log: Path) -> tuple[int, int, int, int]:
    m = re.search(r"foreground (\d+) \((\d+) bytes\), warm-up (\d+) \((\d+) bytes\)", log.read_text())
    assert m, log.read_text()
    return tuple(map(int, m.groups()))


@pytest.mark.parametrize("block_path", ["c", "python"])
def test_every_byte_equal_with_and_without_warmup(model_tree, tmp_path, block_path):
    plain, cipher = model_tree
    skip = (b"abs_link",)  # an absolute link: the mount refuses it (EIO), with or without warm-up
    want = snapshot(plain, times=False, skip=skip)
    with cryptfs_mount(cipher, tmp_path / "cold", "--block-path", block_path) as m:
        assert snapshot(m, times=False, skip=skip) == want
    log = tmp_path / "warm.log"
    with cryptfs_mount(cipher, tmp_path / "warm", "--block-path", block_path, "--warmup",
                       "--log", str(log)) as m:
        assert snapshot(m, times=False, skip=skip) == want  # while the pass runs
        summary = wait_for_summary(log)
        assert snapshot(m, times=False, skip=skip) == want  # after it
    assert summary.endswith("complete") and " 0 failed" in summary, summary
    assert warmed(summary) == sum(len(v[2]) for v in want.values() if v[0] == "file")


def test_warm_pages_are_served_from_the_page_cache(model_tree, tmp_path):
    """After a complete pass, reading everything again sends (almost) no foreground read request.

    Almost: proactive reclaim may drop a few clean pages at any time (this test VM runs a DAMON
    "pageout" scheme on physical memory), and a dropped page is read again. Without the pass
    every byte would be requested; a quarter is the line between the two.
    """
    plain, cipher = model_tree
    log = tmp_path / "warm.log"
    with cryptfs_mount(cipher, tmp_path / "m", "--warmup", "--log", str(log)) as m:
        summary = wait_for_summary(log)
        for name in ("model", "dir/sub/deeper", ""):
            for f in sorted((plain / name).iterdir()):
                if f.is_file() and not f.is_symlink():
                    assert (m / name / f.name).read_bytes() == f.read_bytes(), f
    assert summary.endswith("complete"), summary
    _, fg_bytes, warm, warm_bytes = requests(log)
    assert fg_bytes * 4 <= warmed(summary), log.read_text()
    assert warm > 0 and warm_bytes >= warmed(summary)


def test_budget_stops_the_pass_before_it(model_tree, tmp_path):
    _, cipher = model_tree
    log = tmp_path / "warm.log"
    with cryptfs_mount(cipher, tmp_path / "m", "--warmup-budget", "1M", "--log", str(log)) as m:
        summary = wait_for_summary(log)
        assert (m / "model" / "config.json").read_bytes().startswith(b"{")
    assert "stopped early: budget of 1.0 MiB reached" in summary, summary
    assert 0 < warmed(summary) <= MiB
    _, _, warm, warm_bytes = requests(log)
    files = int(re.search(r"(\d+)/\d+ files", summary).group(1)) + 1  # + the one cut short
    assert warm_bytes <= MiB + 4096 * files  # the kernel reads whole pages; no readahead past it


@pytest.mark.parametrize("how", ["fusermount3 -u", "SIGTERM"])
def test_unmount_cancels_the_pass(model_tree, tmp_path, how):
    """A pass slowed down (test hook) is cut short; the daemon leaves, nothing stays mounted."""
    _, cipher = model_tree
    log = tmp_path / "warm.log"
    with cryptfs_mount(cipher, tmp_path / "m", "--warmup", "--log", str(log),
                       env={"CRYPTFS_WARMUP_PACE": "0.2"}) as m:
        pids = daemon_pids(m)
        # ready before the pass ends: at 0.2 s per read, 20-odd files take seconds
        assert SUMMARY not in (log.read_text() if log.exists() else "")
        deadline = time.monotonic() + 60
        while "warm-up: " not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.02)
        if how == "SIGTERM":
            os.kill(pids[0], signal.SIGTERM)
        else:  # a plain unmount: the pass's open files must not make it "busy"
            proc = subprocess.run(["fusermount3", "-u", str(m)], capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr
        assert not wait_gone(pids, 10.0), "daemon still running after the unmount"
        assert os.path.realpath(m) not in fuse_mounts()
    summary = wait_for_summary(log, timeout=1)
    assert "stopped early: unmounted" in summary, summary
    assert "Traceback" not in log.read_text()


def test_eio_is_logged_and_the_pass_goes_on(model_tree, tmp_path):
    plain, cipher_ok = model_tree
    cipher = tmp_path / "cipher"
    shutil.copytree(cipher_ok, cipher, symlinks=True)
    name = "model-00002-of-00003.safetensors"
    size = SHARDS[name]
    blocks = -(-size // 4096)
    backing = [p for p in cipher.rglob("*") if p.is_file() and p.stat().st_size == 18 + size + 32 * blocks]
    assert len(backing) == 1
    with open(backing[0], "r+b") as f:  # flip one byte inside block 100
        f.seek(18 + 100 * 4128 + 50)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 1]))
    want = (plain / "model" / name).read_bytes()
    log = tmp_path / "warm.log"
    with cryptfs_mount(cipher, tmp_path / "m", "--warmup", "--log", str(log)) as m:
        summary = wait_for_summary(log)
        for other in set(SHARDS) - {name}:
            assert (m / "model" / other).read_bytes() == (plain / "model" / other).read_bytes()
        fd = os.open(m / "model" / name, os.O_RDONLY)
        try:
            assert os.pread(fd, 100 * 4096, 0) == want[:100 * 4096]
            with pytest.raises(OSError) as exc:
                os.pread(fd, 4096, 100 * 4096)
            assert exc.value.errno == errno.EIO
            assert os.pread(fd, size, 101 * 4096) == want[101 * 4096:]
        finally:
            os.close(fd)
    assert " 1 failed" in summary and summary.endswith("complete"), summary
    text = log.read_text()
    assert re.search(rf"warm-up: model/{re.escape(name)}: read failed at offset \d+ .*not warm", text), text
    assert "block 100" in text  # the adapter's own line for the failed block
