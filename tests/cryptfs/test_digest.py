"""``cryptfs digest``: the tree digest of docs/tree-digest.md, on trees written by real gocryptfs.

The digest is computed without the key; it must be stable (two runs, a ``cp -a`` elsewhere)
and change with every tamper a storage attacker can make outside the blocks. The document's
independent script and worked example are checked against the command here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cryptfs import digest as dg
from cryptfs import exitcodes
from cryptfs.errors import CipherDirError, DigestMismatch
from cryptfs.password import KeySource
from cryptfs.tree import open_tree
from tests.support import EXAMPLES, PASSWORD_FILE, PROJECT, run_cli

DOC = PROJECT / "docs" / "tree-digest.md"
BLOCK = 4096 + 32  # a GCM cipher block
HEADER = 18

MODEL_FILES = {  # no holes: model files are not sparse (the pinned mount refuses holes)
    "model.bin": 5 * 4096 + 123,
    "a.bin": 2 * 4096 + 100,
    "b.bin": 2 * 4096 + 100,  # same size as a.bin: a swap keeps every size
    "config.json": 40,
    "tiny": 5,
    "empty": 0,
    "sub/nested.bin": 3 * 4096,
    "sub/deeper/inner.txt": 300,
    "l" * 200: 1000,  # a long name: hashed name plus .name sidecar
}


def write_model(root: Path) -> dict[str, bytes]:
    """Random contents of MODEL_FILES written below ``root`` (a mount or a plain directory)."""
    contents = {}
    for name, size in MODEL_FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        contents[name] = os.urandom(size)
        path.write_bytes(contents[name])
    os.symlink("config.json", root / "link")
    os.symlink("../a.bin", root / "sub" / "up")
    return contents


def gocryptfs_model(oracle, tmp: Path, *flags: str) -> tuple[Path, dict[str, bytes]]:
    """A model tree written through a real gocryptfs mount: (cipherdir, plaintext contents)."""
    cipher = tmp / "cipher"
    oracle.init(cipher, PASSWORD_FILE, *flags)
    with oracle.mount(cipher, tmp / "gmnt") as gm:
        contents = write_model(gm)
    return cipher, contents


def cipher_path(cipher: Path, plain: str) -> Path:
    """The backing path of a plaintext path (the key is used here, by the test only)."""
    tree = open_tree(str(cipher), KeySource([str(PASSWORD_FILE)]))
    return Path(os.fsdecode(tree.cipher_path(plain.encode())))


def digest_of(cipher: Path, *extra: str) -> str:
    r = run_cli("digest", *extra, cipher)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode().strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", out), out
    return out


def doc_script(tmp: Path) -> Path:
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r"```python\n(#!/usr/bin/env python3\n.*?)```", text, re.S)
    assert m, "docs/tree-digest.md: the independent script is missing"
    script = tmp / "tree_digest.py"
    script.write_text(m.group(1), encoding="utf-8")
    return script


def run_doc_script(script: Path, cipher: Path, *extra: str) -> str:
    r = subprocess.run([sys.executable, "-I", str(script), str(cipher), *extra], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture(scope="module")
def model(oracle, tmp_path_factory) -> tuple[Path, str]:
    cipher, _ = gocryptfs_model(oracle, tmp_path_factory.mktemp("model"))
    return cipher, digest_of(cipher)


@pytest.fixture
def copy(model, tmp_path) -> Path:
    dst = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(model[0]), str(dst)], check=True)
    return dst


# stability -----------------------------------------------------------------------------------
def test_stable_across_runs_and_a_copy(model, copy):
    cipher, d = model
    assert digest_of(cipher) == d
    assert digest_of(copy) == d


def test_unchanged_by_what_it_leaves_out(model, copy):
    """mtime, atime, ownership and content blocks are not in it (docs/tree-digest.md §2.1)."""
    os.utime(copy, (1, 1))
    for dirpath, _, files in os.walk(copy):
        for f in files:
            os.utime(os.path.join(dirpath, f), (12345, 67890), follow_symlinks=False)
            if os.geteuid() == 0:
                os.lchown(os.path.join(dirpath, f), 1234, 5678)
    victim = cipher_path(copy, "model.bin")
    with open(victim, "r+b") as f:  # a flipped content byte: the block's tag catches it, not the digest
        f.seek(HEADER + BLOCK + 100)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 1]))
    assert digest_of(copy) == model[1]


def test_json_summary(model):
    cipher, d = model
    r = run_cli("digest", "--json", cipher)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    n_files = len(MODEL_FILES)
    assert out["digest"] == d and out["format"] == "cryptfs-tree-digest-v1"
    assert out["files"] == n_files and out["symlinks"] == 2 and out["dirs"] == 3
    # root + subdirs + files + links + 3 dir IVs + 1 sidecar
    assert out["entries"] == 1 + 2 + n_files + 2 + 3 + 1
    files = [p for d, _, names in os.walk(cipher) for n in names
             if not (p := Path(d, n)).is_symlink() and not n.startswith("gocryptfs.")]
    assert out["bytes"] == sum(p.stat().st_size for p in files) + (
        cipher_path(cipher, "l" * 200).stat().st_size)  # the long-named file starts with gocryptfs.


def test_config_elsewhere_gives_the_same_digest(model, copy, tmp_path):
    conf = tmp_path / "elsewhere.conf"
    shutil.move(copy / "gocryptfs.conf", conf)
    assert digest_of(copy, "--config", str(conf)) == model[1]


# every tamper outside the blocks changes it -------------------------------------------------
def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _swap(a: Path, b: Path) -> None:
    tmp = a.with_name("swap.tmp")
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)


def _conf_byte(c: Path) -> None:
    conf = c / "gocryptfs.conf"
    os.chmod(conf, 0o600)
    text = conf.read_bytes()
    assert b'"Creator": "gocryptfs' in text
    conf.write_bytes(text.replace(b'"Creator": "gocryptfs', b'"Creator": "gocryptfX', 1))  # still valid


def _replace_link(c: Path) -> None:
    link, other = cipher_path(c, "link"), cipher_path(c, "sub/up")
    target = os.readlink(other)  # another valid encrypted target
    os.unlink(link)
    os.symlink(target, link)


def _sidecar(c: Path) -> None:
    sidecar = next(c.glob("gocryptfs.longname.*.name"))
    os.chmod(sidecar, 0o600)
    _flip(sidecar, 3)


def _diriv(c: Path) -> None:
    diriv = cipher_path(c, "sub") / "gocryptfs.diriv"
    os.chmod(diriv, 0o600)
    _flip(diriv, 0)
    os.chmod(diriv, 0o400)


TAMPERS = {
    "conf byte": _conf_byte,
    "added file": lambda c: shutil.copy2(cipher_path(c, "config.json"), c / "AAAAAAAAAAAAAAAAAAAAAA"),
    "added dir": lambda c: os.mkdir(cipher_path(c, "sub") / "BBBBBBBBBBBBBBBBBBBBBB"),
    "deleted file": lambda c: os.unlink(cipher_path(c, "sub/nested.bin")),
    "renamed file": lambda c: os.rename(cipher_path(c, "a.bin"), cipher_path(c, "renamed.bin")),
    "swapped files": lambda c: _swap(cipher_path(c, "a.bin"), cipher_path(c, "b.bin")),
    "truncated at a block boundary": lambda c: os.truncate(cipher_path(c, "model.bin"), HEADER + 2 * BLOCK),
    "changed header": lambda c: _flip(cipher_path(c, "model.bin"), 9),
    "changed symlink target": _replace_link,
    "changed diriv": _diriv,
    "changed .name sidecar": _sidecar,
    "chmod file": lambda c: os.chmod(cipher_path(c, "config.json"), 0o600),
    "chmod dir": lambda c: os.chmod(cipher_path(c, "sub"), 0o700),
    "chmod root": lambda c: os.chmod(c, 0o700),
}


@pytest.mark.parametrize("tamper", TAMPERS, ids=list(TAMPERS))
def test_every_tamper_changes_the_digest(model, copy, tamper):
    TAMPERS[tamper](copy)
    assert digest_of(copy) != model[1]


def test_the_swapped_pair_differs_only_in_its_headers(copy):
    a, b = cipher_path(copy, "a.bin"), cipher_path(copy, "b.bin")
    assert a.stat().st_size == b.stat().st_size


def test_a_file_of_1_to_18_bytes_is_recorded_whole(copy):
    """No header (gocryptfs serves it as empty): all of its bytes are in the record."""
    tiny = cipher_path(copy, "tiny")
    os.truncate(tiny, 10)
    before = digest_of(copy)
    rec = dg.tree_digest(str(copy)).records[os.fsencode(tiny.name)]
    assert rec.kind == dg.FILE and rec.size == 10 and rec.data == tiny.read_bytes()
    _flip(tiny, 9)
    assert digest_of(copy) != before


# the document --------------------------------------------------------------------------------
def test_doc_script_agrees_on_a_gocryptfs_tree(model, tmp_path):
    assert run_doc_script(doc_script(tmp_path), model[0]) == model[1]


@pytest.mark.parametrize("flags", [(), ("--plaintextnames",), ("--deterministic-names",),
                                   ("--longnamemax", "62"), ("--xchacha",)])
def test_doc_script_agrees_on_our_encrypt(tmp_path, flags):
    plain = tmp_path / "plain"
    write_model(plain)
    (plain / "gocryptfs.diriv").write_bytes(b"a user file")  # with PlaintextNames: kind f, not i
    cipher = tmp_path / "cipher"
    r = run_cli("encrypt", "-q", "--scryptn", "10", "--passfile", PASSWORD_FILE, *flags, plain, cipher)
    assert r.returncode == 0, r.stderr
    if "--plaintextnames" in flags:
        assert dg.tree_digest(str(cipher)).records[b"gocryptfs.diriv"].kind == dg.FILE
    assert run_doc_script(doc_script(tmp_path), cipher) == digest_of(cipher)


def test_doc_script_agrees_with_config_elsewhere(model, copy, tmp_path):
    conf = tmp_path / "c.conf"
    shutil.move(copy / "gocryptfs.conf", conf)
    assert run_doc_script(doc_script(tmp_path), copy, str(conf)) == model[1]


def test_doc_worked_example(tmp_path):
    """The v1.3 example with normalised modes gives the digest and manifest the document shows."""
    ex = tmp_path / "ex"
    shutil.copytree(EXAMPLES / "v1.3", ex, symlinks=True)
    for dirpath, _, files in os.walk(ex):
        os.chmod(dirpath, 0o755)
        for f in files:
            if not os.path.islink(os.path.join(dirpath, f)):
                os.chmod(os.path.join(dirpath, f), 0o644)
    r = run_cli("digest", "--json", ex)
    assert r.returncode == 0, r.stderr
    text = DOC.read_text(encoding="utf-8")
    assert r.stdout.decode().strip() in text
    assert run_doc_script(doc_script(tmp_path), ex) == json.loads(r.stdout)["digest"]
    measured = dg.tree_digest(str(ex))
    manifest = measured.manifest()
    assert f"The manifest is {len(manifest)} bytes" in text
    assert manifest.startswith(b"cryptfs-tree-digest-v1\n" + (403).to_bytes(8, "big") + b"{")
    record6 = bytes.fromhex("66000000166d476a325f68646e4865333453703069495155777577000001a4"
                            "000000000000003c0000001200023e5d15115425b7a99a12e8d42549f3e7")
    assert record6 in manifest
    assert bytes.fromhex("6400000000000001ed000000000000000000000000") in manifest


# refusals ------------------------------------------------------------------------------------
def test_special_files_are_refused_without_hanging(copy):
    os.mkfifo(cipher_path(copy, "sub") / "CCCCCCCCCCCCCCCCCCCCCC")
    r = run_cli("digest", copy, timeout=20)
    assert r.returncode == exitcodes.CIPHERDIR, r.stderr
    assert b"FIFO" in r.stderr


def test_fifo_in_place_of_a_diriv_or_conf(copy):
    diriv = cipher_path(copy, "sub") / "gocryptfs.diriv"
    os.unlink(diriv)
    os.mkfifo(diriv)
    assert run_cli("digest", copy, timeout=20).returncode == exitcodes.CIPHERDIR
    os.unlink(copy / "gocryptfs.conf")
    os.mkfifo(copy / "gocryptfs.conf")
    assert run_cli("digest", copy, timeout=20).returncode == exitcodes.CONFIG


def test_oversized_metadata_is_refused(copy):
    diriv = cipher_path(copy, "sub") / "gocryptfs.diriv"
    os.chmod(diriv, 0o600)
    diriv.write_bytes(os.urandom(17))
    r = run_cli("digest", copy)
    assert r.returncode == exitcodes.CIPHERDIR and b"more than 16 bytes" in r.stderr


def test_depth_and_path_limits(tmp_path, model):
    deep = tmp_path / "deep"
    subprocess.run(["cp", "-a", str(model[0]), str(deep)], check=True)
    os.makedirs(deep / "/".join(["d"] * 65))
    r = run_cli("digest", deep)
    assert r.returncode == exitcodes.CIPHERDIR and b"deeper than 64" in r.stderr
    long = tmp_path / "long"
    subprocess.run(["cp", "-a", str(model[0]), str(long)], check=True)
    # a parent path of 3851 bytes (readable: its absolute path stays under PATH_MAX) holding a
    # 255-byte name: 4107 bytes relative, made through directory fds
    lengths = [240] * 12 + [239] * 4
    assert sum(lengths) + 15 == 3851
    fd = os.open(long, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for n in lengths + [255]:
            os.mkdir("x" * n, dir_fd=fd)
            new = os.open("x" * n, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = new
    finally:
        os.close(fd)
    r = run_cli("digest", long)
    assert r.returncode == exitcodes.CIPHERDIR and b"longer than 4096 bytes" in r.stderr


def test_entry_limit(copy, monkeypatch):
    monkeypatch.setattr(dg, "MAX_ENTRIES", 5)
    with pytest.raises(CipherDirError, match="more than 5 entries"):
        dg.tree_digest(str(copy))


def test_usage_and_missing_dir(tmp_path):
    assert run_cli("digest", tmp_path / "nope").returncode == exitcodes.CIPHERDIR
    assert run_cli("digest", tmp_path).returncode == exitcodes.CONFIG  # no gocryptfs.conf
    assert run_cli("digest").returncode == exitcodes.USAGE


# the Python API the agent uses -----------------------------------------------------------------
def test_python_api(model):
    cipher, d = model
    measured = dg.tree_digest(str(cipher))
    assert measured.digest == d and measured.summary()["digest"] == d
    measured.check(d)
    measured.check(None)
    with pytest.raises(DigestMismatch) as exc:
        measured.check("sha256:" + "0" * 64)
    assert exc.value.exit_code == exitcodes.DIGEST_MISMATCH == 13
    assert list(measured.records) == sorted(measured.records)
    assert measured.config().params == measured.params
