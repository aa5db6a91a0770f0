"""``cryptfs.tree`` in process: the mount-free model of a cipher directory (no subprocess, no mount).

Two kinds of trees: one encrypted here with :func:`cryptfs.encrypt.encrypt_tree` from
``make_sample_tree`` (scrypt log2(N) = 10), and the bundled gocryptfs example filesystems.
Invariant checked throughout: whatever the tree answers (sizes, names, targets, bytes) is the
plaintext's, from either block path; what it cannot authenticate raises, never reads as data.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from cryptfs.config import ConfFile, FsParams
from cryptfs.core.chunks import c_available
from cryptfs.core.source import DirEntry, MountSource, OpenFile
from cryptfs.encrypt import encrypt_tree
from cryptfs.errors import BlockError, ConfigError, WrongPasswordError
from cryptfs.password import KeySource, parse_masterkey
from cryptfs.tree import CipherTree, PlainFile, open_tree
from tests.support import EXAMPLE_MASTER_KEYS, EXAMPLES, PASSWORD_FILE, make_sample_tree

PLAIN_BS = 4096
HEADER_LEN = 18
GCM_CBS = PLAIN_BS + 32
PASSWORD = b"test"  # PASSWORD_FILE's first line
BIG = (1 << 20) + 1  # make_sample_tree's largest file: 257 blocks, the last one 1 byte
SPARSE_OFFSET = 3 * PLAIN_BS + 100  # make_sample_tree's sparse file: 3 hole blocks, then data
SPARSE_DATA = b"after the hole"

READABLE_EXAMPLES = ["v0.7", "v0.7-plaintextnames", "v0.9", "v1.1-aessiv", "v1.3",
                     "v2.2-deterministic-names", "v2.2-xchacha", "v2.2-xchacha-deterministic-names"]
NO_LONGNAME = {"v0.7", "v0.7-plaintextnames"}  # made before upstream added the 255-byte name
LONGNAME_255 = os.fsencode("longname_255_" + "x" * 242)
V13_STATUS = "mGj2_hdnHe34Sp0iIQUwuw"  # status.txt in the v1.3 example


# helpers -------------------------------------------------------------------------------------
def password_keys() -> KeySource:
    return KeySource(passfiles=[str(PASSWORD_FILE)])


def masterkey_keys(name: str) -> KeySource:
    return KeySource(masterkey=EXAMPLE_MASTER_KEYS[name])


def plain_files(plain: Path) -> dict[bytes, bytes]:
    """Every regular file below ``plain``: relative bytes path -> content."""
    out = {}
    broot = os.fsencode(plain)
    for dirpath, _, files in os.walk(broot):
        for name in files:
            full = os.path.join(dirpath, name)
            if stat.S_ISREG(os.lstat(full).st_mode):
                with open(full, "rb") as f:
                    out[os.path.relpath(full, broot)] = f.read()
    return out


def plain_entries(plain: Path) -> dict[bytes, os.stat_result]:
    """lstat of every entry below ``plain`` (files, dirs, symlinks), by relative bytes path."""
    broot = os.fsencode(plain)
    out = {}
    for dirpath, dirs, files in os.walk(broot):
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, broot)] = os.lstat(full)
    return out


def read_all(tree: CipherTree, rel: bytes) -> bytes:
    with tree.open(rel) as f:
        return f.read(0, f.plain_size + 1)  # one byte more: EOF must stop the read


def flip(path: str | bytes | Path, offset: int, mask: int = 0x01) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ mask]))


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


# fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict:
    """make_sample_tree and its in-process encryption (default flags); tests copy to tamper."""
    base = tmp_path_factory.mktemp("tree")
    plain = make_sample_tree(base / "plain")
    encrypt_tree(str(plain), str(base / "cipher"), PASSWORD, FsParams(), 10, progress=False,
                 keep_external_links=True)  # abs_link -> /a/b/c/d: the tree itself still reads it
    return {"plain": plain, "cipher": base / "cipher", "files": plain_files(plain)}


@pytest.fixture(scope="module", params=["auto", "python"])
def tree(request, sample) -> CipherTree:
    """The sample's tree, opened with the password, through either block path."""
    return open_tree(str(sample["cipher"]), password_keys(), block_path=request.param)


@pytest.fixture
def private(sample, tmp_path) -> dict:
    """A private copy of the sample's cipher dir, free to tamper with."""
    return {"plain": sample["plain"], "files": sample["files"],
            "cipher": copy_tree(sample["cipher"], tmp_path / "cipher")}


# the tree is a MountSource ---------------------------------------------------------------------
def test_tree_is_a_mount_source(tree):
    assert isinstance(tree, MountSource)
    assert not MountSource.__abstractmethods__ - set(dir(tree))
    assert tree.block_path in ("c", "python")
    with tree.open(b"size_1") as f:
        assert isinstance(f, OpenFile) and isinstance(f, PlainFile)


