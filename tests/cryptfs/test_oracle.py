"""Real gocryptfs as the oracle, both directions, and the published example filesystems.

- gocryptfs -> cryptfs: gocryptfs writes a tree through its FUSE mount; ``cryptfs decrypt``
  must give back exactly what the mount showed (content, types, modes, targets, mtimes).
- cryptfs -> gocryptfs: ``cryptfs encrypt`` writes a tree; gocryptfs must mount it, show the
  original, and pass its own ``-fsck``. The ciphertext layout (name lengths, sizes, modes,
  sidecars, dir IVs, feature flags) must be the one gocryptfs writes itself.
- The example filesystems of rfjakob/gocryptfs (tests/data/gocryptfs-examples): the readable
  ones decrypt to ``content`` and to what gocryptfs shows; the pre-v0.7 ones are refused.

Tests that need the oracle are skipped (by the ``oracle`` fixture) when gocryptfs or FUSE is
missing; the example tests without a mount run everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from cryptfs import exitcodes
from tests.support import EXAMPLE_MASTER_KEYS, EXAMPLES, PASSWORD_FILE, make_sample_tree, run_cli, snapshot

PLAIN_BS = 4096
HEADER_LEN = 18
SPARSE_OFFSET = 3 * PLAIN_BS + 100  # make_sample_tree's sparse file: 3 hole blocks, then data
SPARSE_DATA = b"after the hole"
SPARSE_SIZE = SPARSE_OFFSET + len(SPARSE_DATA)

# (id, gocryptfs -init flags, cryptfs encrypt flags, content AEAD overhead per block)
FLAGSETS = [
    ("default", [], [], 32),
    ("xchacha-deterministic", ["-xchacha", "-deterministic-names"], ["--xchacha", "--deterministic-names"],
     40),
    ("aessiv", ["-aessiv"], ["--aessiv"], 32),
    ("plaintextnames", ["-plaintextnames"], ["--plaintextnames"], 32),
    ("longnamemax62", ["-longnamemax", "62"], ["--longnamemax", "62"], 32),
]
FLAGSET_IDS = [f[0] for f in FLAGSETS]

READABLE_EXAMPLES = ["v0.7", "v0.7-plaintextnames", "v0.9", "v1.1-aessiv", "v1.3",
                     "v2.2-deterministic-names", "v2.2-xchacha", "v2.2-xchacha-deterministic-names"]
NO_LONGNAME = {"v0.7", "v0.7-plaintextnames"}  # made before the 255-byte name was added upstream
REFUSED_EXAMPLES = ["v0.4", "v0.5", "v0.6", "v0.6-plaintextnames"]
MASTER_KEYS = {k: EXAMPLE_MASTER_KEYS[k] for k in ("v1.3", "v2.2-deterministic-names", "v2.2-xchacha",
                                                  "v2.2-xchacha-deterministic-names", "v1.1-aessiv")}
LONGNAME_255 = os.fsencode("longname_255_" + "x" * 242)


# helpers -------------------------------------------------------------------------------------
def cipher_size(plain_size: int, overhead: int) -> int:
    if plain_size == 0:
        return 0
    return HEADER_LEN + plain_size + overhead * -(-plain_size // PLAIN_BS)


def sparse_backing_file(cipherdir: Path, overhead: int) -> Path:
    """The root-level backing file of the sample tree's sparse file (the only one of its size)."""
    want = cipher_size(SPARSE_SIZE, overhead)
    found = [p for p in cipherdir.iterdir()
             if p.is_file() and not p.is_symlink() and p.stat().st_size == want]
    assert len(found) == 1, f"expected one backing file of {want} bytes, found {found}"
    return found[0]


def assert_has_holes(backing: Path) -> None:
    """The 3 skipped plaintext blocks are not allocated: at most the header page and the last block are."""
    st = os.stat(backing)
    assert st.st_size > 3 * PLAIN_BS
    assert st.st_blocks * 512 <= 2 * PLAIN_BS, (
        f"{backing.name}: {st.st_blocks * 512} bytes allocated for {st.st_size}: the holes were filled")


