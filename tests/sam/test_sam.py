"""``sam``: pack, info, verify and unpack through the Python API and ``python -m sam`` (no FUSE).

Every pack uses scrypt log2(N) = 10 except the one test of the default KDF parameters.
Invariants checked throughout: whenever a read or an unpack succeeds its bytes equal the
plaintext, and whenever unpack fails nothing it wrote is left in OUT. The C and pure-Python
block paths must agree byte for byte and error for error.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import sam.pack as sampack
from sam import exitcodes
from sam import keys as keymod
from sam.cli import ARGV_KEY_WARNING, main
from sam.content import MAGIC, PackageCodec
from sam.errors import (
    ChunkError,
    DigestMismatch,
    IntegrityError,
    ManifestError,
    OutputError,
    PackageError,
    UsageError,
    WrongKeyError,
)
from sam.manifest import CHUNK_SIZE, DIGEST_RE, HEADER_LEN, NONCE_LEN, TAG_LEN, Manifest
from sam.pack import pack
from sam.package import Package
from sam.unpack import unpack
from tests.support import PROJECT, run_cli

C = CHUNK_SIZE
CIPHER_CS = C + NONCE_LEN + TAG_LEN
KEY = b"correct horse battery"
KEY_ID = "model-key-0001"
LOGN = 10
BLOCK_PATHS = ["python", "c"]


# helpers -------------------------------------------------------------------------------------
def need_c() -> None:
    """Skip unless the C block path is built; CRYPTFS_REQUIRE_C=1 turns the skip into a failure."""
    try:
        from cryptfs.core import _blocks  # noqa: F401
    except ImportError:
        if os.environ.get("CRYPTFS_REQUIRE_C") == "1":
            pytest.fail("CRYPTFS_REQUIRE_C=1 but cryptfs.core._blocks is not importable")
        pytest.skip("C block path (cryptfs.core._blocks) not built")


@pytest.fixture(params=BLOCK_PATHS)
def block_path(request) -> str:
    if request.param == "c":
        need_c()
    return request.param


def cli(*args: str | int | os.PathLike) -> int:
    return main([str(a) if isinstance(a, int) else os.fspath(a) for a in args])


def write_tree(root: Path, files: dict[str, bytes], modes: dict[str, int] | None = None) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, (modes or {}).get(rel, 0o644))
    return root


def read_tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every regular file under root (no .sam): relative path -> (content, permission bits)."""
    out = {}
    for path in sorted(root.rglob("*")):
        assert not path.is_symlink(), f"{path} is a symlink"
        if path.is_file():
            out[path.relative_to(root).as_posix()] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return out


def pack_api(model: Path, parent: Path, key: bytes = KEY, key_id: str = KEY_ID, **kw):
    parent.mkdir(parents=True, exist_ok=True)
    return pack(str(model), key, key_id, str(parent), scrypt_logn=LOGN, progress=False, **kw)


def unlock(pkg: Path, key: bytes = KEY, block_path: str | None = None):
    return Package.open(str(pkg)).unlock(key, block_path)


def read_file(u, rel: str) -> bytes:
    with u.open(rel) as f:
        return f.read(0, f.plain_size + 1)


def key_file(path: Path, data: bytes = KEY) -> Path:
    path.write_bytes(data)
    return path


def cipher_off(chunk_no: int) -> int:
    return HEADER_LEN + chunk_no * CIPHER_CS