def test_block_path_choice(sample):
    """"python" is honoured; "auto" takes the C path for AES-GCM where it is built."""
    assert open_tree(str(sample["cipher"]), password_keys(), block_path="python").block_path == "python"
    auto = open_tree(str(sample["cipher"]), password_keys(), block_path="auto").block_path
    assert auto == ("c" if c_available() else "python")


def test_constructor_equals_open_tree(sample):
    """CipherTree(dir, params, master key) is what open_tree builds from the password."""
    conf = ConfFile.load(str(sample["cipher"] / "gocryptfs.conf"))
    direct = CipherTree(str(sample["cipher"]), conf.params, conf.unlock(PASSWORD))
    assert direct.root == os.fsencode(sample["cipher"])
    for rel, data in sample["files"].items():
        assert read_all(direct, rel) == data, rel


# metadata --------------------------------------------------------------------------------------
def test_lstat_matches_the_plaintext(tree, sample):
    """Type, permission bits and mtime of every entry; sizes of files and symlinks."""
    entries = plain_entries(sample["plain"])
    assert len(entries) > 20
    for rel, want in entries.items():
        got = tree.lstat(rel)
        assert stat.S_IFMT(got.st_mode) == stat.S_IFMT(want.st_mode), rel
        assert stat.S_IMODE(got.st_mode) == stat.S_IMODE(want.st_mode), rel
        assert got.st_mtime_ns == want.st_mtime_ns, rel
        if not stat.S_ISDIR(want.st_mode):
            assert got.st_size == want.st_size, rel  # a symlink's size is its target's length


def test_lstat_sizes_around_block_edges(tree):
    for size in (0, 1, 17, 18, 19, 4095, 4096, 4097, BIG):
        assert tree.lstat(b"size_%d" % size).st_size == size
    assert tree.lstat(b"sparse").st_size == SPARSE_OFFSET + len(SPARSE_DATA)
    # the backing file is larger by the header and 32 bytes per block: lstat is not a pass-through
    assert os.lstat(tree.cipher_path(b"size_4097")).st_size == HEADER_LEN + 4097 + 2 * 32


def test_listdir_names_are_the_plaintext_names(tree, sample):
    broot = os.fsencode(sample["plain"])
    for dirpath, _, _ in os.walk(broot):
        rel = os.path.relpath(dirpath, broot)
        rel = b"" if rel == b"." else rel
        names = [e.name for e in tree.listdir(rel)]
        assert sorted(names) == sorted(os.listdir(dirpath)), rel
        assert len(names) == len(set(names))
        entries, problems = tree.scan(rel)
        assert problems == [] and [e.name for e in entries] == names
    assert b"raw\xff\xfename" in [e.name for e in tree.listdir(b"")]  # bytes names, not decoded
    assert tree.listdir(b"emptydir") == []


def test_readdir_entries_carry_type_and_inode(tree, sample):
    for rel in (b"", b"dir", b"dir/sub", b"d" * 200):
        got = {e.name: e for e in tree.readdir(rel)}
        plain_dir = os.path.join(os.fsencode(sample["plain"]), rel)
        assert set(got) == set(os.listdir(plain_dir))
        for name, e in got.items():
            assert isinstance(e, DirEntry)
            child = rel + b"/" + name if rel else name
            want = os.lstat(os.path.join(plain_dir, name))
            assert stat.S_IFMT(e.mode) == stat.S_IFMT(want.st_mode), child
            assert e.ino == tree.lstat(child).st_ino == os.lstat(tree.cipher_path(child)).st_ino


def test_conf_diriv_and_sidecars_are_hidden(tree, sample):
    """The backing root holds gocryptfs.conf, a dir IV and long-name sidecars; none is listed."""
    backing = os.listdir(sample["cipher"])
    assert "gocryptfs.conf" in backing and "gocryptfs.diriv" in backing
    assert any(n.startswith("gocryptfs.longname.") and n.endswith(".name") for n in backing)
    names = [e.name for e in tree.listdir(b"")]
    assert not [n for n in names if n.startswith(b"gocryptfs.")]
    assert len(names) == len(os.listdir(sample["plain"]))


def test_readlink_targets(tree):
    assert tree.readlink(b"rel_link") == b"size_1"
    assert tree.readlink(b"abs_link") == b"/a/b/c/d"
    assert tree.readlink(b"dir/up_link") == b"../size_1"
    # what is on disk is the encrypted target, not the plaintext one
    assert os.readlink(tree.cipher_path(b"abs_link")) != b"/a/b/c/d"