def write_sparse_like(dst: Path, src: Path) -> None:
    """Recreate the sample's sparse file by seek+write (so it has a real hole) with src's mtime."""
    if dst.exists():
        dst.unlink()
    with open(dst, "wb") as f:
        f.seek(SPARSE_OFFSET)
        f.write(SPARSE_DATA)
    st = os.stat(src)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def layout(root: Path, top: bool = True) -> list:
    """What a ciphertext tree looks like without its random parts (IVs, nonces, keys).

    Names are replaced by their kind and length (the encrypted length depends only on the
    plaintext length), files by size and mode, symlinks by target length; dirs recurse.
    gocryptfs.conf is left out (its content differs by design).
    """
    out = []
    for e in os.scandir(root):
        name = e.name
        if name == "gocryptfs.conf" and top:
            continue
        if name == "gocryptfs.diriv":
            key = "diriv"
        elif name.startswith("gocryptfs.longname.") and name.endswith(".name"):
            key = f"sidecar({len(name)})"
        elif name.startswith("gocryptfs.longname."):
            key = f"longname({len(name)})"
        else:
            key = len(os.fsencode(name))
        st = e.stat(follow_symlinks=False)
        mode = stat.S_IMODE(st.st_mode)
        if e.is_symlink():
            out.append(("link", key, len(os.readlink(e.path))))
        elif e.is_dir(follow_symlinks=False):
            out.append(("dir", key, mode, layout(Path(e.path), top=False)))
        else:
            out.append(("file", key, mode, st.st_size))
    return sorted(out, key=repr)


def read_conf(cipherdir: Path) -> dict:
    return json.loads((cipherdir / "gocryptfs.conf").read_text())


def gocryptfs_write(oracle, plain: Path, cipher: Path, mnt: Path, flags: list[str]) -> dict:
    """Init with gocryptfs, copy ``plain`` in through the mount, return the mounted view."""
    oracle.init(cipher, PASSWORD_FILE, *flags)
    with oracle.mount(cipher, mnt, PASSWORD_FILE):
        shutil.copytree(plain, mnt, symlinks=True, dirs_exist_ok=True)
        write_sparse_like(mnt / "sparse", plain / "sparse")
        return snapshot(mnt)


def copy_example(name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(EXAMPLES / name, dst, symlinks=True)
    return dst


def expected_example_content(name: str) -> dict:
    want = snapshot(EXAMPLES / "content", times=False)
    assert set(want) == {b"status.txt", b"rel", b"abs", LONGNAME_255}
    if name in NO_LONGNAME:
        del want[LONGNAME_255]
    return want


# fixtures ------------------------------------------------------------------------------------
def add_modes(root: Path) -> Path:
    """Modes that need care: a read-only dir (written into before its mode is set), odd file modes."""
    (root / "ro_dir").mkdir()
    (root / "ro_dir" / "ro_file").write_bytes(b"read-only\n")
    os.chmod(root / "ro_dir" / "ro_file", 0o400)
    os.chmod(root / "ro_dir", 0o555)
    (root / "exec_file").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "exec_file", 0o751)
    return root


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return add_modes(make_sample_tree(tmp_path_factory.mktemp("sample") / "plain"))


@pytest.fixture(scope="module", params=FLAGSETS, ids=FLAGSET_IDS)
def gocryptfs_tree(request, oracle, sample, tmp_path_factory):
    """A cipher tree written by real gocryptfs (once per flag set) and its mounted view."""
    fid, go_flags, our_flags, overhead = request.param
    base = tmp_path_factory.mktemp(f"go-{fid}")
    mounted = gocryptfs_write(oracle, sample, base / "cipher", base / "mnt", go_flags)
    return {"id": fid, "cipher": base / "cipher", "mounted": mounted, "our_flags": our_flags,
            "overhead": overhead}


