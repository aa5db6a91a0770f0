"""The gocryptfs engine in process: ``encrypt_tree``, ``decrypt_tree`` and ``fsck`` (no subprocess).

Every encrypt uses scrypt log2(N) = 10. Invariants: a round trip gives back the plaintext
(content, types, modes, symlink targets, mtimes); fsck names every problem it finds and finds
none in a clean tree; a failed encrypt or decrypt leaves nothing behind. Real gocryptfs
checks our output where that is cheap (its ``-fsck`` needs no mount; one test mounts).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from cryptfs.config import FsParams
from cryptfs.cryptocore import SIV, XCHACHA
from cryptfs.decrypt import TreeExporter, decrypt_tree
from cryptfs.encrypt import encrypt_tree
from cryptfs.errors import (
    BlockError,
    CipherDirError,
    IntegrityError,
    OutputError,
    UsageError,
)
from cryptfs.fsck import fsck
from cryptfs.password import KeySource
from cryptfs.tree import CipherTree, open_tree
from tests.support import PASSWORD_FILE, make_sample_tree, snapshot

PLAIN_BS = 4096
HEADER_LEN = 18
GCM_CBS = PLAIN_BS + 32
PASSWORD = b"test"  # PASSWORD_FILE's first line
LOGN = 10
BIG = b"size_%d" % ((1 << 20) + 1)
SPARSE_HOLES = 3  # make_sample_tree's sparse file: 3 whole-block holes, then data

PARAMS = [
    ("default", FsParams()),
    ("xchacha", FsParams(content=XCHACHA)),
    ("aessiv", FsParams(content=SIV)),
    ("deterministic-names", FsParams(diriv=False)),
    ("plaintextnames", FsParams(plaintext_names=True, diriv=False, raw64=False)),
    ("longnamemax62", FsParams(longnamemax=62)),
]


# helpers -------------------------------------------------------------------------------------
def password_keys() -> KeySource:
    return KeySource(passfiles=[str(PASSWORD_FILE)])


def encrypt(plain: Path, cipher: Path, params: FsParams | None = None, **kw):
    return encrypt_tree(str(plain), str(cipher), PASSWORD, params or FsParams(), LOGN, progress=False, **kw)


def unlock(cipher: Path, **kw) -> CipherTree:
    return open_tree(str(cipher), password_keys(), **kw)


def check(cipher: Path, **kw):
    return fsck(unlock(cipher, **kw), progress=False)


def model_tree(root: Path) -> Path:
    """make_sample_tree without its absolute symlink (a served tree must not hold one), plus
    modes that need care: a read-only dir (written into before its mode is set), odd file modes."""
    make_sample_tree(root)
    (root / "abs_link").unlink()
    (root / "ro_dir").mkdir()
    (root / "ro_dir" / "ro_file").write_bytes(b"read-only\n")
    os.chmod(root / "ro_dir" / "ro_file", 0o400)
    os.chmod(root / "ro_dir", 0o555)
    (root / "exec_file").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "exec_file", 0o751)
    return root


def counts(root: Path) -> tuple[int, int, int, int]:
    """(files, dirs below the root, symlinks, file bytes) of a plaintext tree, by lstat."""
    files = dirs = links = nbytes = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISLNK(st.st_mode):
                links += 1
            elif stat.S_ISDIR(st.st_mode):
                dirs += 1
            elif stat.S_ISREG(st.st_mode):
                files += 1
                nbytes += st.st_size
    return files, dirs, links, nbytes


def flip(path: bytes | str | Path, offset: int, mask: int = 0x01) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ mask]))


def listing(root: Path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs)


def assert_no_output(out: Path) -> None:
    """A failed decrypt leaves nothing: OUTDIR removed (if it made it) or empty."""
    assert not out.exists() or not any(out.iterdir()), listing(out)


# fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model(tmp_path_factory) -> dict:
    """The model tree and its in-process encryption (default flags); tests copy to tamper."""
    base = tmp_path_factory.mktemp("engine")
    plain = model_tree(base / "plain")
    stats = encrypt(plain, base / "cipher")
    return {"plain": plain, "cipher": base / "cipher", "stats": stats}


@pytest.fixture
def cipher(model, tmp_path) -> Path:
    """A private copy of the model's cipher dir, free to tamper with."""
    return Path(shutil.copytree(model["cipher"], tmp_path / "cipher", symlinks=True))