def cipher_size(size: int) -> int:
    return HEADER_LEN + size + (NONCE_LEN + TAG_LEN) * -(-size // C)


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(data)


def manifest_path(pkg: Path) -> Path:
    return pkg / ".sam" / "manifest.json"


def edit_manifest(pkg: Path, change) -> None:
    """Parse, change and rewrite manifest.json canonically (as the packer writes it)."""
    obj = json.loads(manifest_path(pkg).read_bytes())
    change(obj)
    raw = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    manifest_path(pkg).write_bytes(raw)


def flip_hex_digit(value: str, i: int = 0) -> str:
    """The same hex string with digit i changed (0 <-> 1, ...): still valid hex, another value."""
    return f"{value[:i]}{int(value[i], 16) ^ 1:x}{value[i + 1:]}"


def printed_digest(out: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith("digest: ")]
    assert len(lines) == 1, out
    return lines[0].removeprefix("digest: ")


# the standard tampering fixture ---------------------------------------------------------------
A_SIZE = 3 * C + 5  # four chunks, the last one partial
LAST = "z_last.bin"  # sorted last: unpack has written every other file when it reaches it


@dataclass
class Packed:
    tmp: Path
    model: Path
    pkg: Path
    kf: Path
    digest: str
    plain: dict[str, bytes]

    @property
    def out(self) -> Path:
        return self.tmp / "out"


def make_model(root: Path) -> dict[str, bytes]:
    plain = {
        "a.bin": os.urandom(A_SIZE),
        "b.bin": os.urandom(A_SIZE),  # same size as a.bin: the swap case
        "dir/c.txt": b"a small file in a directory\n" * 4,
        "empty": b"",
        LAST: os.urandom(2 * C),
    }
    write_tree(root, plain)
    return plain


@pytest.fixture
def packed(tmp_path) -> Packed:
    model = tmp_path / "model"
    plain = make_model(model)
    result = pack_api(model, tmp_path / "pkgs")
    return Packed(tmp_path, model, Path(result.out_dir), key_file(tmp_path / "key"), result.digest, plain)


def assert_unpack_refused(p: Packed, code: int, *needles: str, capsys=None) -> str:
    """CLI unpack fails with ``code``, mentions each needle, and leaves no OUT behind."""
    rc = cli("unpack", p.pkg, p.out, "--key-file", p.kf, "-q")
    err = capsys.readouterr().err if capsys is not None else ""
    assert rc == code, err
    assert not p.out.exists()
    for needle in needles:
        assert needle in err
    return err


# round trips ---------------------------------------------------------------------------------
EDGE_FILES = {
    "size_0": b"",
    "size_1": b"x",
    "chunk_minus_1": os.urandom(C - 1),
    "chunk": os.urandom(C),
    "chunk_plus_1": os.urandom(C + 1),
    "five_chunks_plus_1": os.urandom(5 * C + 1),
    "weights/big.safetensors": os.urandom(3 * (1 << 20) + 7),
    "a/b/c/d/deep.txt": b"deep\n",
    "données/模型 ü.bin": "ünïcødé content\n".encode(),
    "ñame with spaces.txt": b"spaces\n",
    "run.sh": b"#!/bin/sh\necho hi\n",
    "secret.txt": b"owner only\n",
    "marker.txt": b"PLAINTEXT-MARKER-0123456789" * 5000,
}
EDGE_MODES = {"run.sh": 0o755, "secret.txt": 0o600, "size_1": 0o444}


def test_round_trip_api(tmp_path, block_path):
    model = write_tree(tmp_path / "model", EDGE_FILES, EDGE_MODES)
    result = pack_api(model, tmp_path / "pkgs", block_path=block_path)
    pkg = Path(result.out_dir)
    assert pkg == tmp_path / "pkgs" / KEY_ID
    assert result.files == len(EDGE_FILES)
    assert result.plain_bytes == sum(map(len, EDGE_FILES.values()))
    # readable relative paths, sealed content of the documented size
    on_disk = {p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file()}
    assert on_disk == set(EDGE_FILES) | {".sam/manifest.json", ".sam/manifest.mac"}
    for rel, data in EDGE_FILES.items():
        sealed = (pkg / rel).read_bytes()
        assert len(sealed) == cipher_size(len(data))
        assert sealed[:8] == MAGIC
        if len(data) >= 16:
            assert data[:16] not in sealed
    assert b"PLAINTEXT-MARKER" not in (pkg / "marker.txt").read_bytes()
    u = unlock(pkg, block_path=block_path)
    assert u.codec.block_path == block_path
    assert {f.path: (f.size, f.mode) for f in u.manifest.files} == {
        rel: (len(data), EDGE_MODES.get(rel, 0o644)) for rel, data in EDGE_FILES.items()}
    for rel, data in EDGE_FILES.items():
        assert read_file(u, rel) == data, rel
    assert u.verify(pytest.fail) == []
    out = tmp_path / "out"
    assert unpack(u, str(out), progress=False) == result.plain_bytes
    assert read_tree(out) == {rel: (data, EDGE_MODES.get(rel, 0o644)) for rel, data in EDGE_FILES.items()}


def test_seal_paths_interoperate(tmp_path):
    """A package sealed by one block path reads identically through the other."""
    need_c()
    model = write_tree(tmp_path / "model", {"f": os.urandom(2 * C + 3), "g": os.urandom(C)})
    for seal, read in (("python", "c"), ("c", "python")):
        pkg = Path(pack_api(model, tmp_path / seal, block_path=seal).out_dir)
        u = unlock(pkg, block_path=read)
        assert read_file(u, "f") == (model / "f").read_bytes()
        assert read_file(u, "g") == (model / "g").read_bytes()


def test_round_trip_cli(tmp_path, capsys):
    model = write_tree(tmp_path / "model", EDGE_FILES, EDGE_MODES)
    kf = key_file(tmp_path / "key", KEY + b"\n")
    assert cli("pack", model, KEY_ID, "--key-file", kf, "--out", tmp_path, "--scryptn", LOGN) == 0
    out = capsys.readouterr()
    digest = printed_digest(out.out)
    assert f"packed {len(EDGE_FILES)} files" in out.out
    assert ARGV_KEY_WARNING not in out.err
    pkg = tmp_path / KEY_ID
    assert Package.open(str(pkg)).digest == digest
    assert cli("verify", pkg, "--key-file", kf, "--expect-digest", digest) == 0
    assert "no problems found" in capsys.readouterr().out
    assert cli("unpack", pkg, tmp_path / "out", "--key-file", kf, "-q") == 0
    assert read_tree(tmp_path / "out") == {
        rel: (data, EDGE_MODES.get(rel, 0o644)) for rel, data in EDGE_FILES.items()}


def test_hugging_face_cache_symlinks_are_followed(tmp_path):
    """snapshots/<rev>/file -> ../../blobs/<sha>: the package holds the blobs' bytes as files."""
    repo = tmp_path / "hub" / "models--org--tiny"
    config, weights, tok = b'{"model_type": "tiny"}\n', os.urandom(2 * C + 11), b"tokenizer\n"
    blobs = {}
    for data, mode in ((config, 0o644), (weights, 0o755), (tok, 0o600)):
        sha = hashlib.sha256(data).hexdigest()
        write_tree(repo / "blobs", {sha: data}, {sha: mode})
        blobs[data] = sha
    rev = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / rev
    (snap / "sub").mkdir(parents=True)
    os.symlink(f"../../blobs/{blobs[config]}", snap / "config.json")
    os.symlink(f"../../../blobs/{blobs[weights]}", snap / "sub" / "model.safetensors")
    (repo / "tokdir").mkdir()
    os.symlink(f"../blobs/{blobs[tok]}", repo / "tokdir" / "tokenizer.json")
    os.symlink("../../tokdir", snap / "tok")  # a symlinked directory
    pkg = Path(pack_api(snap, tmp_path / "pkgs").out_dir)
    assert not any(p.is_symlink() for p in pkg.rglob("*"))
    u = unlock(pkg)
    assert read_file(u, "sub/model.safetensors") == weights
    unpack(u, str(tmp_path / "out"), progress=False)
    assert read_tree(tmp_path / "out") == {
        "config.json": (config, 0o644),
        "sub/model.safetensors": (weights, 0o755),
        "tok/tokenizer.json": (tok, 0o600),
    }


def test_default_kdf_parameters(tmp_path):
    """The one pack with the default scrypt cost: N = 2^17, r = 8, p = 1, a 32-byte salt."""
    model = write_tree(tmp_path / "model", {"tiny": b"tiny model\n"})
    result = pack(str(model), KEY, KEY_ID, str(tmp_path), progress=False)
    obj = json.loads(manifest_path(Path(result.out_dir)).read_bytes())
    assert {k: obj["kdf"][k] for k in ("name", "log_n", "r", "p")} == {
        "name": "scrypt", "log_n": 17, "r": 8, "p": 1}
    assert len(bytes.fromhex(obj["kdf"]["salt"])) == 32
    m = Manifest.from_bytes(manifest_path(Path(result.out_dir)).read_bytes())
    kek = keymod.derive_kek(KEY, KEY_ID, m.kdf)
    assert kek.check == m.key_check  # the stored parameters are used
    assert keymod.unwrap(kek, m.wrapped_key, m.package_id, KEY_ID) is not None


def test_nested_dot_sam_is_an_ordinary_directory(tmp_path):
    model = write_tree(tmp_path / "model", {"sub/.sam/x": b"not metadata\n", ".hidden": b"h\n"})
    u = unlock(Path(pack_api(model, tmp_path / "pkgs").out_dir))
    assert read_file(u, "sub/.sam/x") == b"not metadata\n"
    assert read_file(u, ".hidden") == b"h\n"


# tampering: content --------------------------------------------------------------------------
@pytest.mark.parametrize("where,offset,needle", [
    ("nonce", cipher_off(1) + 3, "chunk 1 of a.bin"),
    ("ciphertext", cipher_off(1) + NONCE_LEN + 1000, "chunk 1 of a.bin"),
    ("tag", cipher_off(2) - 1, "chunk 1 of a.bin"),
    ("last partial chunk", cipher_size(A_SIZE) - 1, "chunk 3 of a.bin"),
    ("header magic", 0, "a.bin: no sam file header"),
    ("header file ID", 8, "a.bin: file ID differs"),
])
def test_flipped_byte_in_a_file(packed, capsys, block_path, where, offset, needle):
    flip(packed.pkg / "a.bin", offset)
    problems = unlock(packed.pkg, block_path=block_path).verify(lambda m: None)
    assert len(problems) == 1 and needle in problems[0], problems
    assert cli("verify", packed.pkg, "--key-file", packed.kf, "-q") == exitcodes.INTEGRITY
    out = capsys.readouterr()
    assert needle in out.out and "1 problems found" in out.err
    assert_unpack_refused(packed, exitcodes.INTEGRITY, needle, capsys=capsys)
    # the untouched files still read correctly
    u = unlock(packed.pkg, block_path=block_path)
    assert read_file(u, "b.bin") == packed.plain["b.bin"]
    if where not in ("header magic", "header file ID"):
        with pytest.raises(ChunkError) as e, u.open("a.bin") as f:
            f.read(0, A_SIZE)
        assert e.value.path == "a.bin"
        chunk = 3 if where == "last partial chunk" else 1
        assert e.value.block_no == chunk
        with u.open("a.bin") as f:  # the chunks before it are still served, and only those
            assert f.read(0, chunk * C) == packed.plain["a.bin"][: chunk * C]


def test_unpack_removes_files_written_before_a_bad_chunk(packed, capsys):
    flip(packed.pkg / LAST, cipher_off(1) + 100)
    assert_unpack_refused(packed, exitcodes.INTEGRITY, f"chunk 1 of {LAST}", capsys=capsys)
    packed.out.mkdir()  # an existing empty OUT is emptied again, not removed
    assert cli("unpack", packed.pkg, packed.out, "--key-file", packed.kf, "-q") == exitcodes.INTEGRITY
    assert list(packed.out.iterdir()) == []


def test_all_zero_chunk_is_an_error(packed, capsys, block_path):
    data = bytearray((packed.pkg / "a.bin").read_bytes())
    data[cipher_off(1):cipher_off(2)] = bytes(CIPHER_CS)
    (packed.pkg / "a.bin").write_bytes(data)
    u = unlock(packed.pkg, block_path=block_path)
    with pytest.raises(ChunkError) as e, u.open("a.bin") as f:
        f.read(C, C)
    assert e.value.block_no == 1 and "all-zero" in str(e.value) and "a.bin" in str(e.value)
    assert_unpack_refused(packed, exitcodes.INTEGRITY, "chunk 1 of a.bin", "all-zero", capsys=capsys)


def test_whole_body_zeroed_is_an_error(packed, capsys):
    """Not one hole, a file of holes: still refused (gocryptfs would serve zeros)."""
    path = packed.pkg / LAST
    path.write_bytes(path.read_bytes()[:HEADER_LEN] + bytes(cipher_size(2 * C) - HEADER_LEN))
    assert cli("verify", packed.pkg, "--key-file", packed.kf, "-q") == exitcodes.INTEGRITY
    assert f"chunk 0 of {LAST}" in capsys.readouterr().out


@pytest.mark.parametrize("chunks", [0, 1, 2, 3])
def test_truncated_at_a_chunk_boundary(packed, capsys, block_path, chunks):
    path = packed.pkg / "a.bin"
    path.write_bytes(path.read_bytes()[: cipher_off(chunks)])
    problems = unlock(packed.pkg, block_path=block_path).verify(lambda m: None)
    assert len(problems) == 1 and problems[0].startswith("a.bin: ") and "truncated" in problems[0]
    assert cli("verify", packed.pkg, "--key-file", packed.kf, "-q") == exitcodes.INTEGRITY
    assert "a.bin" in capsys.readouterr().out
    assert_unpack_refused(packed, exitcodes.INTEGRITY, "a.bin", capsys=capsys)


def test_truncation_is_caught_by_the_last_chunk_flag(packed, block_path):
    """Even a reader told the shorter size (as a rewritten manifest would) refuses the new last chunk."""
    path = packed.pkg / "a.bin"
    path.write_bytes(path.read_bytes()[: cipher_off(2)])
    u = unlock(packed.pkg, block_path=block_path)
    file_id = u.by_path["a.bin"].file_id
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(2 * C)
        with pytest.raises(ChunkError) as e:
            u.codec.read_into(fd, file_id, 2 * C, 0, memoryview(buf))
        assert e.value.block_no == 1
        # chunk 0 was sealed as "not last" for both sizes: it still reads
        assert u.codec.read_into(fd, file_id, 2 * C, 0, memoryview(buf)[:C]) == C
        assert bytes(buf[:C]) == packed.plain["a.bin"][:C]
    finally:
        os.close(fd)


def test_extended_file_is_an_error(packed, capsys):
    with open(packed.pkg / "a.bin", "ab") as f:
        f.write(b"\0" * CIPHER_CS)
    assert cli("verify", packed.pkg, "--key-file", packed.kf, "-q") == exitcodes.INTEGRITY
    assert "a.bin" in capsys.readouterr().out
    assert_unpack_refused(packed, exitcodes.INTEGRITY, "a.bin", capsys=capsys)


def test_chunk_from_another_package_with_the_same_key(packed, capsys, block_path):
    other = Path(pack_api(packed.model, packed.tmp / "other").out_dir)  # same tree, key and key ID
    mine, theirs = (packed.pkg / "a.bin").read_bytes(), (other / "a.bin").read_bytes()
    assert mine[cipher_off(1):cipher_off(2)] != theirs[cipher_off(1):cipher_off(2)]
    spliced = mine[: cipher_off(1)] + theirs[cipher_off(1):cipher_off(2)] + mine[cipher_off(2):]
    (packed.pkg / "a.bin").write_bytes(spliced)
    problems = unlock(packed.pkg, block_path=block_path).verify(lambda m: None)
    assert len(problems) == 1 and "chunk 1 of a.bin: authentication failed" in problems[0]
    assert_unpack_refused(packed, exitcodes.INTEGRITY, "chunk 1 of a.bin", capsys=capsys)
    # the other package's whole file (its own header): a file ID the manifest does not know
    (packed.pkg / "a.bin").write_bytes(theirs)
    problems = unlock(packed.pkg, block_path=block_path).verify(lambda m: None)
    assert len(problems) == 1 and "a.bin: file ID differs" in problems[0]
    # its chunks behind our header: chunk 0 already fails (another package ID and key)
    (packed.pkg / "a.bin").write_bytes(mine[:HEADER_LEN] + theirs[HEADER_LEN:])
    problems = unlock(packed.pkg, block_path=block_path).verify(lambda m: None)
    assert len(problems) == 1 and "chunk 0 of a.bin" in problems[0]


@pytest.mark.parametrize("case", ["reordered", "from another file"])
def test_chunk_moved_within_the_package(packed, block_path, case):
    a = bytearray((packed.pkg / "a.bin").read_bytes())
    c0, c1 = slice(cipher_off(0), cipher_off(1)), slice(cipher_off(1), cipher_off(2))
    if case == "reordered":
        a[c0], a[c1] = a[c1], a[c0]
    else:
        a[c0] = (packed.pkg / "b.bin").read_bytes()[c0]
    (packed.pkg / "a.bin").write_bytes(a)
    problems = unlock(packed.pkg, block_path=block_path).verify(lambda m: None)
    assert len(problems) == 1 and "chunk 0 of a.bin: authentication failed" in problems[0]


# tampering: names and the set of files -------------------------------------------------------
def test_swapped_files(packed, capsys, block_path):
    a, b = packed.pkg / "a.bin", packed.pkg / "b.bin"
    a.rename(packed.tmp / "swap")
    b.rename(a)
    (packed.tmp / "swap").rename(b)
    problems = unlock(packed.pkg, block_path=block_path).verify(lambda m: None)
    assert sorted(problems) == [
        "a.bin: file ID differs from the manifest (it is the content of b.bin: files were swapped)",
        "b.bin: file ID differs from the manifest (it is the content of a.bin: files were swapped)",
    ]
    assert cli("verify", packed.pkg, "--key-file", packed.kf, "-q") == exitcodes.INTEGRITY
    assert capsys.readouterr().out.count("swapped") == 2
    assert_unpack_refused(packed, exitcodes.INTEGRITY, "swapped", capsys=capsys)


@pytest.mark.parametrize("old,new", [
    ("dir/c.txt", "dir/c.tyt"),  # one byte of the name flipped
    ("dir/c.txt", "c.txt"),  # moved to another directory
    ("a.bin", "données.bin"),
])
def test_renamed_file(packed, capsys, block_path, old, new):
    (packed.pkg / old).rename(packed.pkg / new)
    problems = unlock(packed.pkg, block_path=block_path).verify(lambda m: None)
    assert sorted(problems) == sorted([
        f"{new}: on disk but not in the manifest (added after packing)",
        f"{old}: listed in the manifest but missing from the package (deleted or renamed)",
    ])
    assert cli("verify", packed.pkg, "--key-file", packed.kf, "-q") == exitcodes.INTEGRITY
    out = capsys.readouterr().out
    assert f"{new}: on disk but not in the manifest" in out and f"{old}: listed in the manifest" in out
    assert_unpack_refused(packed, exitcodes.INTEGRITY, old, "missing", capsys=capsys)


def test_deleted_file(packed, capsys):
    (packed.pkg / "empty").unlink()
    assert cli("verify", packed.pkg, "--key-file", packed.kf, "-q") == exitcodes.INTEGRITY
    assert "empty: listed in the manifest but missing" in capsys.readouterr().out
    assert_unpack_refused(packed, exitcodes.INTEGRITY, "empty", "missing", capsys=capsys)


def test_added_files_are_reported_and_never_served(packed, capsys):
    (packed.pkg / "extra.bin").write_bytes((packed.pkg / "a.bin").read_bytes())
    (packed.pkg / "newdir").mkdir()
    (packed.pkg / "newdir" / "x").write_bytes(b"x")
    (packed.pkg / "dir" / "more.txt").write_bytes(b"more")
    problems = unlock(packed.pkg).verify(lambda m: None)
    assert sorted(problems) == [
        f"{rel}: on disk but not in the manifest (added after packing)"
        for rel in ("dir/more.txt", "extra.bin", "newdir/")]
    assert cli("verify", packed.pkg, "--key-file", packed.kf, "-q") == exitcodes.INTEGRITY
    assert "3 problems found" in capsys.readouterr().err
    # unpack writes exactly the manifest's tree: the added files never appear
    assert cli("unpack", packed.pkg, packed.out, "--key-file", packed.kf, "-q") == 0
    assert read_tree(packed.out) == {rel: (data, 0o644) for rel, data in packed.plain.items()}


def test_cipher_file_replaced_by_a_symlink(packed, capsys):
    other = Path(pack_api(packed.model, packed.tmp / "other").out_dir)
    (packed.pkg / "a.bin").unlink()
    os.symlink(other / "a.bin", packed.pkg / "a.bin")
    assert cli("verify", packed.pkg, "--key-file", packed.kf, "-q") == exitcodes.INTEGRITY
    assert "a.bin: a symlink" in capsys.readouterr().out
    assert_unpack_refused(packed, exitcodes.INTEGRITY, "a.bin", capsys=capsys)


def test_cipher_file_replaced_by_a_fifo_does_not_hang(packed, capsys):
    """A FIFO where a file should be: refused at once (an open without O_NONBLOCK would block)."""
    (packed.pkg / "dir" / "c.txt").unlink()
    os.mkfifo(packed.pkg / "dir" / "c.txt")
    assert cli("verify", packed.pkg, "--key-file", packed.kf, "-q") == exitcodes.INTEGRITY
    assert "dir/c.txt: not a regular file" in capsys.readouterr().out
    assert_unpack_refused(packed, exitcodes.INTEGRITY, "dir/c.txt", capsys=capsys)


# tampering: the manifest, the key, the key ID, rollback --------------------------------------
def test_canonical_rewrite_helper_is_faithful(packed):
    before = manifest_path(packed.pkg).read_bytes()
    edit_manifest(packed.pkg, lambda obj: None)
    assert manifest_path(packed.pkg).read_bytes() == before
    assert cli("verify", packed.pkg, "--key-file", packed.kf, "-q") == 0


@pytest.mark.parametrize("field,change,code,needle", [
    ("size", lambda o: o["files"][0].update(size=o["files"][0]["size"] - 1), 26, "fails authentication"),
    ("mode", lambda o: o["files"][0].update(mode=0o755), 26, "fails authentication"),
    ("file id", lambda o: o["files"][0].update(id=o["files"][1]["id"]), 26, "fails authentication"),
    ("path", lambda o: o["files"][0].update(path="a2.bin"), 26, "fails authentication"),
    ("removed entry", lambda o: o["files"].pop(2), 26, "fails authentication"),
    ("package id", lambda o: o.update(package_id="11" * 16), 26, "fails authentication"),
    # wrapped_key is nonce (hex digits 0-23) | sealed master key (24-87) | tag (88-119)
    ("wrapped key nonce", lambda o: o.update(wrapped_key=flip_hex_digit(o["wrapped_key"], 0)), 26,
     "fails authentication"),
    ("wrapped key ciphertext", lambda o: o.update(wrapped_key=flip_hex_digit(o["wrapped_key"], 50)), 26,
     "fails authentication"),
    ("wrapped key tag", lambda o: o.update(wrapped_key=flip_hex_digit(o["wrapped_key"], 119)), 26,
     "fails authentication"),
    ("wrapped key length", lambda o: o.update(wrapped_key=o["wrapped_key"][:-2]), 8, "wrapped_key"),
    ("created", lambda o: o.update(created="2020-01-01T00:00:00Z"), 26, "fails authentication"),
    ("chunk size", lambda o: o["cipher"].update(chunk_size=2 * C), 26, "fails authentication"),
    ("salt", lambda o: o["kdf"].update(salt="22" * 32), 12, "does not unlock"),
    ("log_n", lambda o: o["kdf"].update(log_n=11), 12, "does not unlock"),
    ("key check", lambda o: o.update(key_check="33" * 32), 12, "does not unlock"),
    ("key id", lambda o: o.update(key_id="other-key-0002"), 12, "does not unlock"),
    ("bad json", None, 8, "not valid JSON"),
    ("kdf memory", lambda o: o["kdf"].update(log_n=20, r=16), 8, "MiB of memory"),  # 2 GiB: never run
    ("kdf log_n", lambda o: o["kdf"].update(log_n=21), 8, "kdf.log_n"),
])
def test_tampered_manifest(packed, capsys, field, change, code, needle):
    if change is None:
        manifest_path(packed.pkg).write_bytes(manifest_path(packed.pkg).read_bytes()[:-20])
    else:
        edit_manifest(packed.pkg, change)
    assert cli("verify", packed.pkg, "--key-file", packed.kf, "-q") == code
    assert needle in capsys.readouterr().err
    assert_unpack_refused(packed, code, needle, capsys=capsys)


def test_every_single_byte_flip_of_the_manifest_or_mac_is_refused(tmp_path):
    model = write_tree(tmp_path / "model", {"m": b"model"})
    pkg = Path(pack_api(model, tmp_path).out_dir)
    seen = set()
    # every byte of manifest.json; every hex digit of manifest.mac (its trailing newline is not part of it)
    for name, count in (("manifest.json", None), ("manifest.mac", 64)):
        path = pkg / ".sam" / name
        original = path.read_bytes()
        for i in range(count or len(original)):
            data = bytearray(original)
            data[i] ^= 0x01
            path.write_bytes(data)
            with pytest.raises((ManifestError, WrongKeyError, IntegrityError)) as e:
                Package.open(str(pkg)).unlock(KEY)
            seen.add(type(e.value))
        path.write_bytes(original)
    assert seen == {ManifestError, WrongKeyError, IntegrityError}
    assert read_file(unlock(pkg), "m") == b"model"


def test_flipped_mac(packed, capsys):
    mac = packed.pkg / ".sam" / "manifest.mac"
    text = mac.read_text()
    mac.write_text(("1" if text[0] != "1" else "2") + text[1:])
    assert_unpack_refused(packed, exitcodes.INTEGRITY, "manifest.json", "fails authentication",
                          capsys=capsys)


def test_wrong_key(packed, capsys):
    kf = key_file(packed.tmp / "wrong", KEY + b"!")
    for args in (("verify", packed.pkg), ("unpack", packed.pkg, packed.out)):
        assert cli(*args, "--key-file", kf, "-q") == exitcodes.WRONG_KEY
        assert f"the key does not unlock package {KEY_ID}" in capsys.readouterr().err
    assert not packed.out.exists()
    with pytest.raises(WrongKeyError):
        unlock(packed.pkg, KEY[:-1])


def test_wrong_key_id(packed, capsys):
    """Another valid key ID, written consistently (directory renamed too): the key check fails."""
    edit_manifest(packed.pkg, lambda o: o.update(key_id="other-key-0002"))
    pkg = packed.pkg.rename(packed.pkg.parent / "other-key-0002")
    assert cli("info", pkg) == 0  # readable without the key, and shows the (altered) key ID
    out = capsys.readouterr()
    assert "other-key-0002" in out.out and "warning" not in out.err
    assert cli("verify", pkg, "--key-file", packed.kf, "-q") == exitcodes.WRONG_KEY
    assert "key ID" in capsys.readouterr().err
    with pytest.raises(WrongKeyError):
        unlock(pkg)


@pytest.fixture
def unwraps(monkeypatch) -> list[bool]:
    """Whether each master-key unwrap of the reader succeeded: tells a failed unwrap from a failed MAC."""
    results: list[bool] = []
    real = keymod.unwrap

    def spy(*args):
        master = real(*args)
        results.append(master is not None)
        return master

    monkeypatch.setattr(keymod, "unwrap", spy)
    return results


def test_wrong_key_id_with_a_recomputed_key_check_fails_the_unwrap(packed, capsys, unwraps):
    """Even with the key check redone for the new key ID (by a key holder), the wrapped master key
    binds the old one: its key-wrap key and its AAD both hold the key ID."""
    m = Package.open(str(packed.pkg)).manifest
    new_kek = keymod.derive_kek(KEY, "other-key-0002", m.kdf)
    assert keymod.unwrap(new_kek, m.wrapped_key, m.package_id, "other-key-0002") is None
    unwraps.clear()
    edit_manifest(packed.pkg, lambda o: o.update(key_id="other-key-0002", key_check=new_kek.check.hex()))
    with pytest.raises(IntegrityError, match="manifest.json .* fails authentication"):
        unlock(packed.pkg)
    assert unwraps == [False]  # past the key check, refused by the unwrap
    assert_unpack_refused(packed, exitcodes.INTEGRITY, "fails authentication", capsys=capsys)


def test_wrong_key_id_with_the_master_key_rewrapped_fails_the_mac(packed, capsys, unwraps):
    """A key holder who also re-wraps the master key for the new key ID: the MAC key (and the
    content key) are derived with the key ID, so the MAC still binds the old one."""
    m = Package.open(str(packed.pkg)).manifest
    master = keymod.unwrap(keymod.derive_kek(KEY, KEY_ID, m.kdf), m.wrapped_key, m.package_id, KEY_ID)
    new_kek = keymod.derive_kek(KEY, "other-key-0002", m.kdf)
    rewrapped = keymod.wrap(new_kek, master, m.package_id, "other-key-0002")
    edit_manifest(packed.pkg, lambda o: o.update(key_id="other-key-0002", key_check=new_kek.check.hex(),
                                                 wrapped_key=rewrapped.hex()))
    assert keymod.unwrap(new_kek, rewrapped, m.package_id, "other-key-0002") == master
    assert keymod.package_keys(master, "other-key-0002") != keymod.package_keys(master, KEY_ID)
    unwraps.clear()
    with pytest.raises(IntegrityError, match="manifest.json .* fails authentication"):
        unlock(packed.pkg)
    assert unwraps == [True]  # the unwrap succeeds; the MAC refuses
    assert_unpack_refused(packed, exitcodes.INTEGRITY, "fails authentication", capsys=capsys)


def _package_keys(pkg: Path) -> tuple[Manifest, keymod.KeyEncryptionKeys, bytes, keymod.PackageKeys]:
    m = Package.open(str(pkg)).manifest
    kek = keymod.derive_kek(KEY, m.key_id, m.kdf)
    master = keymod.unwrap(kek, m.wrapped_key, m.package_id, m.key_id)
    assert master is not None and len(master) == 32
    return m, kek, master, keymod.package_keys(master, m.key_id)


def test_each_package_has_its_own_random_master_key(packed):
    """Same model, plaintext key and key ID: another master key, so other content and MAC keys."""
    other = Path(pack_api(packed.model, packed.tmp / "other").out_dir)
    m1, kek1, master1, keys1 = _package_keys(packed.pkg)
    m2, kek2, master2, keys2 = _package_keys(other)
    assert m1.key_id == m2.key_id == KEY_ID
    assert master1 != master2
    assert keys1.content != keys2.content and keys1.mac != keys2.mac
    assert kek1.wrap != kek2.wrap  # another salt as well
    # neither the content key nor the MAC key is a function of the plaintext key alone
    assert {keys1.content, keys1.mac, keys2.content, keys2.mac}.isdisjoint({kek1.wrap, kek1.check})


def test_wrapped_key_is_bound_to_its_package(packed, capsys, unwraps):
    """Swapping wrapped_key between two packages of the same key and key ID fails the unwrap (26),
    also when the other package's KDF salt and key check come along (its package ID is in the AAD)."""
    other = Path(pack_api(packed.model, packed.tmp / "other").out_dir)
    m1, _, _, _ = _package_keys(packed.pkg)
    m2, kek2, master2, _ = _package_keys(other)
    assert keymod.unwrap(kek2, m2.wrapped_key, m2.package_id, KEY_ID) == master2
    assert keymod.unwrap(kek2, m2.wrapped_key, m1.package_id, KEY_ID) is None  # the package ID binds it
    theirs = json.loads(manifest_path(other).read_bytes())
    original = manifest_path(packed.pkg).read_bytes()
    for fields in (["wrapped_key"], ["wrapped_key", "kdf", "key_check"]):
        manifest_path(packed.pkg).write_bytes(original)
        edit_manifest(packed.pkg, lambda o, fields=fields: o.update({f: theirs[f] for f in fields}))
        unwraps.clear()
        with pytest.raises(IntegrityError, match="manifest.json .* fails authentication"):
            unlock(packed.pkg)
        assert unwraps == [False]  # past the key check (not WrongKeyError), refused by the unwrap
        assert cli("verify", packed.pkg, "--key-file", packed.kf, "-q") == exitcodes.INTEGRITY
        assert "fails authentication" in capsys.readouterr().err
        assert_unpack_refused(packed, exitcodes.INTEGRITY, "fails authentication", capsys=capsys)


def test_renamed_package_directory_warns_in_info(packed, capsys):
    pkg = packed.pkg.rename(packed.pkg.parent / "renamed-dir-0003")
    assert cli("info", pkg, "--json") == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["key_id"] == KEY_ID
    assert "warning" in out.err and KEY_ID in out.err


def test_older_package_under_expect_digest(packed, capsys):
    (packed.model / "a.bin").write_bytes(os.urandom(A_SIZE))  # the owner's next version
    new = Path(pack_api(packed.model, packed.tmp / "v2").out_dir)
    new_digest = Package.open(str(new)).digest
    assert new_digest != packed.digest
    assert cli("verify", new, "--key-file", packed.kf, "--expect-digest", new_digest, "-q") == 0
    for args in (("verify", packed.pkg), ("unpack", packed.pkg, packed.out)):
        assert cli(*args, "--key-file", packed.kf, "--expect-digest", new_digest, "-q") == 13
        err = capsys.readouterr().err
        assert packed.digest in err and new_digest in err and "older" in err
    assert not packed.out.exists()
    with pytest.raises(DigestMismatch):
        Package.open(str(packed.pkg)).check_digest(new_digest)
    # the old manifest copied over the new package: pinned -> 13; unpinned -> the files do not match
    shutil.rmtree(new / ".sam")
    shutil.copytree(packed.pkg / ".sam", new / ".sam")
    assert cli("verify", new, "--key-file", packed.kf, "--expect-digest", new_digest, "-q") == 13
    assert cli("verify", new, "--key-file", packed.kf, "-q") == exitcodes.INTEGRITY
    assert "a.bin: file ID differs" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["sha256:" + "A" * 64, "sha256:abc", "md5:" + "0" * 64, ""])