# gocryptfs -> cryptfs --------------------------------------------------------------------------
def test_gocryptfs_tree_setup_is_meaningful(gocryptfs_tree, sample):
    """The mount really stored the sample (mtimes included) and the sparse file with real holes."""
    assert gocryptfs_tree["mounted"] == snapshot(sample)
    assert_has_holes(sparse_backing_file(gocryptfs_tree["cipher"], gocryptfs_tree["overhead"]))


@pytest.mark.parametrize("block_path", ["auto", "python"])
def test_decrypt_gocryptfs_tree(gocryptfs_tree, sample, tmp_path, block_path):
    out = tmp_path / "out"  # the C block path (where built) and the Python one
    r = run_cli("decrypt", "--keep-external-links",
                "--passfile", PASSWORD_FILE, "--block-path", block_path,
                gocryptfs_tree["cipher"], out)
    assert r.returncode == 0, r.stderr
    assert b"warning" not in r.stderr
    got = snapshot(out)
    # exactly what gocryptfs showed, mtimes of files, dirs and symlinks included
    assert got == gocryptfs_tree["mounted"]
    # and the original plaintext (content, types, modes, targets, mtimes)
    assert got == snapshot(sample)
    assert (out / "sparse").read_bytes() == bytes(SPARSE_OFFSET) + SPARSE_DATA


def test_fsck_gocryptfs_tree_is_clean(gocryptfs_tree):
    """Everything gocryptfs wrote authenticates; the one problem is the sample's absolute link
    (served by gocryptfs, refused by our mount), the sparse file's holes are warnings."""
    r = run_cli("fsck", "--passfile", PASSWORD_FILE, gocryptfs_tree["cipher"])
    assert r.returncode == exitcodes.INTEGRITY, (r.stdout, r.stderr)
    lines = r.stdout.decode().splitlines()
    problems = [ln for ln in lines if ln.startswith("fsck: ") and not ln.startswith("fsck: warning:")]
    assert len(problems) == 1 and "/abs_link" in problems[0] and "leaves the tree" in problems[0], lines
    assert b"1 problem found, 3 warnings" in r.stderr
    assert all("/sparse: block" in ln for ln in lines if ln.startswith("fsck: warning:"))


# cryptfs -> gocryptfs --------------------------------------------------------------------------
@pytest.mark.parametrize("fid, go_flags, our_flags, overhead", FLAGSETS, ids=FLAGSET_IDS)
def test_encrypt_then_gocryptfs_mounts(oracle, sample, tmp_path, fid, go_flags, our_flags, overhead):
    cipher, mnt = tmp_path / "cipher", tmp_path / "mnt"
    r = run_cli("encrypt", "--keep-external-links",
                "--scryptn", "10", "--passfile", PASSWORD_FILE, *our_flags, sample, cipher)
    assert r.returncode == 0, r.stderr
    with oracle.mount(cipher, mnt, PASSWORD_FILE, "-ro"):
        mounted = snapshot(mnt)
        assert (mnt / "sparse").read_bytes() == bytes(SPARSE_OFFSET) + SPARSE_DATA
    assert mounted == snapshot(sample)
    assert_has_holes(sparse_backing_file(cipher, overhead))
    fsck = subprocess.run([oracle.exe, "-fsck", "-q", "-passfile", str(PASSWORD_FILE), str(cipher)],
                          capture_output=True, timeout=120)
    assert fsck.returncode == 0, (fsck.stdout, fsck.stderr)