# encrypt -> decrypt ----------------------------------------------------------------------------
@pytest.mark.parametrize("params", [p for _, p in PARAMS], ids=[i for i, _ in PARAMS])
def test_roundtrip(model, tmp_path, params):
    plain = model["plain"]
    files, dirs, links, nbytes = counts(plain)
    cipher, out = tmp_path / "cipher", tmp_path / "out"
    st = encrypt(plain, cipher, params)
    assert (st.files, st.dirs, st.symlinks, st.plain_bytes, st.skipped) == (files, dirs, links, nbytes, 0)
    assert stat.S_IMODE(os.stat(cipher / "gocryptfs.conf").st_mode) == 0o400  # written last, read-only
    tree = unlock(cipher)
    assert tree.params == params
    st = decrypt_tree(tree, str(out), progress=False)
    assert (st.files, st.dirs, st.symlinks, st.plain_bytes) == (files, dirs, links, nbytes)
    assert (st.skipped, st.hidden) == (0, 0)
    # content, types, permission bits, symlink targets and mtimes of files, dirs and symlinks
    assert snapshot(out) == snapshot(plain)
    assert stat.S_IMODE(os.stat(out / "ro_dir").st_mode) == 0o555
    report = fsck(tree, progress=False)
    assert report.problems == [] and report.warnings == []
    assert (report.files, report.dirs, report.symlinks) == (files, dirs + 1, links)  # dirs: the root too
    assert report.plain_bytes == nbytes


@pytest.mark.parametrize("block_path", ["auto", "python"])
def test_decrypt_through_either_block_path(model, tmp_path, block_path):
    out = tmp_path / "out"
    decrypt_tree(unlock(model["cipher"], block_path=block_path), str(out), progress=False)
    assert snapshot(out) == snapshot(model["plain"])


def test_holes_stay_holes(model, tmp_path):
    """Encrypt skips whole-block holes; decrypt skips all-zero 128 KiB write slices."""
    tree = unlock(model["cipher"])
    backing = os.stat(tree.cipher_path(b"sparse"))
    assert backing.st_size > SPARSE_HOLES * GCM_CBS
    assert backing.st_blocks * 512 <= 2 * PLAIN_BS
    plain, cipher, out = tmp_path / "plain", tmp_path / "cipher", tmp_path / "out"
    plain.mkdir()
    with open(plain / "big_hole", "wb") as f:
        f.seek(4 << 20)
        f.write(b"end")
    encrypt(plain, cipher)
    st = decrypt_tree(unlock(cipher), str(out), progress=False)
    assert st.plain_bytes == (4 << 20) + 3
    assert (out / "big_hole").read_bytes() == bytes(4 << 20) + b"end"
    assert os.stat(out / "big_hole").st_blocks * 512 <= 128 << 10


def test_fifo_roundtrip_and_special_files_off(tmp_path):
    plain, cipher = tmp_path / "plain", tmp_path / "cipher"
    plain.mkdir()
    os.mkfifo(plain / "pipe", 0o640)
    (plain / "f").write_bytes(b"f\n")
    encrypt(plain, cipher)
    tree = unlock(cipher)
    st = decrypt_tree(tree, str(tmp_path / "out"), progress=False)
    got = os.lstat(tmp_path / "out" / "pipe")
    assert stat.S_ISFIFO(got.st_mode) and stat.S_IMODE(got.st_mode) == 0o640
    assert (tmp_path / "out" / "f").read_bytes() == b"f\n" and st.skipped == 0
    st = decrypt_tree(tree, str(tmp_path / "copy"), progress=False, special_files=False)
    assert os.listdir(tmp_path / "copy") == ["f"] and st.skipped == 1