def test_malformed_expect_digest(packed, capsys, bad):
    assert cli("verify", packed.pkg, "--key-file", packed.kf, "--expect-digest", bad) == exitcodes.USAGE
    assert "--expect-digest" in capsys.readouterr().err


# several problems at once ---------------------------------------------------------------------
def test_verify_lists_each_problem(packed, capsys):
    assert cli("verify", packed.pkg, "--key-file", packed.kf) == 0
    out = capsys.readouterr()
    assert "no problems found" in out.out and packed.digest in out.out
    flip(packed.pkg / "a.bin", cipher_off(2) + 50)
    (packed.pkg / "empty").unlink()
    (packed.pkg / "added.txt").write_bytes(b"added")
    path = packed.pkg / LAST
    path.write_bytes(path.read_bytes()[: cipher_off(1)])
    (packed.pkg / "dir" / "c.txt").rename(packed.pkg / "dir" / "renamed.txt")
    assert cli("verify", packed.pkg, "--key-file", packed.kf) == exitcodes.INTEGRITY
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert all(line.startswith("verify: ") for line in lines)
    expected = ["added.txt: on disk", "dir/renamed.txt: on disk", "chunk 2 of a.bin", "dir/c.txt: listed",
                "empty: listed", f"{LAST}: "]
    assert len(lines) == len(expected)
    for needle in expected:
        assert sum(needle in line for line in lines) == 1, needle
    assert f"{len(expected)} problems found" in out.err
    assert read_file(unlock(packed.pkg), "b.bin") == packed.plain["b.bin"]  # the rest still reads