@pytest.mark.parametrize("fid, go_flags, our_flags, overhead", FLAGSETS, ids=FLAGSET_IDS)
def test_encrypt_config_matches_gocryptfs_init(oracle, sample, tmp_path, fid, go_flags, our_flags, overhead):
    """Same feature flags (and order), LongNameMax, scrypt parameters and field set as gocryptfs -init."""
    ours, theirs, empty = tmp_path / "ours", tmp_path / "theirs", tmp_path / "empty"
    empty.mkdir()
    r = run_cli("encrypt", "--keep-external-links",
                "-q", "--scryptn", "10", "--passfile", PASSWORD_FILE, *our_flags, empty, ours)
    assert r.returncode == 0, r.stderr
    oracle.init(theirs, PASSWORD_FILE, *go_flags)
    a, b = read_conf(ours), read_conf(theirs)
    assert a["FeatureFlags"] == b["FeatureFlags"]
    assert a.get("LongNameMax") == b.get("LongNameMax")
    assert list(a) == list(b)  # field order, and no extra or missing fields
    assert {k: v for k, v in a["ScryptObject"].items() if k != "Salt"} == \
           {k: v for k, v in b["ScryptObject"].items() if k != "Salt"}
    assert stat.S_IMODE((ours / "gocryptfs.conf").stat().st_mode) == \
           stat.S_IMODE((theirs / "gocryptfs.conf").stat().st_mode)
    # the (empty) root holds a dir IV exactly when gocryptfs makes one
    assert sorted(os.listdir(ours)) == sorted(os.listdir(theirs))


def test_ciphertext_layout_matches_gocryptfs(gocryptfs_tree, sample, tmp_path):
    """Name lengths, long-name hashing, sidecars, dir IVs, file sizes (holes included), modes and
    symlink target lengths of our ciphertext equal what gocryptfs wrote for the same tree."""
    cipher = tmp_path / "cipher"
    r = run_cli("encrypt", "--keep-external-links",
                "-q", "--scryptn", "10", "--passfile", PASSWORD_FILE,
                *gocryptfs_tree["our_flags"], sample, cipher)
    assert r.returncode == 0, r.stderr
    ours = layout(cipher)
    assert len(ours) >= 20 and any(e[0] == "dir" and e[3] for e in ours)  # the whole sample is there
    assert ours == layout(gocryptfs_tree["cipher"])


# example filesystems -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", READABLE_EXAMPLES)
def test_example_decrypts_to_content(name, tmp_path):
    cipher, out = copy_example(name, tmp_path), tmp_path / "out"
    before = snapshot(cipher)
    r = run_cli("decrypt", "--keep-external-links",
                "--passfile", PASSWORD_FILE, cipher, out)
    assert r.returncode == 0, r.stderr
    got = snapshot(out, times=False)
    assert got == expected_example_content(name)
    assert got[b"status.txt"][2] == b"It works!\n"
    assert got[b"rel"][1] == b"status.txt" and got[b"abs"][1] == b"/a/b/c/d"
    assert snapshot(cipher) == before  # decrypt never writes to CIPHERDIR


@pytest.mark.parametrize("name", READABLE_EXAMPLES)
def test_example_decrypt_matches_gocryptfs_mount(oracle, name, tmp_path):
    cipher, out, mnt = copy_example(name, tmp_path), tmp_path / "out", tmp_path / "mnt"
    r = run_cli("decrypt", "--keep-external-links",
                "--passfile", PASSWORD_FILE, cipher, out)
    assert r.returncode == 0, r.stderr
    with oracle.mount(cipher, mnt, PASSWORD_FILE, "-ro"):
        mounted = snapshot(mnt)
    assert mounted  # gocryptfs showed something
    assert snapshot(out) == mounted  # mtimes included


@pytest.mark.parametrize("name", sorted(MASTER_KEYS))
def test_example_masterkey_gives_same_result(name, tmp_path):
    cipher = copy_example(name, tmp_path)
    by_pw, by_key = tmp_path / "by_pw", tmp_path / "by_key"
    r1 = run_cli("decrypt", "--keep-external-links",
                "--passfile", PASSWORD_FILE, cipher, by_pw)
    r2 = run_cli("decrypt", "--keep-external-links",
                "--masterkey", MASTER_KEYS[name], cipher, by_key)
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 0, r2.stderr
    assert snapshot(by_key) == snapshot(by_pw)
    assert snapshot(by_key, times=False) == expected_example_content(name)


def test_example_masterkey_without_dashes_and_without_conf(tmp_path):
    """gocryptfs' -masterkey works without gocryptfs.conf (default v2 flags); so must ours."""
    cipher, out = copy_example("v1.3", tmp_path), tmp_path / "out"
    (cipher / "gocryptfs.conf").unlink()
    r = run_cli("decrypt", "--keep-external-links",
                "--masterkey", MASTER_KEYS["v1.3"].replace("-", ""), cipher, out)
    assert r.returncode == 0, r.stderr
    assert snapshot(out, times=False) == expected_example_content("v1.3")