def test_decrypt_into_an_existing_empty_outdir(model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    decrypt_tree(unlock(model["cipher"]), str(out), progress=False)
    assert snapshot(out, times=False) == snapshot(model["plain"], times=False)


# decrypt refuses, and cleans up -----------------------------------------------------------------
@pytest.mark.parametrize("where", ["inside", "same", "via-symlink"])
def test_decrypt_refuses_outdir_inside_cipherdir(cipher, tmp_path, where):
    before = listing(cipher)
    out = {"inside": cipher / "out", "same": cipher, "via-symlink": tmp_path / "link" / "out"}[where]
    os.symlink(cipher, tmp_path / "link")
    with pytest.raises(OutputError, match="inside CIPHERDIR"):
        decrypt_tree(unlock(cipher), str(out), progress=False)
    assert listing(cipher) == before


def test_decrypt_refuses_a_nonempty_outdir(model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine").write_bytes(b"keep me\n")
    with pytest.raises(OutputError, match="not empty"):
        decrypt_tree(unlock(model["cipher"]), str(out), progress=False)
    assert os.listdir(out) == ["mine"] and (out / "mine").read_bytes() == b"keep me\n"


@pytest.mark.parametrize("precreate", [False, True], ids=["missing-outdir", "empty-outdir"])
def test_decrypt_tampered_block_removes_partial_output(tmp_path, monkeypatch, precreate):
    """Plaintext names sort the victim last: every other file is written before it fails."""
    plain, cipher, out = tmp_path / "plain", tmp_path / "cipher", tmp_path / "out"
    (plain / "sub").mkdir(parents=True)
    for i in range(5):
        (plain / f"a{i}.bin").write_bytes(os.urandom(5000))
    (plain / "sub" / "b.txt").write_bytes(b"b\n")
    (plain / "zz_victim.bin").write_bytes(os.urandom(3 * PLAIN_BS))
    encrypt(plain, cipher, FsParams(plaintext_names=True, diriv=False, raw64=False))
    flip(cipher / "zz_victim.bin", HEADER_LEN + 2 * GCM_CBS + 7)  # block 2
    written = []
    real_file = TreeExporter._file

    def spy(self, item, dst, progress):
        real_file(self, item, dst, progress)
        written.append(item.rel)

    monkeypatch.setattr(TreeExporter, "_file", spy)
    if precreate:
        out.mkdir()
    with pytest.raises(BlockError) as e:
        decrypt_tree(unlock(cipher), str(out), progress=False)
    assert isinstance(e.value, IntegrityError)
    assert e.value.block_no == 2 and "zz_victim.bin" in str(e.value)
    assert len(written) == 6  # the other files were complete when the victim failed
    assert_no_output(out)
    assert out.exists() == precreate


def test_decrypt_skips_an_undecryptable_name(cipher, model, tmp_path):
    tree = unlock(cipher)
    victim = tree.cipher_path(b"size_17")
    os.rename(victim, os.path.join(os.path.dirname(victim), b"A" * 30))  # decodes to 22 bytes: invalid
    out = tmp_path / "out"
    st = decrypt_tree(unlock(cipher), str(out), progress=False)
    assert st.hidden == 1
    want = snapshot(model["plain"])
    del want[b"size_17"]
    assert snapshot(out) == want


# encrypt refuses, and cleans up -----------------------------------------------------------------
@pytest.mark.parametrize("where", ["inside", "same", "deeper"])
def test_encrypt_refuses_cipherdir_inside_plaindir(tmp_path, where):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "f").write_bytes(b"f\n")
    (plain / "d").mkdir()
    target = {"inside": plain / "cipher", "same": plain, "deeper": plain / "d" / "cipher"}[where]
    before = snapshot(plain)
    with pytest.raises(UsageError, match="inside PLAINDIR"):
        encrypt(plain, target)
    assert snapshot(plain) == before


def test_encrypt_refuses_a_nonempty_cipherdir(model, tmp_path):
    cipher = tmp_path / "cipher"
    cipher.mkdir()
    (cipher / "mine").write_bytes(b"keep me\n")
    with pytest.raises(CipherDirError, match="not empty"):
        encrypt(model["plain"], cipher)
    assert os.listdir(cipher) == ["mine"]


def test_encrypt_missing_plaindir(tmp_path):
    with pytest.raises(CipherDirError, match="no such directory"):
        encrypt(tmp_path / "nope", tmp_path / "cipher")
    assert not (tmp_path / "cipher").exists()


@pytest.mark.parametrize("precreate", [False, True], ids=["missing-cipherdir", "empty-cipherdir"])
def test_encrypt_failure_leaves_nothing(tmp_path, precreate):
    """An absolute symlink is refused by default, after other entries were written: all removed."""
    plain, cipher = tmp_path / "plain", tmp_path / "cipher"
    (plain / "a_dir").mkdir(parents=True)
    (plain / "a_dir" / "f").write_bytes(os.urandom(9000))
    (plain / "b_file").write_bytes(b"b\n")
    os.symlink("/etc/passwd", plain / "z_link")
    if precreate:
        cipher.mkdir()
    with pytest.raises(UsageError, match="points outside"):
        encrypt(plain, cipher)
    assert cipher.exists() == precreate
    assert not cipher.exists() or os.listdir(cipher) == []


def test_external_link_kept_on_request_is_refused_by_decrypt_and_fsck(tmp_path):
    plain, cipher, out = tmp_path / "plain", tmp_path / "cipher", tmp_path / "out"
    plain.mkdir()
    (plain / "f").write_bytes(b"f\n")
    os.symlink("/etc/passwd", plain / "abs")
    os.symlink("../../outside", plain / "climb")
    os.symlink("f", plain / "fine")
    st = encrypt(plain, cipher, keep_external_links=True)
    assert st.symlinks == 3
    tree = unlock(cipher)
    assert tree.readlink(b"abs") == b"/etc/passwd"  # stored as it is
    st = decrypt_tree(tree, str(out), progress=False)
    assert (st.symlinks, st.skipped) == (1, 2)
    assert sorted(os.listdir(out)) == ["f", "fine"] and os.readlink(out / "fine") == "f"
    report = fsck(tree, progress=False)
    assert len(report.problems) == 2
    assert sum(p.startswith("/abs: ") and "leaves the tree" in p for p in report.problems) == 1
    assert sum(p.startswith("/climb: ") and "leaves the tree" in p for p in report.problems) == 1


def test_cipher_layout(model):
    """One dir IV per directory, long names with sidecars, no plaintext name on disk."""
    cipher = model["cipher"]
    plain_names = {n for _, ds, fs in os.walk(model["plain"]) for n in ds + fs}
    for dirpath, dirnames, filenames in os.walk(cipher):
        assert "gocryptfs.diriv" in filenames, dirpath
        assert os.path.getsize(os.path.join(dirpath, "gocryptfs.diriv")) == 16
        assert not plain_names & set(dirnames + filenames)
    longnames = [n for n in os.listdir(cipher) if n.startswith("gocryptfs.longname.")]
    assert longnames and all(n + ".name" in longnames for n in longnames if not n.endswith(".name"))


# fsck ------------------------------------------------------------------------------------------
def test_fsck_clean_tree_counts_everything(model):
    files, dirs, links, nbytes = counts(model["plain"])
    seen = []
    report = fsck(unlock(model["cipher"]), progress=False, on_problem=seen.append)
    assert report.problems == [] and report.warnings == [] and seen == []
    assert (report.files, report.dirs, report.symlinks) == (files, dirs + 1, links)  # dirs: the root too
    assert report.plain_bytes == nbytes
    assert files > 15 and links == 2


def test_fsck_flipped_byte_in_a_block(cipher):
    tree = unlock(cipher)
    flip(tree.cipher_path(b"size_4097"), HEADER_LEN + GCM_CBS + 5)  # block 1
    seen = []
    report = fsck(tree, progress=False, on_problem=seen.append)
    assert len(report.problems) == 1, report.problems
    assert report.problems[0].startswith("block 1 of /size_4097: ")
    assert "authentication failed" in report.problems[0]
    assert seen == report.problems


def test_fsck_names_every_bad_block(cipher):
    """A failing 1 MiB step is re-read block by block: each bad block is its own problem."""
    tree = unlock(cipher)
    flip(tree.cipher_path(BIG), HEADER_LEN + 100 * GCM_CBS + 1)
    flip(tree.cipher_path(BIG), HEADER_LEN + 200 * GCM_CBS + 2000)
    flip(tree.cipher_path(BIG), HEADER_LEN + 256 * GCM_CBS + 17)  # the last block (1 byte of plaintext)
    flip(tree.cipher_path(b"dir/sub/deeper/nested.txt"), HEADER_LEN + 20)
    report = check(cipher)
    why = "authentication failed (the ciphertext is corrupt or was tampered with)"
    assert sorted(report.problems) == sorted([f"block 100 of /{BIG.decode()}: {why}",
                                              f"block 200 of /{BIG.decode()}: {why}",
                                              f"block 256 of /{BIG.decode()}: {why}",
                                              f"block 0 of /dir/sub/deeper/nested.txt: {why}"])


def test_fsck_tampered_header(cipher):
    tree = unlock(cipher)
    flip(tree.cipher_path(b"size_19"), 5)  # inside the file ID
    report = check(cipher)
    assert len(report.problems) == 1 and report.problems[0].startswith("block 0 of /size_19")
    flip(tree.cipher_path(b"size_19"), 0)  # the version field
    report = check(cipher)
    assert len(report.problems) == 1 and report.problems[0].startswith("header of /size_19: ")


def test_fsck_deleted_diriv(cipher, model):
    tree = unlock(cipher)
    os.unlink(os.path.join(tree.cipher_path(b"dir/sub"), b"gocryptfs.diriv"))
    files, dirs, links, _ = counts(model["plain"])
    report = check(cipher)
    assert len(report.problems) == 1, report.problems
    assert report.problems[0].startswith("/dir/sub: directory cannot be read: ")
    assert "gocryptfs.diriv is missing" in report.problems[0]
    # dir/sub and dir/sub/deeper (with nested.txt) could not be checked
    assert (report.files, report.dirs, report.symlinks) == (files - 1, dirs + 1 - 2, links)


@pytest.mark.parametrize(("cut", "block", "reason"), [
    (HEADER_LEN + GCM_CBS + 100, 1, "authentication failed"),  # block 1 cut in half
    (HEADER_LEN + GCM_CBS + 20, 1, "too short"),  # a tail of 1..32 bytes is never a valid block
])
def test_fsck_truncated_file(cipher, cut, block, reason):
    os.truncate(unlock(cipher).cipher_path(b"size_4097"), cut)
    report = check(cipher)
    assert len(report.problems) == 1, report.problems
    assert report.problems[0].startswith(f"block {block} of /size_4097: ") and reason in report.problems[0]


def test_fsck_truncated_to_a_partial_header_is_a_warning(cipher):
    """Spec §4.3: 1..18 bytes on disk read as empty in gocryptfs; fsck warns, exit code unchanged."""
    os.truncate(unlock(cipher).cipher_path(b"size_4097"), 10)
    warnings = []
    report = fsck(unlock(cipher), progress=False, on_warning=warnings.append)
    assert report.problems == []
    assert len(report.warnings) == 1 and report.warnings == warnings
    assert report.warnings[0].startswith("/size_4097: only 10 bytes on disk")


def test_fsck_cannot_see_whole_blocks_cut_off_the_end(cipher):
    """Known format limit (spec §7): a file cut at a block boundary is a shorter valid file."""
    os.truncate(unlock(cipher).cipher_path(b"size_4097"), HEADER_LEN + GCM_CBS)
    report = check(cipher)
    assert report.problems == [] and report.warnings == []


def test_fsck_undecryptable_name(cipher):
    tree = unlock(cipher)
    victim = tree.cipher_path(b"dir/sub/deeper/nested.txt")
    bad = os.path.join(os.path.dirname(victim), b"A" * 30)
    os.rename(victim, bad)
    report = check(cipher)
    assert len(report.problems) == 1, report.problems
    assert report.problems[0].startswith(f"/dir/sub/deeper: {os.fsdecode(bad)}: undecryptable name")


def test_fsck_corrupt_longname_sidecar(cipher):
    tree = unlock(cipher)
    longs = [e for e in tree.listdir(b"")
             if os.path.basename(e.cipher_path).startswith(b"gocryptfs.longname.")]
    assert sorted(len(e.name) for e in longs) == [176, 200, 255]  # encrypted, longer than 255 bytes
    sidecar = longs[0].cipher_path + b".name"
    data = Path(os.fsdecode(sidecar)).read_bytes()
    os.chmod(sidecar, 0o644)
    Path(os.fsdecode(sidecar)).write_bytes(data[:-1] + (b"A" if data[-1:] != b"A" else b"B"))
    report = check(cipher)
    assert len(report.problems) == 1 and "sidecar" in report.problems[0], report.problems


def test_fsck_tampered_symlink(cipher):
    tree = unlock(cipher)
    link = tree.cipher_path(b"dir/up_link")
    target = os.readlink(link)
    os.unlink(link)
    os.symlink(target[:-3] + (b"AAA" if target[-3:] != b"AAA" else b"BBB"), link)
    report = check(cipher)
    assert len(report.problems) == 1, report.problems
    assert "/dir/up_link" in report.problems[0] and "symlink" in report.problems[0]


def test_fsck_zeroed_block_is_a_warning_without_holes(cipher):
    """An all-zero cipher block is a hole for gocryptfs; opened with holes=False fsck warns."""
    tree = unlock(cipher)
    with open(tree.cipher_path(BIG), "r+b") as f:
        f.seek(HEADER_LEN + 5 * GCM_CBS)
        f.write(bytes(GCM_CBS))
    assert check(cipher).warnings == []  # served as zeros: nothing to say
    report = check(cipher, holes=False)
    assert report.problems == []
    assert len(report.warnings) == 1 + SPARSE_HOLES, report.warnings
    assert sum(w.startswith(f"/{BIG.decode()}: block 5 ") for w in report.warnings) == 1
    holes = sorted(w.split(" is all zeros")[0] for w in report.warnings if w.startswith("/sparse: "))
    assert holes == [f"/sparse: block {i}" for i in range(SPARSE_HOLES)]  # its real holes, too


def test_fsck_lists_every_problem_at_once(cipher):
    tree = unlock(cipher)
    flip(tree.cipher_path(b"size_4096"), HEADER_LEN + 3)
    os.truncate(tree.cipher_path(b"size_4097"), HEADER_LEN + GCM_CBS + 100)
    os.unlink(os.path.join(tree.cipher_path(b"dir/sub/deeper"), b"gocryptfs.diriv"))
    report = check(cipher)
    assert len(report.problems) == 3, report.problems
    assert sum("/size_4096" in p for p in report.problems) == 1
    assert sum("/size_4097" in p for p in report.problems) == 1
    assert sum(p.startswith("/dir/sub/deeper: ") for p in report.problems) == 1


# real gocryptfs as the oracle ------------------------------------------------------------------
def gocryptfs_fsck(oracle, cipher: Path) -> subprocess.CompletedProcess:
    return subprocess.run([oracle.exe, "-fsck", "-q", "-passfile", str(PASSWORD_FILE), str(cipher)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("params", [p for _, p in PARAMS], ids=[i for i, _ in PARAMS])
def test_gocryptfs_fsck_accepts_our_tree(oracle, model, tmp_path, params):
    cipher = tmp_path / "cipher"
    encrypt(model["plain"], cipher, params)
    r = gocryptfs_fsck(oracle, cipher)
    assert r.returncode == 0, (r.stdout, r.stderr)


def test_gocryptfs_fsck_agrees_on_a_tampered_tree(oracle, cipher):
    tree = unlock(cipher)
    flip(tree.cipher_path(b"size_4097"), HEADER_LEN + GCM_CBS + 5)
    ours = check(cipher)
    theirs = gocryptfs_fsck(oracle, cipher)
    assert len(ours.problems) == 1 and "/size_4097" in ours.problems[0]
    assert theirs.returncode != 0
    assert "size_4097" in theirs.stdout + theirs.stderr


def test_gocryptfs_mount_shows_our_tree(oracle, model, tmp_path):
    with oracle.mount(model["cipher"], tmp_path / "mnt") as mnt:
        assert snapshot(mnt) == snapshot(model["plain"])