# C and Python block paths ---------------------------------------------------------------------
DIFF_SIZE = 4 * C + 1000  # five chunks, the last one partial


def edges(size: int) -> list[int]:
    points = {k * C + d for k in range(size // C + 2) for d in (-1, 0, 1)} | {size - 1, size, size + 1}
    return sorted(p for p in points if p >= 0)


def outcome(codec: PackageCodec, fd: int, file_id: bytes, size: int, off: int, ln: int):
    buf = bytearray(ln)
    try:
        n = codec.read_into(fd, file_id, size, off, memoryview(buf))
    except ChunkError as e:
        return ("error", e.block_no)
    return ("ok", bytes(buf[:n]))


@pytest.fixture
def diff_pkg(tmp_path):
    need_c()
    model = write_tree(tmp_path / "model", {"f": os.urandom(DIFF_SIZE), "g": os.urandom(DIFF_SIZE),
                                            "whole": os.urandom(3 * C), "tiny": b"0123456789"})
    pkg = Path(pack_api(model, tmp_path / "pkgs").out_dir)
    return model, pkg


def test_block_paths_read_identically_at_every_chunk_edge(diff_pkg):
    model, pkg = diff_pkg
    py, c = unlock(pkg, block_path="python"), unlock(pkg, block_path="c")
    assert (py.codec.block_path, c.codec.block_path) == ("python", "c")
    for rel in ("f", "whole", "tiny"):
        plain = (model / rel).read_bytes()
        points = edges(len(plain))
        with py.open(rel) as fp, c.open(rel) as fc:
            for off, end in itertools.combinations(points, 2):
                want = plain[off:end]
                assert fp.read(off, end - off) == want, (rel, off, end)
                assert fc.read(off, end - off) == want, (rel, off, end)
            assert fc.read(0, len(plain) + C) == fp.read(0, len(plain) + C) == plain


def _splice(data: bytearray, chunk: int, other: bytes) -> bytearray:
    data[cipher_off(chunk):cipher_off(chunk + 1)] = other[cipher_off(chunk):cipher_off(chunk + 1)]
    return data


# name -> (change the cipher bytes of f, the size a reader is told, the chunks that must fail)
DIFF_TAMPERS = {
    "flip ciphertext": (lambda d, g, o: d.__setitem__(cipher_off(2) + 99, d[cipher_off(2) + 99] ^ 1) or d,
                        DIFF_SIZE, {2}),
    "flip tag": (lambda d, g, o: d.__setitem__(cipher_off(1) - 1, d[cipher_off(1) - 1] ^ 0x80) or d,
                 DIFF_SIZE, {0}),
    "flip nonce of last": (lambda d, g, o: d.__setitem__(cipher_off(4), d[cipher_off(4)] ^ 4) or d,
                           DIFF_SIZE, {4}),
    "all-zero chunk": (lambda d, g, o: d[: cipher_off(1)] + bytes(CIPHER_CS) + d[cipher_off(2):],
                       DIFF_SIZE, {1}),
    "all-zero nonce": (lambda d, g, o: d[: cipher_off(3)] + bytes(NONCE_LEN) + d[cipher_off(3) + NONCE_LEN:],
                       DIFF_SIZE, {3}),
    "swapped chunks": (lambda d, g, o: d[: cipher_off(1)] + d[cipher_off(2):cipher_off(3)]
                       + d[cipher_off(1):cipher_off(2)] + d[cipher_off(3):], DIFF_SIZE, {1, 2}),
    "chunk of another file": (lambda d, g, o: _splice(d, 0, g), DIFF_SIZE, {0}),
    "chunk of another package": (lambda d, g, o: _splice(d, 3, o), DIFF_SIZE, {3}),
    "cut after 2 chunks": (lambda d, g, o: d[: cipher_off(2)], DIFF_SIZE, {2, 3, 4}),
    "cut inside chunk 3": (lambda d, g, o: d[: cipher_off(3) + 500], DIFF_SIZE, {3, 4}),
    "last chunk 1 byte short": (lambda d, g, o: d[:-1], DIFF_SIZE, {4}),
    "one byte appended": (lambda d, g, o: d + b"x", DIFF_SIZE, {4}),
    "cut after 3 chunks, reader told 3": (lambda d, g, o: d[: cipher_off(3)], 3 * C, {2}),
}


@pytest.mark.parametrize("name", DIFF_TAMPERS)
def test_block_paths_fail_identically_on_tampering(diff_pkg, tmp_path, name):
    model, pkg = diff_pkg
    other = Path(pack_api(model, tmp_path / "other").out_dir)
    change, size, bad = DIFF_TAMPERS[name]
    data = bytearray((pkg / "f").read_bytes())
    tampered = change(data, (pkg / "g").read_bytes(), (other / "f").read_bytes())
    path = tmp_path / "tampered"
    path.write_bytes(tampered)
    plain = (model / "f").read_bytes()[:size]
    py, c = unlock(pkg, block_path="python"), unlock(pkg, block_path="c")
    file_id = py.by_path["f"].file_id
    fd = os.open(path, os.O_RDONLY)
    errors = 0
    try:
        for off in edges(size):
            for ln in (1, 2, C - 1, C, C + 1, 3 * C, DIFF_SIZE + C):
                a = outcome(py.codec, fd, file_id, size, off, ln)
                b = outcome(c.codec, fd, file_id, size, off, ln)
                assert a == b, f"off={off} len={ln}: python={a[0]} {a[1] if a[0] == 'error' else ''} " \
                               f"c={b[0]} {b[1] if b[0] == 'error' else ''}"
                end = min(off + ln, size)
                touched = set(range(off // C, (end - 1) // C + 1)) if off < end else set()
                if touched & bad:
                    assert a[0] == "error" and a[1] in bad, (off, ln, a[:1])
                    errors += 1
                else:
                    assert a == ("ok", plain[off:end]), (off, ln)
    finally:
        os.close(fd)
    assert errors


# key and key ID validation -------------------------------------------------------------------
@pytest.mark.parametrize("key,ok", [
    ("k" * 3, False), ("k" * 4, True), ("k" * 128, True), ("k" * 129, False),
    ("éa", False),  # 2 characters, 3 bytes
    ("éé", True),  # 2 characters, 4 bytes
])
def test_key_length(tmp_path, capsys, key, ok):
    model = write_tree(tmp_path / "model", {"f": b"data"})
    out = tmp_path / "out"
    out.mkdir()
    rc = cli("pack", model, key, KEY_ID, "--out", out, "--scryptn", LOGN, "-q")
    err = capsys.readouterr().err
    if ok:
        assert rc == 0, err
        assert read_file(unlock(out / KEY_ID, key.encode()), "f") == b"data"
    else:
        assert rc == exitcodes.USAGE
        assert f"the plaintext key is {len(key.encode())} bytes: it must be 4 to 128 bytes" in err
        assert list(out.iterdir()) == []


def test_key_length_counts_the_key_file_bytes_without_the_newline(tmp_path, capsys):
    model = write_tree(tmp_path / "model", {"f": b"data"})
    rc = cli("pack", model, KEY_ID, "--key-file", key_file(tmp_path / "k", b"abc\n"), "--out", tmp_path,
             "--scryptn", LOGN)
    assert rc == exitcodes.USAGE
    assert "the plaintext key is 3 bytes" in capsys.readouterr().err
    with pytest.raises(UsageError):
        pack(str(model), b"k" * 129, KEY_ID, str(tmp_path), scrypt_logn=LOGN)
    assert not (tmp_path / KEY_ID).exists()


@pytest.mark.parametrize("n,ok", [(7, False), (8, True), (48, True), (49, False)])
def test_key_id_length(tmp_path, capsys, n, ok):
    model = write_tree(tmp_path / "model", {"f": b"data"})
    out = tmp_path / "out"
    out.mkdir()
    key_id = "k" * n
    rc = cli("pack", model, "key!", key_id, "--out", out, "--scryptn", LOGN, "-q")
    err = capsys.readouterr().err
    if ok:
        assert rc == 0, err
        assert Package.open(str(out / key_id)).manifest.key_id == key_id
    else:
        assert rc == exitcodes.USAGE
        assert f"the key ID is {n} bytes: it must be 8 to 48 bytes" in err
        assert list(out.iterdir()) == []


@pytest.mark.parametrize("key_id", [
    "../xxxxxxxx", "a/bbbbbbbb", ".hidden..", "..........", "-leading-dash", "has space1",
    "tab\tinside", "newline-end\n", "ключ-модели", "back\\slash",
])
def test_key_id_unsafe_as_a_directory_name(tmp_path, capsys, key_id):
    model = write_tree(tmp_path / "model", {"f": b"data"})
    out = tmp_path / "a" / "b"
    out.mkdir(parents=True)
    assert cli("pack", "--out", out, "--scryptn", LOGN, "--", model, "key!", key_id) == exitcodes.USAGE
    assert "must be usable as a directory name" in capsys.readouterr().err
    assert list(out.iterdir()) == [] and sorted(os.listdir(tmp_path / "a")) == ["b"]
    with pytest.raises(UsageError):
        pack(str(model), KEY, key_id, str(out), scrypt_logn=LOGN)


def test_key_id_with_dots_inside_is_a_plain_directory_name(tmp_path):
    model = write_tree(tmp_path / "model", {"f": b"data"})
    assert Path(pack_api(model, tmp_path, key_id="model..v1.2").out_dir) == tmp_path / "model..v1.2"


# --key-file and the argv warning -------------------------------------------------------------
@pytest.mark.parametrize("content,key", [
    (b"abcd\n", b"abcd"),
    (b"abcd\r\n", b"abcd"),
    (b"abcd\n\n", b"abcd\n"),  # only one newline is stripped
    (b"abcd\r\n\r\n", b"abcd\r\n"),
    (b"abcd", b"abcd"),
    (b"ab\ncd\n", b"ab\ncd"),
    (b"abcd\r", b"abcd\r"),  # a lone CR is part of the key
])
def test_key_file_strips_exactly_one_trailing_newline(tmp_path, capsys, content, key):
    model = write_tree(tmp_path / "model", {"f": b"data"})
    kf = key_file(tmp_path / "key", content)
    assert cli("pack", model, KEY_ID, "--key-file", kf, "--out", tmp_path, "--scryptn", LOGN, "-q") == 0
    assert ARGV_KEY_WARNING not in capsys.readouterr().err
    pkg = tmp_path / KEY_ID
    assert read_file(unlock(pkg, key), "f") == b"data"
    if content != key:
        with pytest.raises(WrongKeyError):
            unlock(pkg, content)
    assert cli("verify", pkg, "--key-file", kf, "-q") == 0
    # the key bytes alone in a file (with a newline added where it cannot be mistaken) are the same key
    again = key if key.endswith(b"\r") else key + b"\n"
    assert cli("verify", pkg, "--key-file", key_file(tmp_path / "k2", again), "-q") == 0


def test_key_file_dash_reads_stdin(tmp_path, capsys, monkeypatch):
    model = write_tree(tmp_path / "model", {"f": b"data"})
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from stdin\n")))
    assert cli("pack", model, KEY_ID, "--key-file", "-", "--out", tmp_path, "--scryptn", LOGN, "-q") == 0
    assert read_file(unlock(tmp_path / KEY_ID, b"from stdin"), "f") == b"data"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from stdin\r\n")))
    assert cli("unpack", tmp_path / KEY_ID, tmp_path / "out", "--key-file", "-", "-q") == 0
    assert (tmp_path / "out" / "f").read_bytes() == b"data"


@pytest.mark.parametrize("content", [b"", b"\n", b"\r\n"])
def test_empty_key_is_a_key_read_error(packed, capsys, monkeypatch, content):
    kf = key_file(packed.tmp / "emptykey", content)
    assert cli("pack", packed.model, "another-key-id", "--key-file", kf, "--out", packed.tmp) == 9
    assert "is empty" in capsys.readouterr().err
    assert not (packed.tmp / "another-key-id").exists()
    assert cli("verify", packed.pkg, "--key-file", kf) == exitcodes.KEY_READ
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(content)))
    assert cli("unpack", packed.pkg, packed.out, "--key-file", "-") == exitcodes.KEY_READ
    assert "standard input" in capsys.readouterr().err
    assert not packed.out.exists()


def test_missing_key_file(packed, capsys):
    assert cli("verify", packed.pkg, "--key-file", packed.tmp / "nope") == exitcodes.KEY_READ
    assert "cannot read the key" in capsys.readouterr().err


def test_key_on_the_command_line_warns(tmp_path, capsys):
    model = write_tree(tmp_path / "model", {"f": b"data"})
    secret = "argv-secret-key"
    assert cli("pack", model, secret, KEY_ID, "--out", tmp_path, "--scryptn", LOGN) == 0
    out = capsys.readouterr()
    assert ARGV_KEY_WARNING in out.err and "--key-file" in out.err
    assert secret not in out.out + out.err
    assert read_file(unlock(tmp_path / KEY_ID, secret.encode()), "f") == b"data"


def test_pack_argument_count(tmp_path, capsys):
    model = write_tree(tmp_path / "model", {"f": b"data"})
    kf = key_file(tmp_path / "key")
    assert cli("pack", model, KEY.decode(), KEY_ID, "--key-file", kf, "--out", tmp_path) == exitcodes.USAGE
    assert cli("pack", model, KEY_ID, "--out", tmp_path) == exitcodes.USAGE
    assert cli("pack", model, "key!", KEY_ID, "--scryptn", "9", "--out", tmp_path) == exitcodes.USAGE
    assert "--scryptn" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["key", "model"]


# output directories --------------------------------------------------------------------------
def test_refuses_a_non_empty_output_directory(tmp_path, capsys):
    model = write_tree(tmp_path / "model", {"f": b"data"})
    (tmp_path / KEY_ID).mkdir()
    (tmp_path / KEY_ID / "keep").write_bytes(b"keep me")
    rc = cli("pack", model, "key!", KEY_ID, "--out", tmp_path, "--scryptn", LOGN)
    assert rc == exitcodes.OUTPUT
    assert "not empty" in capsys.readouterr().err
    assert os.listdir(tmp_path / KEY_ID) == ["keep"]
    assert (tmp_path / KEY_ID / "keep").read_bytes() == b"keep me"
    assert sorted(os.listdir(tmp_path)) == sorted([KEY_ID, "model"])  # no hidden partial directory
    # an existing empty directory is used
    (tmp_path / KEY_ID / "keep").unlink()
    assert cli("pack", model, "key!", KEY_ID, "--out", tmp_path, "--scryptn", LOGN, "-q") == 0
    assert read_file(unlock(tmp_path / KEY_ID, b"key!"), "f") == b"data"


def test_unpack_refuses_a_non_empty_output_directory(packed, capsys):
    packed.out.mkdir()
    (packed.out / "keep").write_bytes(b"keep me")
    rc = cli("unpack", packed.pkg, packed.out, "--key-file", packed.kf, "-q")
    assert rc == exitcodes.OUTPUT
    assert "not empty" in capsys.readouterr().err
    assert os.listdir(packed.out) == ["keep"] and (packed.out / "keep").read_bytes() == b"keep me"


def test_out_parent_and_current_directory(tmp_path, capsys, monkeypatch):
    model = write_tree(tmp_path / "model", {"f": b"data"})
    assert cli("pack", model, "key!", KEY_ID, "--out", tmp_path / "parent", "--scryptn", LOGN) == 7
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "parent").mkdir()
    assert cli("pack", model, "key!", KEY_ID, "--out", tmp_path / "parent", "--scryptn", LOGN, "-q") == 0
    assert Package.open(str(tmp_path / "parent" / KEY_ID)).manifest.key_id == KEY_ID
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert cli("pack", model, "key!", KEY_ID, "--scryptn", LOGN, "-q") == 0
    assert os.listdir(cwd) == [KEY_ID]
    monkeypatch.chdir(model)  # ./KEY_ID would be inside MODEL_DIR
    assert cli("pack", ".", "key!", KEY_ID, "--scryptn", LOGN, "-q") == exitcodes.OUTPUT
    assert "inside MODEL_DIR" in capsys.readouterr().err
    assert os.listdir(model) == ["f"]


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("when", ["sealing", "writing the manifest"])
def test_interrupted_pack_leaves_nothing_behind(tmp_path, capsys, monkeypatch, when):
    files = {f"shard-{i}.bin": os.urandom(65 * C + i) for i in range(4)}  # two jobs per file
    model = write_tree(tmp_path / "model", files)
    parent = tmp_path / "parent"
    parent.mkdir()
    if when == "sealing":
        calls = itertools.count()
        seen = []

        class Failing(PackageCodec):
            def seal_into(self, *args):
                if next(calls) == 3:
                    seen.append(os.listdir(parent))  # the hidden work directory exists now
                    raise KeyboardInterrupt
                return super().seal_into(*args)

        monkeypatch.setattr(sampack, "PackageCodec", Failing)
        rc = cli("pack", model, "key!", KEY_ID, "--out", parent, "--scryptn", LOGN, "-q")
        assert rc == exitcodes.INTERRUPTED
        assert "interrupted" in capsys.readouterr().err
        assert len(seen) == 1 and len(seen[0]) == 1 and seen[0][0].startswith(f".{KEY_ID}.partial-")
    else:
        real = sampack._write_meta
        seen = []

        def failing(work, raw, mac):
            real(work, raw, mac)  # the hidden directory now holds a complete-looking package
            seen.append(sorted(os.listdir(work)))
            raise _Interrupted("disk full")

        monkeypatch.setattr(sampack, "_write_meta", failing)
        with pytest.raises(_Interrupted):
            pack(str(model), KEY, KEY_ID, str(parent), scrypt_logn=LOGN, progress=False)
        assert seen == [sorted([".sam", *files])]
    assert os.listdir(parent) == []
    monkeypatch.undo()
    assert cli("pack", model, "key!", KEY_ID, "--out", parent, "--scryptn", LOGN, "-q") == 0
    assert os.listdir(parent) == [KEY_ID]


# model directories pack refuses --------------------------------------------------------------
def _loop_to_parent(model: Path) -> None:
    (model / "sub").mkdir()
    os.symlink("..", model / "sub" / "back")


def _self_loop(model: Path) -> None:
    os.symlink("me", model / "me")


def _broken(model: Path) -> None:
    os.symlink("no/such/target", model / "dangling")


def _meta_dir(model: Path) -> None:
    (model / ".sam").mkdir()
    (model / ".sam" / "x").write_bytes(b"x")


def _meta_file(model: Path) -> None:
    (model / ".sam").write_bytes(b"x")


def _fifo(model: Path) -> None:
    os.mkfifo(model / "pipe")


@pytest.mark.parametrize("make,needle", [
    (_loop_to_parent, "symlink loop"),
    (_self_loop, "me"),
    (_broken, "broken symlink"),
    (_meta_dir, ".sam/ is reserved"),
    (_meta_file, ".sam/ is reserved"),
    (_fifo, "not a regular file or directory"),
])
def test_unpackable_model_directory(tmp_path, capsys, make, needle):
    model = write_tree(tmp_path / "model", {"f": b"data"})
    make(model)
    out = tmp_path / "out"
    out.mkdir()
    assert cli("pack", model, "key!", KEY_ID, "--out", out, "--scryptn", LOGN) == exitcodes.PACKAGE
    assert needle in capsys.readouterr().err
    assert os.listdir(out) == []
    with pytest.raises(PackageError):
        pack(str(model), KEY, KEY_ID, str(out), scrypt_logn=LOGN)


def test_missing_empty_or_file_model_directory(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_bytes(b"x")
    for model, needle in (("missing", "does not exist"), ("empty", "holds no files"),
                          ("file", "not a directory")):
        assert cli("pack", tmp_path / model, "key!", KEY_ID, "--out", tmp_path) == exitcodes.PACKAGE
        assert needle in capsys.readouterr().err
    assert not (tmp_path / KEY_ID).exists()


def test_not_a_package(tmp_path, capsys, packed):
    assert cli("info", tmp_path / "missing") == exitcodes.PACKAGE
    assert cli("verify", packed.model, "--key-file", packed.kf) == exitcodes.MANIFEST
    assert "is not a sam package" in capsys.readouterr().err
    with pytest.raises(OutputError):
        unpack(unlock(packed.pkg), str(tmp_path / "no" / "such" / "parent"), progress=False)


# info and the digest -------------------------------------------------------------------------
def test_info_json_digest_is_what_expect_digest_takes(tmp_path, capsys):
    model = write_tree(tmp_path / "model", {"w/модель.bin": os.urandom(C + 1), "run.sh": b"#!/bin/sh\n"},
                       {"run.sh": 0o755})
    secret = "info-secret-key"
    assert cli("pack", model, secret, KEY_ID, "--out", tmp_path, "--scryptn", LOGN) == 0
    digest = printed_digest(capsys.readouterr().out)
    assert DIGEST_RE.match(digest)
    pkg = tmp_path / KEY_ID
    assert cli("info", pkg, "--json") == 0
    out = capsys.readouterr()
    obj = json.loads(out.out)  # the whole of stdout is one JSON object
    assert isinstance(obj, dict) and out.out.lstrip().startswith("{") and out.out.rstrip().endswith("}")
    assert obj["digest"] == digest
    assert digest == "sha256:" + hashlib.sha256(manifest_path(pkg).read_bytes()).hexdigest()
    assert obj["key_id"] == KEY_ID and obj["version"] == 1
    assert {f["path"]: (f["size"], f["mode"]) for f in obj["files"]} == {
        "w/модель.bin": (C + 1, "0644"), "run.sh": (10, "0755")}
    assert obj["kdf"]["log_n"] == LOGN and obj["total_size"] == C + 11
    assert out.err == ""
    assert secret not in out.out and secret.encode().hex() not in out.out
    kf = key_file(tmp_path / "key", secret.encode())
    assert cli("verify", pkg, "--key-file", kf, "--expect-digest", obj["digest"], "-q") == 0
    assert cli("unpack", pkg, tmp_path / "o", "--key-file", kf, "--expect-digest", obj["digest"], "-q") == 0


def test_info_text_without_the_key(packed, capsys):
    assert cli("info", packed.pkg) == 0
    out = capsys.readouterr().out
    assert f"KeyID:   {KEY_ID}" in out and f"Digest:  {packed.digest}" in out
    assert "scrypt N=2^10 r=8 p=1" in out
    for rel, data in packed.plain.items():
        assert any(line.endswith(f" {len(data)} {rel}") for line in out.splitlines()), rel
    assert KEY.decode() not in out


def test_digest_is_new_on_every_pack(tmp_path, capsys):
    model = write_tree(tmp_path / "model", {"f": b"same tree"})
    digests = []
    for i in range(3):
        (tmp_path / str(i)).mkdir()
        assert cli("pack", model, "key!", KEY_ID, "--out", tmp_path / str(i), "--scryptn", LOGN, "-q") == 0
        digest = capsys.readouterr().out.strip()  # -q prints the digest alone
        assert digest == Package.open(str(tmp_path / str(i) / KEY_ID)).digest
        digests.append(digest)
    assert len(set(digests)) == 3


# a real process -------------------------------------------------------------------------------
def test_python_dash_m_sam(tmp_path):
    model = write_tree(tmp_path / "model", {"config.json": b"{}\n", "w/x.bin": os.urandom(C + 5)})
    pack_run = run_cli("pack", model, KEY_ID, "--key-file", "-", "--out", tmp_path, "--scryptn", str(LOGN),
                       "-q", module="sam", input=KEY + b"\n")
    assert pack_run.returncode == 0, pack_run.stderr
    digest = pack_run.stdout.decode().strip()
    assert DIGEST_RE.match(digest)
    assert b"warning" not in pack_run.stderr
    info = run_cli("info", tmp_path / KEY_ID, "--json", module="sam")
    assert info.returncode == 0 and json.loads(info.stdout)["digest"] == digest
    kf = key_file(tmp_path / "key", KEY + b"\n")
    run = run_cli("unpack", tmp_path / KEY_ID, tmp_path / "out", "--key-file", kf, "--expect-digest", digest,
                  module="sam")
    assert run.returncode == 0, run.stderr
    assert read_tree(tmp_path / "out") == {"config.json": (b"{}\n", 0o644),
                                          "w/x.bin": ((model / "w/x.bin").read_bytes(), 0o644)}
    flip(tmp_path / KEY_ID / "w/x.bin", cipher_off(1) + 20)
    run = run_cli("verify", tmp_path / KEY_ID, "--key-file", kf, module="sam")
    assert run.returncode == exitcodes.INTEGRITY
    assert b"chunk 1 of w/x.bin" in run.stdout
    run = run_cli("pack", model, "abc", KEY_ID, "--out", tmp_path / "p2", module="sam")
    assert run.returncode == exitcodes.USAGE and b"visible to other users" in run.stderr


# hardening found in review: hostile manifests, hostile files, keys that look like options -----
@pytest.mark.parametrize("change,needle", [
    (lambda o: o["kdf"].update(log_n=17, r=1), "needs log_n < 16 r"),  # scrypt would raise
    (lambda o: o["kdf"].update(log_n=17, p=16), "8 times the default"),  # 16x the default's work
    (lambda o: o.update(created="\x1b]0;pwned\x07\x1b[2J"), "printable"),  # terminal escapes
    ("huge size", "not valid JSON"),  # over Python's int digit limit
])
def test_hostile_manifest_is_a_clean_manifest_error(packed, capsys, change, needle):
    if callable(change):
        edit_manifest(packed.pkg, change)
    else:
        raw = manifest_path(packed.pkg).read_bytes()
        manifest_path(packed.pkg).write_bytes(raw.replace(b'"size":0', b'"size":' + b"9" * 5000, 1))
    for command in (("info", packed.pkg), ("verify", packed.pkg, "--key-file", packed.kf)):
        assert cli(*command) == exitcodes.MANIFEST
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err and "\x1b" not in err


def test_deeply_nested_manifest_is_refused(packed, capsys):
    manifest_path(packed.pkg).write_bytes(b"[" * 200_000)
    assert cli("info", packed.pkg) == exitcodes.MANIFEST
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["manifest.json", "manifest.mac"])
def test_a_fifo_for_the_manifest_never_blocks(packed, capsys, name):
    path = packed.pkg / ".sam" / name
    path.unlink()
    os.mkfifo(path)
    r = subprocess.run([sys.executable, "-m", "sam", "verify", str(packed.pkg), "--key-file", str(packed.kf)],
                       capture_output=True, text=True, timeout=30, cwd=PROJECT)
    assert r.returncode == exitcodes.MANIFEST and "not a regular file" in r.stderr


def test_a_control_character_in_a_name_cannot_split_a_report_line(tmp_path, capsys):
    model = write_tree(tmp_path / "model", {"bad\nname.bin": os.urandom(C + 1), "ok": b"x"})
    pkg = Path(pack_api(model, tmp_path).out_dir)
    with open(pkg / "bad\nname.bin", "r+b") as f:
        f.truncate(100)
    assert cli("verify", pkg, "--key-file", key_file(tmp_path / "key"), "-q") == exitcodes.INTEGRITY
    out = capsys.readouterr().out
    assert "bad\\nname.bin" in out and len(out.strip().splitlines()) == 1


def test_unpack_refuses_an_output_inside_the_package(packed, capsys):
    assert cli("unpack", packed.pkg, packed.pkg / "plain", "--key-file", packed.kf, "-q") == exitcodes.OUTPUT
    assert "inside the package" in capsys.readouterr().err
    assert not (packed.pkg / "plain").exists()


def test_verify_reports_an_unreadable_file_as_an_io_error(packed, capsys, monkeypatch):
    from sam import package

    real = package.PlainFile.read_into

    def failing(self, plain_off, out):
        if self.entry.path == "a.bin":
            raise OSError(5, "Input/output error")
        return real(self, plain_off, out)

    monkeypatch.setattr(package.PlainFile, "read_into", failing)
    assert cli("verify", packed.pkg, "--key-file", packed.kf, "-q") == exitcodes.ERROR
    assert "a.bin: Input/output error (an I/O error, not tampering)" in capsys.readouterr().out


@pytest.mark.parametrize("key", ["-secret-key", "--help"])
def test_a_key_that_looks_like_an_option(tmp_path, key):
    """The packager passes "--": a key may start with "-" and is never echoed in an error."""
    model = write_tree(tmp_path / "model", {"m.bin": b"model"})
    r = subprocess.run([str(PROJECT / "do_content_packager.sh"), str(model), key, KEY_ID], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, r.stderr
    kf = tmp_path / "kf"
    kf.write_text(key)
    assert cli("verify", tmp_path / KEY_ID, "--key-file", kf, "-q") == 0
    if key == "--help":
        return  # python -m sam pack MODEL --help KEY_ID asks for help, as any command does
    r = subprocess.run([sys.executable, "-m", "sam", "pack", str(model), key, "other-key-01"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == exitcodes.USAGE and key.strip("-") not in r.stderr + r.stdout
    assert not (tmp_path / "other-key-01").exists()


def test_no_follow_symlinks_refuses_a_symlink(tmp_path, capsys):
    model = write_tree(tmp_path / "model", {"real.bin": b"weights"})
    (model / "link.bin").symlink_to(model / "real.bin")
    kf = key_file(tmp_path / "key")
    assert cli("pack", model, KEY_ID, "--key-file", kf, "--out", tmp_path, "--scryptn", LOGN,
               "--no-follow-symlinks", "-q") == exitcodes.PACKAGE
    assert "link.bin: a symlink" in capsys.readouterr().err and not (tmp_path / KEY_ID).exists()
    assert cli("pack", model, KEY_ID, "--key-file", kf, "--out", tmp_path, "--scryptn", LOGN, "-q") == 0
    assert read_file(unlock(tmp_path / KEY_ID), "link.bin") == b"weights"


def test_an_added_file_with_a_non_utf8_name_is_reported(packed, capsys):
    with open(os.path.join(os.fsencode(packed.pkg), b"added-\xff.bin"), "wb") as f:
        f.write(b"x")
    assert cli("verify", packed.pkg, "--key-file", packed.kf, "-q") == exitcodes.INTEGRITY
    out = capsys.readouterr().out
    assert "added-\\xff.bin: on disk but not in the manifest" in out


def test_docs_document_the_sam_exit_codes():
    doc = (PROJECT / "docs" / "exit-codes.md").read_text(encoding="utf-8")
    section = doc.split("\n## sam\n", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| (\d+) \| `(\w+)` \|", section, re.M))
    assert {v: int(k) for k, v in rows.items()} == exitcodes.ALL
    assert len(set(exitcodes.ALL.values())) == len(exitcodes.ALL)