def test_example_wrong_masterkey_refused(tmp_path):
    cipher, out = copy_example("v1.3", tmp_path), tmp_path / "out"
    r = run_cli("decrypt", "--keep-external-links",
                "--masterkey", MASTER_KEYS["v2.2-xchacha"], cipher, out)
    assert r.returncode == exitcodes.PASSWORD_INCORRECT, (r.stdout, r.stderr)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("name", REFUSED_EXAMPLES)
def test_old_example_refused(name, tmp_path):
    cipher, out = copy_example(name, tmp_path), tmp_path / "out"
    before = snapshot(cipher)
    r = run_cli("decrypt", "--keep-external-links",
                "--passfile", PASSWORD_FILE, cipher, out)
    assert r.returncode == exitcodes.CONFIG, (r.stdout, r.stderr)
    assert r.stderr.strip()
    assert not out.exists()
    for cmd in (["fsck", "--passfile", PASSWORD_FILE, cipher], ["info", cipher]):
        r = run_cli(*cmd)
        assert r.returncode == exitcodes.CONFIG, (cmd[0], r.stdout, r.stderr)
    assert snapshot(cipher) == before


@pytest.mark.parametrize("name", REFUSED_EXAMPLES)
def test_old_example_refused_by_gocryptfs_too(oracle, name, tmp_path):
    cipher, mnt = copy_example(name, tmp_path), tmp_path / "mnt"
    with pytest.raises((subprocess.CalledProcessError, RuntimeError)):  # Oracle.mount: "mount failed"
        with oracle.mount(cipher, mnt, PASSWORD_FILE, "-ro"):
            pass


def test_info_keys_match_gocryptfs(oracle, tmp_path):
    cipher = copy_example("v1.3", tmp_path)
    ours = run_cli("info", cipher)
    theirs = subprocess.run([oracle.exe, "-info", str(cipher)], capture_output=True, text=True, timeout=60)
    assert ours.returncode == 0 and theirs.returncode == 0, (ours.stderr, theirs.stderr)

    def keys(text: str) -> list[str]:
        return [line.split(":", 1)[0].strip() for line in text.splitlines() if ":" in line]

    go_keys, our_keys = keys(theirs.stdout), keys(ours.stdout.decode())
    assert go_keys == ["Creator", "FeatureFlags", "EncryptedKey", "ScryptObject", "contentEncryption"]
    assert our_keys[: len(go_keys)] == go_keys
    # the values gocryptfs shows for these keys are ours too
    go_lines = {k: v.strip() for k, v in (ln.split(":", 1) for ln in theirs.stdout.splitlines() if ":" in ln)}
    our_lines = {k: v.strip() for k, v in
                 (ln.split(":", 1) for ln in ours.stdout.decode().splitlines() if ":" in ln)}
    for k in go_keys:
        assert our_lines[k] == go_lines[k], k


@pytest.mark.parametrize("longnamemax", [None, "64"], ids=["default", "longnamemax64"])
def test_name_length_boundaries_match_gocryptfs(oracle, tmp_path, longnamemax):
    """Names of every length 1..255: which ones are hashed, and the sidecar lengths, as gocryptfs."""
    plain = tmp_path / "plain"
    plain.mkdir()
    for n in range(1, 256):
        (plain / ("x" * n)).write_bytes(b"%d\n" % n)
    go_flags = ["-longnamemax", longnamemax] if longnamemax else []
    our_flags = ["--longnamemax", longnamemax] if longnamemax else []
    theirs, ours, out = tmp_path / "theirs", tmp_path / "ours", tmp_path / "out"
    oracle.init(theirs, PASSWORD_FILE, *go_flags)
    with oracle.mount(theirs, tmp_path / "mnt", PASSWORD_FILE):
        shutil.copytree(plain, tmp_path / "mnt", dirs_exist_ok=True)
    r = run_cli("encrypt", "--keep-external-links",
                "-q", "--scryptn", "10", "--passfile", PASSWORD_FILE, *our_flags, plain, ours)
    assert r.returncode == 0, r.stderr
    ours_layout = layout(ours)
    assert sum(1 for e in ours_layout if str(e[1]).startswith("longname")) > 0
    assert ours_layout == layout(theirs)
    r = run_cli("decrypt", "--keep-external-links",
                "--passfile", PASSWORD_FILE, theirs, out)
    assert r.returncode == 0, r.stderr
    assert snapshot(out) == snapshot(plain)


