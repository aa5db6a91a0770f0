"""Hostile manifests cost bounded time and memory (issue "Hold under attack", item 4).

A pinned reader hashes the raw manifest and refuses another one before parsing it; every
reader refuses paths deeper than PATH_MAX_DEPTH components or longer than PATH_MAX_BYTES, and
more than FILES_MAX files, with exit 8; the packer refuses to write what readers refuse; and
every manifest check is linear in the manifest's size (docs/sam-format.md §5.4).

Tests that could take gigabytes on a regression run under an address-space cap, so a
regression fails with MemoryError instead of exhausting the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import time
import tracemalloc
from pathlib import Path

import pytest

import sam.manifest as manifest_mod
import sam.pack as pack_mod
from sam import exitcodes
from sam.cli import main
from sam.errors import DigestMismatch, ManifestError, PackageError, UsageError
from sam.manifest import DIRS_MAX, FILES_MAX, MANIFEST_MAX, PATH_MAX_BYTES, PATH_MAX_DEPTH, Manifest
from sam.pack import pack
from sam.package import Package
from tests.support import run_cli

KEY = b"correct horse battery"
KEY_ID = "model-key-0001"
DEEP = 60_000  # levels: the issue's 121 KB manifest whose parent-dir expansion needed > 3 GiB


# helpers -------------------------------------------------------------------------------------
def manifest_raw(paths: list[str]) -> bytes:
    """A well-formed (unauthenticated) manifest listing ``paths``, in the canonical encoding."""
    obj = {"format": "sam-open", "version": 1, "key_id": KEY_ID, "package_id": "11" * 16,
           "created": "2026-01-01T00:00:00Z", "packer": "test",
           "kdf": {"name": "scrypt", "log_n": 10, "r": 8, "p": 1, "salt": "22" * 32},
           "key_check": "33" * 32, "wrapped_key": "44" * 60,
           "cipher": {"name": "AES-256-GCM", "chunk_size": 65536, "nonce_len": 12, "tag_len": 16,
                      "header_len": 24},
           "files": [{"path": p, "size": 0, "mode": 0o644, "id": f"{i + 1:032x}"}
                     for i, p in enumerate(paths)]}
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def write_package(root: Path, raw: bytes) -> Path:
    """A package directory holding only a manifest (and a well-formed MAC): enough to parse."""
    (root / ".sam").mkdir(parents=True)
    (root / ".sam" / "manifest.json").write_bytes(raw)
    (root / ".sam" / "manifest.mac").write_text("00" * 32 + "\n")
    return root


def deep_path(levels: int, name: str = "d") -> str:
    return "/".join([name] * (levels - 1) + ["f"])


def packed(tmp_path: Path) -> tuple[Path, str, Path]:
    """A real package (scrypt 2^10), its digest and a key file."""
    model = tmp_path / "model"
    (model / "w").mkdir(parents=True)
    (model / "w" / "x.bin").write_bytes(os.urandom(1000))
    (model / "config.json").write_bytes(b"{}\n")
    result = pack(str(model), KEY, KEY_ID, str(tmp_path), scrypt_logn=10, progress=False)
    kf = tmp_path / "key"
    kf.write_bytes(KEY)
    return Path(result.out_dir), result.digest, kf


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize in /proc/self/status")


@contextlib.contextmanager
def address_space_cap(extra: int = 1 << 30):
    """RLIMIT_AS at what this process maps now plus ``extra`` (children started meanwhile inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _vm_size() + extra
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY:
        cap = min(cap, soft)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def measured():
    """Yield a dict that gets ``seconds`` and ``peak`` (tracemalloc bytes) of the block."""
    out: dict[str, float] = {}
    tracemalloc.start()
    started = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - started
        out["peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


@pytest.fixture
def no_parse(monkeypatch) -> list[int]:
    """Record every call of Manifest.from_bytes (and fail it): a pinned mismatch must never parse."""
    calls: list[int] = []

    def spy(raw):
        calls.append(len(raw))
        raise AssertionError("Manifest.from_bytes called for a manifest that does not match the pin")

    monkeypatch.setattr(Manifest, "from_bytes", staticmethod(spy))
    return calls


# 1. a pinned reader refuses another manifest before parsing it ---------------------------------
def _hostile(kind: str) -> bytes:
    if kind == "deep":
        return manifest_raw([deep_path(DEEP)])
    # as large as a reader reads, and as costly as JSON gets to parse (~24 bytes per byte)
    n = (MANIFEST_MAX - 2) // 3
    return b"[" + b"{}," * (n - 1) + b"{}]"


@pytest.mark.parametrize("kind", ["deep", "huge"])
def test_pinned_open_refuses_a_hostile_manifest_without_parsing_it(tmp_path, no_parse, kind):
    pkg, pin, _ = packed(tmp_path)
    raw = _hostile(kind)
    assert len(raw) <= MANIFEST_MAX
    (pkg / ".sam" / "manifest.json").write_bytes(raw)
    with address_space_cap(), measured() as cost, pytest.raises(DigestMismatch, match="not the expected"):
        Package.open(str(pkg), expect_digest=pin)
    assert no_parse == []
    assert cost["seconds"] < 5
    assert cost["peak"] < 2 * len(raw) + (8 << 20)  # the raw bytes, read once (joined if the read was short)


def test_pinned_cli_refuses_another_manifest_before_parsing(tmp_path, no_parse, capsys):
    pkg, pin, kf = packed(tmp_path)
    path = pkg / ".sam" / "manifest.json"
    path.write_bytes(path.read_bytes().replace(b'"packer":"sam ', b'"packer":"xam ', 1))  # still parses
    for command in ("verify", "unpack"):
        args = [command, str(pkg)] + ([str(tmp_path / "out")] if command == "unpack" else [])
        assert main([*args, "--key-file", str(kf), "--expect-digest", pin]) == exitcodes.DIGEST_MISMATCH
        assert "not the expected" in capsys.readouterr().err
    assert no_parse == []
    assert not (tmp_path / "out").exists()


def test_pinned_cli_refuses_the_deep_manifest_quickly(tmp_path):
    pkg, pin, kf = packed(tmp_path)
    (pkg / ".sam" / "manifest.json").write_bytes(_hostile("deep"))
    started = time.monotonic()
    with address_space_cap():
        run = run_cli("verify", pkg, "--key-file", kf, "--expect-digest", pin, module="sam", timeout=60)
    assert run.returncode == exitcodes.DIGEST_MISMATCH, run.stderr
    assert b"not the expected" in run.stderr and b"Traceback" not in run.stderr
    assert time.monotonic() - started < 15  # interpreter start-up included; the check itself is ms


def test_open_keeps_check_digest_for_existing_callers(tmp_path):
    pkg, pin, _ = packed(tmp_path)
    p = Package.open(str(pkg))  # the agent's current call sequence keeps working
    p.check_digest(pin)
    p.check_digest(None)
    assert Package.open(str(pkg), expect_digest=pin).digest == pin == p.digest
    with pytest.raises(DigestMismatch):
        p.check_digest("sha256:" + "0" * 64)
    with pytest.raises(DigestMismatch):
        Package.open(str(pkg), expect_digest="sha256:" + "0" * 64)
    with pytest.raises(UsageError):  # an empty pin (an unset variable) is refused, never "no pin"
        Package.open(str(pkg), expect_digest="")


# 2. the 60 000-level path: refused fast, with bounded memory, exit 8 ------------------------
def test_a_60000_level_path_is_refused_fast_through_the_api(tmp_path):
    raw = manifest_raw([deep_path(DEEP)])
    assert len(raw) < 125_000  # the issue's 121 KB manifest
    pkg = write_package(tmp_path / "pkg", raw)
    with address_space_cap(), measured() as cost, pytest.raises(ManifestError) as e:
        Package.open(str(pkg))
    assert e.value.exit_code == exitcodes.MANIFEST == 8
    assert f"has {DEEP} components, over the limit of {PATH_MAX_DEPTH}" in str(e.value)
    assert len(str(e.value)) < 400  # the path is shown shortened, not 120 KB of it
    assert cost["seconds"] < 1
    assert cost["peak"] < 64 << 20


@pytest.mark.parametrize("command", ["info", "verify"])
def test_a_60000_level_path_is_refused_fast_through_the_cli(tmp_path, command):
    pkg = write_package(tmp_path / "pkg", manifest_raw([deep_path(DEEP)]))
    kf = tmp_path / "key"
    kf.write_bytes(KEY)
    args = [command, pkg] + (["--key-file", kf] if command == "verify" else [])
    started = time.monotonic()
    with address_space_cap():
        run = run_cli(*args, module="sam", timeout=60)
    assert run.returncode == exitcodes.MANIFEST, run.stderr
    err = run.stderr.decode()
    assert f"over the limit of {PATH_MAX_DEPTH}" in err and "Traceback" not in err
    assert len(err) < 1000
    assert time.monotonic() - started < 15  # interpreter start-up included


# 3. the limits: accepted at the limit, refused one past it ------------------------------------
@pytest.mark.parametrize("path,ok", [
    (deep_path(PATH_MAX_DEPTH), True),
    (deep_path(PATH_MAX_DEPTH + 1), False),
    ("x" * PATH_MAX_BYTES, True),
    ("x" * (PATH_MAX_BYTES + 1), False),
    ("a/" + "é" * ((PATH_MAX_BYTES - 2) // 2), True),  # 4096 bytes in UTF-8, 2049 characters
    ("a/" + "é" * ((PATH_MAX_BYTES - 2) // 2) + "x", False),  # 4097 bytes, 2050 characters
    ("/".join(["y" * 63] * PATH_MAX_DEPTH), True),  # both limits at once: 64 x 64 - 1 bytes
])
def test_path_limits_at_the_edge(tmp_path, path, ok):
    assert PATH_MAX_DEPTH == 64 and PATH_MAX_BYTES == 4096
    pkg = write_package(tmp_path / "pkg", manifest_raw([path, "top.bin"]))
    if ok:
        m = Package.open(str(pkg)).manifest
        assert [f.path for f in m.files] == [path, "top.bin"]
        assert m.lookup(path) is m.files[0]
        return
    with pytest.raises(ManifestError, match="over the limit of (64|4096 bytes)"):
        Package.open(str(pkg))
    assert main(["info", str(pkg)]) == exitcodes.MANIFEST


def test_the_file_count_limit(tmp_path, monkeypatch, capsys):
    assert FILES_MAX >= 100_000
    monkeypatch.setattr(manifest_mod, "FILES_MAX", 3)
    monkeypatch.setattr(pack_mod, "FILES_MAX", 3)
    assert Manifest.from_bytes(manifest_raw(["a", "b", "c"])).files[2].path == "c"
    with pytest.raises(ManifestError, match="4 files, over the limit of 3 files"):
        Manifest.from_bytes(manifest_raw(["a", "b", "c", "d"]))
    model = tmp_path / "model"
    model.mkdir()
    for name in "abcd":
        (model / name).write_bytes(b"x")
    with pytest.raises(PackageError, match="more than 3 files"):
        pack(str(model), KEY, KEY_ID, str(tmp_path), scrypt_logn=10, progress=False)
    assert not (tmp_path / KEY_ID).exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial left


# 4. the packer refuses what the reader refuses -------------------------------------------------
def _deep_model(root: Path, levels: int) -> str:
    rel = deep_path(levels)
    (root / rel).parent.mkdir(parents=True)
    (root / rel).write_bytes(b"deep\n")
    return rel


def test_the_packer_packs_a_tree_at_the_depth_limit(tmp_path):
    model = tmp_path / "model"
    rel = _deep_model(model, PATH_MAX_DEPTH)
    result = pack(str(model), KEY, KEY_ID, str(tmp_path), scrypt_logn=10, progress=False)
    unlocked = Package.open(result.out_dir, expect_digest=result.digest).unlock(KEY)
    with unlocked.open(rel) as f:
        assert f.read(0, 100) == b"deep\n"
    assert len(unlocked.manifest.dirs()) == PATH_MAX_DEPTH - 1


def test_the_packer_refuses_a_tree_too_deep(tmp_path, capsys):
    model = tmp_path / "model"
    _deep_model(model, PATH_MAX_DEPTH + 1)
    with pytest.raises(PackageError, match=f"at most {PATH_MAX_DEPTH} components"):
        pack(str(model), KEY, KEY_ID, str(tmp_path), scrypt_logn=10, progress=False)
    kf = tmp_path / "key"
    kf.write_bytes(KEY)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["pack", str(model), KEY_ID, "--key-file", str(kf), "--out", str(out), "-q"]) == \
        exitcodes.PACKAGE
    err = capsys.readouterr().err
    assert f"at most {PATH_MAX_DEPTH} components" in err and "flatten" in err
    assert list(out.iterdir()) == []  # nothing written, not even a partial directory


def test_the_packer_refuses_a_path_too_long(tmp_path, monkeypatch):
    # a relative path over 4096 bytes cannot be created below any directory (the OS refuses the
    # absolute path first), so the packer's own check is tested with a lower limit
    monkeypatch.setattr(manifest_mod, "PATH_MAX_BYTES", 100)
    model = tmp_path / "model"
    (model / ("n" * 60)).mkdir(parents=True)
    (model / ("n" * 60) / ("m" * 40)).write_bytes(b"x")  # 101 bytes
    with pytest.raises(PackageError, match="101 bytes long, over the limit of 100 bytes"):
        pack(str(model), KEY, KEY_ID, str(tmp_path), scrypt_logn=10, progress=False)
    (model / ("n" * 60) / ("m" * 40)).rename(model / ("n" * 60) / ("m" * 39))  # 100 bytes
    pack(str(model), KEY, KEY_ID, str(tmp_path), scrypt_logn=10, progress=False)


def test_the_directory_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest_mod, "DIRS_MAX", 3)
    assert len(Manifest.from_bytes(manifest_raw(["a/b/c/f", "a/g", "h"])).dirs()) == 3
    with pytest.raises(ManifestError, match="more than 3 directories"):
        Manifest.from_bytes(manifest_raw(["a/b/c/f", "d/g"]))
    model = tmp_path / "model"
    (model / "a" / "b").mkdir(parents=True)
    (model / "c" / "d").mkdir(parents=True)
    (model / "a" / "b" / "f").write_bytes(b"x")
    (model / "c" / "d" / "g").write_bytes(b"x")
    with pytest.raises(PackageError, match="more than 3 directories.*pack the model in parts"):
        pack(str(model), KEY, KEY_ID, str(tmp_path), scrypt_logn=10, progress=False)


def test_chains_of_directories_are_refused_with_bounded_memory():
    # 64-component paths under distinct top directories: 63 new directories per 140-byte path
    # (a JSON entry of ~200 bytes) cost a few hundred bytes each; the limit stops it at DIRS_MAX
    files = DIRS_MAX // (PATH_MAX_DEPTH - 1) + 1
    raw = manifest_raw([f"{i:06d}/" + deep_path(PATH_MAX_DEPTH - 1, "a") for i in range(files)])
    with address_space_cap(), measured() as cost, pytest.raises(ManifestError, match="directories"):
        Manifest.from_bytes(raw)
    assert cost["peak"] < 256 << 20, cost


# 5. linear checks -----------------------------------------------------------------------------
def test_deep_paths_cost_memory_linear_in_the_manifest(tmp_path):
    # 1000 paths at both limits, each under its own top directory: the old per-path expansion of
    # every ancestor as a string kept 63 prefixes of ~2 KB each per path (~125 MiB here)
    paths = [f"{i:04d}/" + "/".join(["z" * 63] * (PATH_MAX_DEPTH - 1)) for i in range(1000)]
    assert all(len(p.encode()) <= PATH_MAX_BYTES and p.count("/") == PATH_MAX_DEPTH - 1 for p in paths)
    raw = manifest_raw(paths)
    with address_space_cap(), measured() as cost:
        m = Manifest.from_bytes(raw)
    assert cost["peak"] < 64 << 20, cost
    assert m.lookup(paths[-1]) is m.files[-1] and m.lookup(paths[-1].rsplit("/", 1)[0]) is not None


def test_a_large_flat_manifest_parses_in_linear_time():
    small = manifest_raw([f"model/shard-{i:08d}.safetensors" for i in range(10_000)])
    large = manifest_raw([f"model/shard-{i:08d}.safetensors" for i in range(100_000)])

    def seconds(raw: bytes) -> float:
        started = time.perf_counter()
        m = Manifest.from_bytes(raw)
        m.dirs()
        return time.perf_counter() - started

    t_small = min(seconds(small) for _ in range(3))
    t_large = seconds(large)
    assert t_large < 40 * t_small + 1.0, (t_small, t_large)  # 10x the files: about 10x the time
    assert t_large < 20


@pytest.mark.parametrize("paths,needle", [
    (["a", "a"], "'a' is listed twice"),
    (["a", "a/b"], "'a' is both a file and a directory"),
    (["a/b", "a"], "'a' is both a file and a directory"),
    (["a/b/c", "a/b"], "'a/b' is both a file and a directory"),
    ([deep_path(PATH_MAX_DEPTH), "/".join(["d"] * (PATH_MAX_DEPTH - 1))], "is both a file and a directory"),
])
def test_duplicates_and_conflicts_are_still_refused(paths, needle):
    with pytest.raises(ManifestError, match=needle):
        Manifest.from_bytes(manifest_raw(paths))


def test_dirs_and_the_tree_are_built_once():
    m = Manifest.from_bytes(manifest_raw(["a/b/c", "a/d", "e"]))
    assert m.dirs() == {"a", "a/b"}
    assert m.dirs() is m.dirs() and m.tree() is m.tree()
    assert m.lookup("") is m.tree() and m.lookup("a/b/c") is m.files[0]
    assert m.lookup("a/b/c/x") is None and m.lookup("a//b") is None and m.lookup("zz") is None
    assert m.lookup("a").names() == ["b", "d"]