def test_missing_paths_raise_file_not_found(tree):
    for call, rel in [(tree.lstat, b"nope"), (tree.lstat, b"dir/nope"), (tree.lstat, b"dir/sub/deeper/nope"),
                      (tree.open, b"nope"), (tree.open, b"dir/sub/nope"), (tree.readlink, b"nope")]:
        with pytest.raises(FileNotFoundError):
            call(rel)


def test_wrong_master_key_that_decrypts_one_name_by_chance():
    with pytest.raises(WrongPasswordError):
        open_tree(str(EXAMPLES / "v1.3"), masterkey_keys("v0.9"))


def test_wrong_master_key_on_own_plaintextnames_tree(tmp_path):
    """With plaintext names the probe authenticates the first file's block (deterministic)."""
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.txt").write_bytes(b"a\n")
    params = FsParams(plaintext_names=True, diriv=False, raw64=False)
    encrypt_tree(str(plain), str(tmp_path / "cipher"), PASSWORD, params, 10, progress=False)
    with pytest.raises(WrongPasswordError, match="a.txt"):
        open_tree(str(tmp_path / "cipher"), KeySource(masterkey="00" * 32))
    assert read_all(open_tree(str(tmp_path / "cipher"), password_keys()), b"a.txt") == b"a\n"


def test_master_key_without_config(tmp_path):
    """No gocryptfs.conf: --masterkey falls back to gocryptfs' defaults (those of v1.3)."""
    v13 = copy_tree(EXAMPLES / "v1.3", tmp_path / "v1.3")
    (v13 / "gocryptfs.conf").unlink()
    tree = open_tree(str(v13), masterkey_keys("v1.3"))
    assert read_all(tree, b"status.txt") == b"It works!\n"
    with pytest.raises(ConfigError):  # with a password there is nothing to unlock
        open_tree(str(v13), password_keys())


# the bundled gocryptfs examples --------------------------------------------------------------
def expected_content(name: str) -> dict[bytes, bytes | None]:
    """Plaintext of an example: file content, or None for a symlink."""
    root = EXAMPLES / "content"
    want = {os.fsencode(p.name): None if p.is_symlink() else p.read_bytes() for p in root.iterdir()}
    assert set(want) == {b"status.txt", b"rel", b"abs", LONGNAME_255}
    if name in NO_LONGNAME:
        del want[LONGNAME_255]
    return want


@pytest.mark.parametrize("block_path", ["auto", "python"])
@pytest.mark.parametrize("name", READABLE_EXAMPLES)
def test_examples_read_as_their_content(name, block_path):
    tree = open_tree(str(EXAMPLES / name), password_keys(), block_path=block_path)
    assert isinstance(tree, MountSource)
    want = expected_content(name)
    entries, problems = tree.scan(b"")
    assert problems == []
    assert sorted(e.name for e in entries) == sorted(want)
    for rel, content in want.items():
        st = tree.lstat(rel)
        if content is None:
            assert stat.S_ISLNK(st.st_mode)
            target = os.readlink(EXAMPLES / "content" / os.fsdecode(rel)).encode()
            assert tree.readlink(rel) == target and st.st_size == len(target)
        else:
            assert stat.S_ISREG(st.st_mode) and st.st_size == len(content)
            assert read_all(tree, rel) == content
            with tree.open(rel) as f:
                assert f.read(1, 4) == content[1:5] and f.read(len(content), 1) == b""
    assert tree.readlink(b"rel") == b"status.txt" and tree.readlink(b"abs") == b"/a/b/c/d"


@pytest.mark.parametrize("name", sorted(EXAMPLE_MASTER_KEYS))
def test_examples_open_with_their_master_key(name):
    tree = open_tree(str(EXAMPLES / name), masterkey_keys(name))
    assert read_all(tree, b"status.txt") == b"It works!\n"
    conf = ConfFile.load(str(EXAMPLES / name / "gocryptfs.conf"))
    direct = CipherTree(str(EXAMPLES / name), conf.params, parse_masterkey(EXAMPLE_MASTER_KEYS[name]))
    assert direct.readlink(b"rel") == b"status.txt"
    assert conf.unlock(PASSWORD) == parse_masterkey(EXAMPLE_MASTER_KEYS[name])


def test_example_block_error_names_the_file(tmp_path):
    v13 = copy_tree(EXAMPLES / "v1.3", tmp_path / "v1.3")
    flip(v13 / V13_STATUS, HEADER_LEN + 20, 0x80)  # inside block 0's ciphertext
    tree = open_tree(str(v13), password_keys())
    with tree.open(b"status.txt") as f, pytest.raises(BlockError) as e:
        f.read(0, 10)
    assert e.value.block_no == 0 and e.value.path == "/status.txt"


@pytest.mark.parametrize("name", ["v0.4", "v0.6-plaintextnames"])
def test_pre_v07_examples_are_refused(name):
    with pytest.raises(ConfigError):
        open_tree(str(EXAMPLES / name), password_keys())