# tampering: cryptfs decrypt fails exactly where a gocryptfs read gives EIO ---------------------------
VICTIM_SIZE = 3 * PLAIN_BS + 100  # 4 blocks, the last one partial
CBS = PLAIN_BS + 32


def _zero(data: bytearray, start: int, end: int) -> None:
    data[start:end] = bytes(end - start)


def _swap01(data: bytearray) -> None:
    b0, b1 = slice(HEADER_LEN, HEADER_LEN + CBS), slice(HEADER_LEN + CBS, HEADER_LEN + 2 * CBS)
    data[b0], data[b1] = data[b1], data[b0]


TAMPER = {
    "flip-block1": lambda d: d.__setitem__(HEADER_LEN + CBS + 100, d[HEADER_LEN + CBS + 100] ^ 1),
    "flip-file-id": lambda d: d.__setitem__(5, d[5] ^ 1),
    "version-3": lambda d: d.__setitem__(1, 3),
    "zero-header": lambda d: _zero(d, 0, HEADER_LEN),
    "zero-full-block": lambda d: _zero(d, HEADER_LEN + CBS, HEADER_LEN + 2 * CBS),  # reads as a hole
    "zero-partial-tail": lambda d: _zero(d, HEADER_LEN + 3 * CBS, len(d)),
    "truncate-mid-block": lambda d: d.__delitem__(slice(HEADER_LEN + CBS + 2000, None)),
    "truncate-at-block-boundary": lambda d: d.__delitem__(slice(HEADER_LEN + 2 * CBS, None)),
    "short-tail": lambda d: d.__delitem__(slice(HEADER_LEN + 2 * CBS + 20, None)),
    "header-only": lambda d: d.__delitem__(slice(HEADER_LEN, None)),
    "ten-bytes": lambda d: d.__delitem__(slice(10, None)),
    "swap-blocks": _swap01,
}

# spec §4.3 and §7: these read with EIO; the others (truncation at a block boundary, header-only
# and shorter files, a zeroed full block) read without error, as the format cannot tell.
READ_FAILS = {"flip-block1", "flip-file-id", "version-3", "zero-header", "zero-partial-tail",
              "truncate-mid-block", "short-tail", "swap-blocks"}


@pytest.fixture(scope="module")
def gocryptfs_victim(oracle, tmp_path_factory):
    base = tmp_path_factory.mktemp("victim")
    plain = base / "plain"
    plain.mkdir()
    (plain / "victim.bin").write_bytes(os.urandom(VICTIM_SIZE))
    (plain / "keep.txt").write_bytes(b"untouched\n")
    cipher = base / "cipher"
    oracle.init(cipher, PASSWORD_FILE)
    with oracle.mount(cipher, base / "mnt", PASSWORD_FILE):
        shutil.copytree(plain, base / "mnt", dirs_exist_ok=True)
    return plain, cipher


@pytest.mark.parametrize("kind", sorted(TAMPER))
def test_tampering_agrees_with_gocryptfs(oracle, gocryptfs_victim, tmp_path, kind):
    plain, src = gocryptfs_victim
    cipher = tmp_path / "cipher"
    shutil.copytree(src, cipher, symlinks=True)
    backing = [p for p in cipher.iterdir() if p.stat().st_size == cipher_size(VICTIM_SIZE, 32)]
    assert len(backing) == 1
    data = bytearray(backing[0].read_bytes())
    TAMPER[kind](data)
    backing[0].write_bytes(bytes(data))

    with oracle.mount(cipher, tmp_path / "mnt", PASSWORD_FILE, "-ro") as mnt:
        try:
            theirs = (mnt / "victim.bin").read_bytes()
        except OSError as e:
            assert e.errno == 5, e  # EIO
            theirs = None
    assert (theirs is None) == (kind in READ_FAILS)
    for block_path in ("auto", "python"):
        _check_decrypt_agrees(kind, plain, cipher, tmp_path / f"out-{block_path}", theirs, block_path)


def _check_decrypt_agrees(kind: str, plain: Path, cipher: Path, out: Path, theirs: bytes | None,
                          block_path: str) -> None:
    r = run_cli("decrypt", "--keep-external-links",
                "--passfile", PASSWORD_FILE, "--block-path", block_path, cipher, out)
    if theirs is None:
        assert r.returncode == exitcodes.INTEGRITY, (kind, r.stderr)
        assert b"victim.bin" in r.stderr
        assert not out.exists()
    else:
        assert r.returncode == 0, (kind, r.stderr)
        assert (out / "victim.bin").read_bytes() == theirs
        assert (out / "keep.txt").read_bytes() == b"untouched\n"
        original = (plain / "victim.bin").read_bytes()
        if kind == "zero-full-block":  # spec §7: a zeroed block is a hole; nobody can tell
            assert theirs == original[:PLAIN_BS] + bytes(PLAIN_BS) + original[2 * PLAIN_BS:]
        else:  # truncation: what is there is a correct prefix
            assert original.startswith(theirs)


# holes of every shape -----------------------------------------------------------------------------
SPARSE_SHAPES = {  # name: (final size, [(offset, data)])
    "truncated_8192": (8192, []),  # all hole, block-aligned
    "truncated_5000": (5000, []),  # all hole, partial last block
    "data_then_hole": (3 * PLAIN_BS, [(0, b"x" * 10)]),
    "edge_bytes": (5 * PLAIN_BS, [(2 * PLAIN_BS - 1, b"a"), (3 * PLAIN_BS, b"b")]),
    "across_1MiB": ((2 << 20) + 5, [((1 << 20) - 10, b"y" * 20), (2 << 20, b"z" * 5)]),
}


def _write_shape(path: Path, size: int, writes: list) -> None:
    with open(path, "wb") as f:
        for off, data in writes:
            f.seek(off)
            f.write(data)
        f.truncate(size)


def test_sparse_shapes_match_gocryptfs(oracle, tmp_path):
    plain, theirs, ours = tmp_path / "plain", tmp_path / "theirs", tmp_path / "ours"
    plain.mkdir()
    for name, (size, writes) in SPARSE_SHAPES.items():
        _write_shape(plain / name, size, writes)
    oracle.init(theirs, PASSWORD_FILE, "-plaintextnames")  # plaintext names: backing files by name
    with oracle.mount(theirs, tmp_path / "mnt", PASSWORD_FILE) as mnt:
        for name, (size, writes) in SPARSE_SHAPES.items():
            _write_shape(mnt / name, size, writes)
    r = run_cli("encrypt", "--keep-external-links",
                "-q", "--scryptn", "10", "--passfile", PASSWORD_FILE, "--plaintextnames",
                plain, ours)
    assert r.returncode == 0, r.stderr
    for name in SPARSE_SHAPES:
        a, b = os.stat(ours / name), os.stat(theirs / name)
        assert a.st_size == b.st_size, name
        assert a.st_blocks <= b.st_blocks, f"{name}: we allocate more than gocryptfs (holes filled)"
    with oracle.mount(ours, tmp_path / "mnt2", PASSWORD_FILE, "-ro") as mnt:
        assert snapshot(mnt, times=False) == snapshot(plain, times=False)
    out = tmp_path / "out"
    r = run_cli("decrypt", "--keep-external-links",
                "--passfile", PASSWORD_FILE, theirs, out)
    assert r.returncode == 0, r.stderr
    assert snapshot(out, times=False) == snapshot(plain, times=False)
