"""The ``python -m cryptfs`` command line: flags, exit codes, messages, tamper detection.

No FUSE mount is needed here; the one test that compares with ``gocryptfs -info`` lives in
test_oracle.py. Every encrypt uses ``--scryptn 10`` except the single check of the default N.
Invariant checked throughout: whenever decrypt exits 0 its output equals the plaintext, and
whenever it fails nothing is left in OUTDIR.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from cryptfs import exitcodes
from tests.support import EXAMPLES, PASSWORD_FILE, make_sample_tree, run_cli, snapshot

PLAIN_BS = 4096
HEADER_LEN = 18
GCM_CBS = PLAIN_BS + 32
V13_KEY = "fd890dab-86bf61cf-ec5ad460-ad3ed01f-9c52d546-2a31783d-a56b088d-3d05232e"
V13_STATUS = "mGj2_hdnHe34Sp0iIQUwuw"  # status.txt in the v1.3 example
DEFAULT_FLAGS = ["HKDF", "GCMIV128", "DirIV", "EMENames", "LongNames", "Raw64"]

VICTIM_SIZE = 3 * PLAIN_BS + 100  # 4 blocks, the last one partial
OTHER_SIZE = 2 * PLAIN_BS + 7  # 3 blocks
INNER_SIZE = 5000  # 2 blocks, in a subdirectory


# helpers -------------------------------------------------------------------------------------
def cipher_size(plain_size: int, overhead: int = 32) -> int:
    return 0 if plain_size == 0 else HEADER_LEN + plain_size + overhead * -(-plain_size // PLAIN_BS)


def encrypt(plain: Path, cipher: Path, *flags: str) -> None:
    """Encrypt like gocryptfs would (the sample tree's absolute link kept, for byte-exact round trips)."""
    r = run_cli("encrypt", "-q", "--scryptn", "10", "--passfile", PASSWORD_FILE, "--keep-external-links",
                *flags, plain, cipher)
    assert r.returncode == 0, r.stderr


def decrypt(cipher: Path, out: Path, *extra: str):
    return run_cli("decrypt", "--passfile", PASSWORD_FILE, "--keep-external-links", *extra, cipher, out)


def fsck(cipher: Path):
    return run_cli("fsck", "--passfile", PASSWORD_FILE, cipher)


def backing(cipher: Path, plain_size: int, overhead: int = 32) -> Path:
    """The backing file of the (only) plaintext file of this size, found by its cipher size."""
    want = cipher_size(plain_size, overhead)
    found = [Path(d, f) for d, _, files in os.walk(cipher) for f in files
             if not os.path.islink(os.path.join(d, f)) and os.path.getsize(os.path.join(d, f)) == want]
    assert len(found) == 1, f"expected one file of {want} bytes, found {found}"
    return found[0]


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ mask]))


def names_in(root: Path) -> set[str]:
    if not root.exists():
        return set()
    return {n for _, dirs, files in os.walk(root) for n in dirs + files}


def assert_no_output(out: Path) -> None:
    """A failed decrypt leaves nothing: OUTDIR removed (if it made it) or empty."""
    assert not out.exists() or not any(out.iterdir()), sorted(names_in(out))


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


# fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small plaintext tree and its encryption (default flags); tests copy the cipher dir."""
    root = tmp_path_factory.mktemp("base")
    plain = root / "plain"
    (plain / "sub").mkdir(parents=True)
    (plain / "hello.txt").write_bytes(b"hello\n")
    (plain / "victim.bin").write_bytes(os.urandom(VICTIM_SIZE))
    (plain / "other.bin").write_bytes(os.urandom(OTHER_SIZE))
    (plain / "sub" / "deep.txt").write_bytes(b"deep\n")
    (plain / "sub" / "inner.bin").write_bytes(os.urandom(INNER_SIZE))
    os.symlink("hello.txt", plain / "link")
    encrypt(plain, root / "cipher")
    return {"plain": plain, "cipher": root / "cipher"}


@pytest.fixture
def tree(base, tmp_path):
    """A private copy of the base cipher dir, free to tamper with."""
    return {"plain": base["plain"], "cipher": copy_tree(base["cipher"], tmp_path / "cipher"),
            "out": tmp_path / "out"}


@pytest.fixture
def v13(tmp_path):
    return copy_tree(EXAMPLES / "v1.3", tmp_path / "v1.3")


# command line ----------------------------------------------------------------------------------
def test_version():
    r = run_cli("--version")
    assert r.returncode == 0
    assert r.stdout.decode().startswith("cryptfs ")


def test_single_dash_long_flags(tmp_path, base):
    cipher, out = tmp_path / "cipher", tmp_path / "out"
    r = run_cli("encrypt", "-q", "-scryptn", "10", "-passfile", PASSWORD_FILE, "-deterministic-names",
                base["plain"], cipher)
    assert r.returncode == 0, r.stderr
    conf = json.loads((cipher / "gocryptfs.conf").read_text())
    assert conf["ScryptObject"]["N"] == 1024
    assert "DirIV" not in conf["FeatureFlags"] and "EMENames" in conf["FeatureFlags"]
    assert not (cipher / "gocryptfs.diriv").exists()
    r = run_cli("decrypt", f"-passfile={PASSWORD_FILE}", cipher, out)
    assert r.returncode == 0, r.stderr
    assert snapshot(out) == snapshot(base["plain"])
    r = run_cli("fsck", "-extpass", "echo test", cipher)
    assert r.returncode == 0, r.stderr
    r = run_cli("fsck", "-extpass=echo wrong", cipher)
    assert r.returncode == exitcodes.PASSWORD_INCORRECT


@pytest.mark.parametrize("args", [
    [],
    ["frobnicate"],
    ["decrypt"],
    ["decrypt", "{cipher}"],
    ["decrypt", "{cipher}", "{out}", "--bogus"],
    ["decrypt", "{cipher}", "{out}", "--passfile"],
    ["decrypt", "{cipher}", "{out}", "--passfile", "{pw}", "--masterkey", V13_KEY],
    ["decrypt", "{cipher}", "{out}", "--masterkey", "not-hex-at-all"],
    ["decrypt", "{cipher}", "{out}", "--masterkey", "abcd"],
    ["encrypt", "{plain}", "{out}", "--passfile", "{pw}", "--xchacha", "--aessiv"],
    ["encrypt", "{plain}", "{out}", "--passfile", "{pw}", "--scryptn", "5"],
    ["encrypt", "{plain}", "{out}", "--passfile", "{pw}", "--scryptn", "ten"],
    ["encrypt", "{plain}", "{out}", "--passfile", "{pw}", "-scryptn", "29"],
    ["encrypt", "{plain}", "{out}", "--passfile", "{pw}", "--longnamemax", "61"],
    ["encrypt", "{plain}", "{out}", "--passfile", "{pw}", "--plaintextnames", "--deterministic-names"],
    ["info"],
], ids=lambda a: " ".join(a) or "no-args")
def test_usage_errors(args, tmp_path, base):
    cipher = copy_tree(EXAMPLES / "v1.3", tmp_path / "v1.3")
    out = tmp_path / "out"
    subst = {"{cipher}": str(cipher), "{out}": str(out), "{plain}": str(base["plain"]),
             "{pw}": str(PASSWORD_FILE)}
    r = run_cli(*[subst.get(a, a) for a in args])
    assert r.returncode == exitcodes.USAGE, (r.stdout, r.stderr)
    assert b"error" in r.stderr.lower() and len(r.stderr.strip()) > 10
    assert not out.exists()


# decrypt ----------------------------------------------------------------------------------------
def test_decrypt_creates_missing_outdir(tree):
    out = tree["out"]
    assert not out.exists()
    r = decrypt(tree["cipher"], out)
    assert r.returncode == 0, r.stderr
    assert snapshot(out) == snapshot(tree["plain"])
    assert b"decrypted" in r.stdout


def test_decrypt_into_existing_empty_outdir(tree):
    out = tree["out"]
    out.mkdir()
    r = decrypt(tree["cipher"], out, "-q")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b""
    assert snapshot(out) == snapshot(tree["plain"])


def test_decrypt_refuses_nonempty_outdir(tree):
    out = tree["out"]
    out.mkdir()
    (out / "keep.txt").write_bytes(b"mine\n")
    (out / "victim.bin").write_bytes(b"not to be overwritten\n")
    before = snapshot(out)
    r = decrypt(tree["cipher"], out)
    assert r.returncode == exitcodes.OUTPUT, r.stderr
    assert b"not empty" in r.stderr
    assert snapshot(out) == before


def test_decrypt_refuses_outdir_that_is_a_file(tree):
    tree["out"].write_bytes(b"a file\n")
    r = decrypt(tree["cipher"], tree["out"])
    assert r.returncode == exitcodes.OUTPUT
    assert tree["out"].read_bytes() == b"a file\n"


def test_decrypt_refuses_outdir_inside_cipherdir(tree):
    out = tree["cipher"] / "plain"
    r = decrypt(tree["cipher"], out)
    assert r.returncode == exitcodes.OUTPUT, r.stderr
    assert not out.exists()


@pytest.mark.parametrize("precreate", [False, True], ids=["missing-outdir", "empty-outdir"])
def test_decrypt_wrong_password(tree, tmp_path, precreate):
    wrong = tmp_path / "wrong.txt"
    wrong.write_bytes(b"tset\n")
    out = tree["out"]
    if precreate:
        out.mkdir()
    r = run_cli("decrypt", "--passfile", wrong, tree["cipher"], out)
    assert r.returncode == exitcodes.PASSWORD_INCORRECT, r.stderr
    assert b"password" in r.stderr.lower()
    assert_no_output(out)
    assert out.exists() == precreate


def test_decrypt_outdir_parent_missing(tree):
    out = tree["out"] / "a" / "b"
    r = decrypt(tree["cipher"], out)
    assert r.returncode == exitcodes.OUTPUT, r.stderr
    assert not tree["out"].exists()


def test_decrypt_missing_cipherdir(tmp_path):
    r = decrypt(tmp_path / "nope", tmp_path / "out")
    assert r.returncode == exitcodes.CIPHERDIR
    assert b"nope" in r.stderr
    assert not (tmp_path / "out").exists()


def test_decrypt_missing_conf(tree):
    (tree["cipher"] / "gocryptfs.conf").unlink()
    r = decrypt(tree["cipher"], tree["out"])
    assert r.returncode == exitcodes.CONFIG
    err = r.stderr.decode()
    assert "gocryptfs.conf" in err and "not found" in err
    assert "--config" in err and "--masterkey" in err  # says what to do
    assert_no_output(tree["out"])


def test_decrypt_config_elsewhere(tmp_path, base):
    cipher, conf, out = tmp_path / "cipher", tmp_path / "elsewhere.conf", tmp_path / "out"
    encrypt(base["plain"], cipher, "--config", str(conf))
    assert conf.is_file() and not (cipher / "gocryptfs.conf").exists()
    assert decrypt(cipher, out).returncode == exitcodes.CONFIG
    r = decrypt(cipher, out, "--config", str(conf))
    assert r.returncode == 0, r.stderr
    assert snapshot(out) == snapshot(base["plain"])


def test_decrypt_password_from_stdin(tree):
    r = run_cli("decrypt", tree["cipher"], tree["out"], input=b"test\n")
    assert r.returncode == 0, r.stderr
    assert snapshot(tree["out"]) == snapshot(tree["plain"])


def test_decrypt_empty_stdin_is_a_password_read_error(tree):
    r = run_cli("decrypt", tree["cipher"], tree["out"])  # stdin is /dev/null
    assert r.returncode == exitcodes.PASSWORD_READ
    assert b"empty" in r.stderr
    assert_no_output(tree["out"])


def test_decrypt_extpass(tree):
    r = run_cli("decrypt", "--extpass", "echo test", tree["cipher"], tree["out"])
    assert r.returncode == 0, r.stderr
    assert snapshot(tree["out"]) == snapshot(tree["plain"])


def test_extpass_uses_the_first_line_only(tree):
    r = run_cli("decrypt", "--extpass", "printf test\\nsecond-line", tree["cipher"], tree["out"])
    assert r.returncode == 0, r.stderr
    assert snapshot(tree["out"]) == snapshot(tree["plain"])


def test_decrypt_extpass_failing_program(tree):
    r = run_cli("decrypt", "--extpass", "false", tree["cipher"], tree["out"])
    assert r.returncode == exitcodes.PASSWORD_READ
    assert_no_output(tree["out"])


def test_decrypt_passfiles_concatenate(tree, tmp_path):
    (tmp_path / "a").write_bytes(b"te\n")
    (tmp_path / "b").write_bytes(b"st\n")
    r = run_cli("decrypt", "--passfile", tmp_path / "a", "--passfile", tmp_path / "b", tree["cipher"],
                tree["out"])
    assert r.returncode == 0, r.stderr


# tampering ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("precreate", [False, True], ids=["missing-outdir", "empty-outdir"])
def test_flipped_content_byte(tree, precreate):
    victim = backing(tree["cipher"], VICTIM_SIZE)
    flip(victim, HEADER_LEN + GCM_CBS + 1000)  # inside block 1
    out = tree["out"]
    if precreate:
        out.mkdir()
    r = decrypt(tree["cipher"], out)
    assert r.returncode == exitcodes.INTEGRITY, (r.stdout, r.stderr)
    err = r.stderr.decode()
    assert "victim.bin" in err and "block 1" in err
    assert_no_output(out)
    assert "victim.bin" not in names_in(out)
    r = fsck(tree["cipher"])
    assert r.returncode == exitcodes.INTEGRITY
    assert "/victim.bin" in r.stdout.decode() and "block 1" in r.stdout.decode()


@pytest.mark.parametrize("offset", [0, 1, 2, 17, 18, 33, 34, 43, 44, 59])
def test_every_part_of_a_file_is_authenticated(v13, tmp_path, offset):
    """Header (version, file ID), nonce, ciphertext and tag of status.txt: any flip is caught."""
    flip(v13 / V13_STATUS, offset, 0x80)
    out = tmp_path / "out"
    r = decrypt(v13, out)
    assert r.returncode == exitcodes.INTEGRITY, (offset, r.stderr)
    assert "status.txt" in r.stderr.decode()
    assert_no_output(out)


def test_flipped_name_byte_is_skipped_and_reported(v13, tmp_path):
    bad = "n" + V13_STATUS[1:]  # one base64 character changed: 6 bits of the EME ciphertext
    os.rename(v13 / V13_STATUS, v13 / bad)
    out = tmp_path / "out"
    r = decrypt(v13, out)
    assert r.returncode == 0, r.stderr
    assert b"warning" in r.stderr and b"skipped" in r.stderr
    got = snapshot(out, times=False)
    want = snapshot(EXAMPLES / "content", times=False)
    del want[b"status.txt"]
    assert got == want  # everything else intact, nothing invented
    r = fsck(v13)
    assert r.returncode == exitcodes.INTEGRITY
    lines = [ln for ln in r.stdout.decode().splitlines() if bad in ln]
    assert len(lines) == 1 and "name" in lines[0]


def test_corrupt_sidecar_is_skipped_and_reported(v13, tmp_path):
    sidecar = next(v13.glob("gocryptfs.longname.*.name"))
    sidecar.write_bytes(sidecar.read_bytes()[:-1] + b"A")
    out = tmp_path / "out"
    r = decrypt(v13, out)
    assert r.returncode == 0, r.stderr
    assert b"warning" in r.stderr
    assert set(names_in(out)) == {"status.txt", "rel", "abs"}
    assert (out / "status.txt").read_bytes() == b"It works!\n"
    r = fsck(v13)
    assert r.returncode == exitcodes.INTEGRITY
    assert "gocryptfs.longname." in r.stdout.decode()


@pytest.mark.parametrize("pos", [0, 7, 31, 32, 48, 63])
def test_flipped_encrypted_key_byte(tree, pos):
    conf_path = tree["cipher"] / "gocryptfs.conf"
    conf = json.loads(conf_path.read_text())
    key = bytearray(base64.b64decode(conf["EncryptedKey"]))
    key[pos] ^= 0x01
    conf["EncryptedKey"] = base64.b64encode(bytes(key)).decode()
    os.chmod(conf_path, 0o600)
    conf_path.write_text(json.dumps(conf, indent="\t") + "\n")
    r = decrypt(tree["cipher"], tree["out"])
    assert r.returncode == exitcodes.PASSWORD_INCORRECT, r.stderr
    assert_no_output(tree["out"])


@pytest.mark.parametrize("char", [0, 1, 20, 42, 60, 85, 86, 87])
def test_flipped_conf_text_byte_in_encrypted_key(tree, char):
    """A raw byte flipped inside the EncryptedKey string: invalid base64 (8) or wrong key (12)."""
    conf_path = tree["cipher"] / "gocryptfs.conf"
    text = conf_path.read_bytes()
    start = text.index(b'"EncryptedKey": "') + len(b'"EncryptedKey": "')
    assert text[start + 87] == ord("=")  # 64 bytes -> 88 characters, padded
    os.chmod(conf_path, 0o600)
    flip(conf_path, start + char, 0x01)
    r = decrypt(tree["cipher"], tree["out"])
    assert r.returncode in (exitcodes.PASSWORD_INCORRECT, exitcodes.CONFIG), r.stderr
    assert r.stderr.strip()
    assert_no_output(tree["out"])


def test_truncated_mid_block(tree):
    victim = backing(tree["cipher"], VICTIM_SIZE)
    os.truncate(victim, HEADER_LEN + GCM_CBS + 2000)  # block 1 cut in half
    r = decrypt(tree["cipher"], tree["out"])
    assert r.returncode == exitcodes.INTEGRITY, r.stderr
    assert b"victim.bin" in r.stderr and b"block 1" in r.stderr
    assert_no_output(tree["out"])


def test_truncated_leaving_a_short_tail(tree):
    """A tail of 1..32 bytes can never be a valid block."""
    victim = backing(tree["cipher"], VICTIM_SIZE)
    os.truncate(victim, HEADER_LEN + 2 * GCM_CBS + 20)
    r = decrypt(tree["cipher"], tree["out"])
    assert r.returncode == exitcodes.INTEGRITY, r.stderr
    assert b"block 2" in r.stderr
    assert_no_output(tree["out"])


def test_truncated_at_block_boundary_gives_a_correct_prefix(tree):
    """Known format limit (spec §7): cutting whole blocks off the end is not detectable.

    The output is then shorter, but its bytes are still the plaintext's (never wrong bytes).
    """
    victim = backing(tree["cipher"], VICTIM_SIZE)
    os.truncate(victim, HEADER_LEN + 2 * GCM_CBS)
    r = decrypt(tree["cipher"], tree["out"])
    assert r.returncode == 0, r.stderr
    want = (tree["plain"] / "victim.bin").read_bytes()[: 2 * PLAIN_BS]
    assert (tree["out"] / "victim.bin").read_bytes() == want


def test_swapped_blocks(tree):
    victim = backing(tree["cipher"], VICTIM_SIZE)
    data = bytearray(victim.read_bytes())
    b0 = slice(HEADER_LEN, HEADER_LEN + GCM_CBS)
    b1 = slice(HEADER_LEN + GCM_CBS, HEADER_LEN + 2 * GCM_CBS)
    data[b0], data[b1] = data[b1], data[b0]
    victim.write_bytes(bytes(data))
    r = decrypt(tree["cipher"], tree["out"])
    assert r.returncode == exitcodes.INTEGRITY, r.stderr
    assert b"victim.bin" in r.stderr and b"block 0" in r.stderr
    assert_no_output(tree["out"])


def test_blocks_moved_between_files(tree):
    """Block 0 of another file at the same position fails: blocks are bound to the file ID."""
    victim, other = backing(tree["cipher"], VICTIM_SIZE), backing(tree["cipher"], OTHER_SIZE)
    data = bytearray(victim.read_bytes())
    data[HEADER_LEN: HEADER_LEN + GCM_CBS] = other.read_bytes()[HEADER_LEN: HEADER_LEN + GCM_CBS]
    victim.write_bytes(bytes(data))
    r = decrypt(tree["cipher"], tree["out"])
    assert r.returncode == exitcodes.INTEGRITY, r.stderr
    assert b"victim.bin" in r.stderr and b"block 0" in r.stderr


def test_tampered_symlink_target(tree):
    links = [p for p in tree["cipher"].iterdir() if p.is_symlink()]
    assert len(links) == 1
    target = os.readlink(links[0])
    c = "A" if target[10] != "A" else "B"
    links[0].unlink()
    os.symlink(target[:10] + c + target[11:], links[0])
    r = decrypt(tree["cipher"], tree["out"])
    assert r.returncode == exitcodes.INTEGRITY, r.stderr
    assert b"link" in r.stderr
    assert_no_output(tree["out"])
    r = fsck(tree["cipher"])
    assert r.returncode == exitcodes.INTEGRITY and b"/link" in r.stdout


def test_missing_diriv_in_subdir(tree):
    subdirs = [p for p in tree["cipher"].iterdir() if p.is_dir()]
    assert len(subdirs) == 1
    (subdirs[0] / "gocryptfs.diriv").unlink()
    r = fsck(tree["cipher"])
    assert r.returncode == exitcodes.INTEGRITY
    lines = [ln for ln in r.stdout.decode().splitlines() if "gocryptfs.diriv" in ln]
    assert len(lines) == 1 and "/sub" in lines[0]
    r = decrypt(tree["cipher"], tree["out"])
    assert r.returncode == exitcodes.INTEGRITY, r.stderr
    assert b"gocryptfs.diriv" in r.stderr
    assert_no_output(tree["out"])


def test_header_only_file_reads_empty_like_gocryptfs_but_fsck_warns(tree):
    """A 1..18-byte file reads as empty in gocryptfs; decrypt follows, fsck warns (exit code unchanged)."""
    inner = backing(tree["cipher"], INNER_SIZE)
    os.truncate(inner, 10)
    r = decrypt(tree["cipher"], tree["out"])
    assert r.returncode == 0, r.stderr
    assert (tree["out"] / "sub" / "inner.bin").read_bytes() == b""
    r = fsck(tree["cipher"])
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stdout.decode().splitlines() if ln.startswith("fsck: warning:")]
    assert len(warnings) == 1 and "/sub/inner.bin" in warnings[0] and "no header" in warnings[0]
    assert "1 warning" in r.stdout.decode()


# fsck -------------------------------------------------------------------------------------------
def test_fsck_clean_tree(tree):
    r = fsck(tree["cipher"])
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert b"no problems" in r.stdout
    assert b"fsck:" not in r.stdout


def test_fsck_lists_every_problem(tree):
    victim = backing(tree["cipher"], VICTIM_SIZE)
    inner = backing(tree["cipher"], INNER_SIZE)
    flip(victim, HEADER_LEN + GCM_CBS + 5)  # block 1
    flip(victim, HEADER_LEN + 3 * GCM_CBS + 40)  # block 3 (the partial last one)
    flip(inner, HEADER_LEN + 100)  # block 0
    r = fsck(tree["cipher"])
    assert r.returncode == exitcodes.INTEGRITY
    lines = [ln for ln in r.stdout.decode().splitlines() if "block" in ln]
    assert len(lines) == 3, r.stdout
    assert sum("/victim.bin" in ln and "block 1" in ln for ln in lines) == 1
    assert sum("/victim.bin" in ln and "block 3" in ln for ln in lines) == 1
    assert sum("/sub/inner.bin" in ln and "block 0" in ln for ln in lines) == 1
    assert b"3 problems" in r.stderr
    assert b"no problems" not in r.stdout


def test_fsck_wrong_password(tree, tmp_path):
    (tmp_path / "wrong").write_bytes(b"nope\n")
    r = run_cli("fsck", "--passfile", tmp_path / "wrong", tree["cipher"])
    assert r.returncode == exitcodes.PASSWORD_INCORRECT


def test_fsck_one_line_per_problem_even_with_newline_in_name(tmp_path):
    """Regression: names used to be printed raw, so a newline split one problem over two lines."""
    plain, cipher = tmp_path / "plain", tmp_path / "cipher"
    plain.mkdir()
    (plain / "two\nlines").write_bytes(os.urandom(5000))
    encrypt(plain, cipher)
    flip(backing(cipher, 5000), HEADER_LEN + 50)
    r = fsck(cipher)
    assert r.returncode == exitcodes.INTEGRITY
    lines = [ln for ln in r.stdout.decode().splitlines() if ln.strip()]
    assert len(lines) == 1, lines  # the summary goes to stderr
    assert "block 0" in lines[0] and "two" in lines[0] and "lines" in lines[0]
    r = decrypt(cipher, tmp_path / "out")
    assert r.returncode == exitcodes.INTEGRITY
    assert len([ln for ln in r.stderr.decode().splitlines() if "block 0" in ln]) == 1


def test_fsck_reports_problem_in_non_utf8_name(tmp_path, monkeypatch):
    """Regression: with a strict-UTF-8 stdout (a non-C UTF-8 locale such as en_US.UTF-8) fsck
    crashed with UnicodeEncodeError when a problem named a non-UTF-8 file."""
    monkeypatch.setenv("PYTHONIOENCODING", "utf-8:strict")  # what a en_US.UTF-8 desktop gets
    plain, cipher = tmp_path / "plain", tmp_path / "cipher"
    plain.mkdir()
    (plain / os.fsdecode(b"raw\xff\xfename")).write_bytes(os.urandom(5000))
    encrypt(plain, cipher)
    flip(backing(cipher, 5000), HEADER_LEN + 50)
    r = fsck(cipher)
    assert r.returncode == exitcodes.INTEGRITY, r.stderr
    assert b"block 0" in r.stdout and b"raw" in r.stdout and b"name" in r.stdout
    r = decrypt(cipher, tmp_path / "out")
    assert r.returncode == exitcodes.INTEGRITY
    assert b"raw" in r.stderr and b"block 0" in r.stderr


@pytest.mark.parametrize("command", ["decrypt", "encrypt"])
def test_summary_with_non_utf8_output_path(tmp_path, monkeypatch, base, command):
    monkeypatch.setenv("PYTHONIOENCODING", "utf-8:strict")  # what a en_US.UTF-8 desktop gets
    target = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"out\xff")))
    if command == "decrypt":
        r = decrypt(base["cipher"], target)
        want = snapshot(base["plain"])
    else:
        r = run_cli("encrypt", "--scryptn", "10", "--passfile", PASSWORD_FILE, base["plain"], target)
        want = None
    assert r.returncode == 0, r.stderr
    assert b"Traceback" not in r.stderr
    if want is not None:
        assert snapshot(target) == want


# encrypt ----------------------------------------------------------------------------------------
def test_encrypt_refuses_nonempty_cipherdir(tmp_path, base):
    cipher = tmp_path / "cipher"
    cipher.mkdir()
    (cipher / "precious").write_bytes(b"keep me\n")
    before = snapshot(cipher)
    r = run_cli("encrypt", "--scryptn", "10", "--passfile", PASSWORD_FILE, base["plain"], cipher)
    assert r.returncode == exitcodes.CIPHERDIR
    assert b"not empty" in r.stderr
    assert snapshot(cipher) == before


def test_encrypt_creates_missing_cipherdir(tmp_path, base):
    cipher, out = tmp_path / "new", tmp_path / "out"
    r = run_cli("encrypt", "--scryptn", "10", "--passfile", PASSWORD_FILE, base["plain"], cipher)
    assert r.returncode == 0, r.stderr
    assert b"encrypted" in r.stdout
    assert (cipher / "gocryptfs.conf").is_file() and (cipher / "gocryptfs.diriv").is_file()
    assert decrypt(cipher, out).returncode == 0
    assert snapshot(out) == snapshot(base["plain"])


def test_encrypt_missing_plaindir(tmp_path):
    r = run_cli("encrypt", "--scryptn", "10", "--passfile", PASSWORD_FILE, tmp_path / "nope", tmp_path / "c")
    assert r.returncode == exitcodes.CIPHERDIR
    assert not (tmp_path / "c").exists()


def test_encrypt_refuses_cipherdir_inside_plaindir(tmp_path, base):
    plain = copy_tree(base["plain"], tmp_path / "plain")
    before = snapshot(plain)
    r = run_cli("encrypt", "--scryptn", "10", "--passfile", PASSWORD_FILE, plain, plain / "cipher")
    assert r.returncode in (exitcodes.USAGE, exitcodes.CIPHERDIR)
    assert r.stderr.strip()
    assert snapshot(plain) == before


def test_encrypt_stdin_password(tmp_path, base):
    cipher, out = tmp_path / "cipher", tmp_path / "out"
    r = run_cli("encrypt", "-q", "--scryptn", "10", base["plain"], cipher, input=b"test\n")
    assert r.returncode == 0, r.stderr
    assert decrypt(cipher, out).returncode == 0  # the password from the file unlocks it
    assert snapshot(out) == snapshot(base["plain"])


@pytest.mark.parametrize("flags", [[], ["--xchacha"], ["--aessiv"], ["--xchacha", "--deterministic-names"],
                                   ["--plaintextnames"], ["--longnamemax", "62"]],
                         ids=lambda f: " ".join(f) or "default")
def test_encrypt_decrypt_roundtrip(tmp_path, flags):
    plain = make_sample_tree(tmp_path / "plain")
    (plain / "ro_dir").mkdir()
    (plain / "ro_dir" / "ro_file").write_bytes(b"read-only\n")
    os.chmod(plain / "ro_dir" / "ro_file", 0o400)
    os.chmod(plain / "ro_dir", 0o555)
    (plain / "exec_file").write_bytes(b"#!/bin/sh\n")
    os.chmod(plain / "exec_file", 0o751)
    cipher, out = tmp_path / "cipher", tmp_path / "out"
    encrypt(plain, cipher, *flags)
    r = decrypt(cipher, out)
    assert r.returncode == 0, r.stderr
    assert snapshot(out) == snapshot(plain)
    r = fsck(cipher)  # the sample's absolute link is the one problem; its sparse file's holes are warnings
    assert r.returncode == exitcodes.INTEGRITY, r.stderr
    problems = [ln for ln in r.stdout.decode().splitlines()
                if ln.startswith("fsck: ") and not ln.startswith("fsck: warning:")]
    assert len(problems) == 1 and "/abs_link" in problems[0] and "leaves the tree" in problems[0], problems
    assert b"1 problem found, 3 warnings" in r.stderr


def test_fifo_roundtrip(tmp_path):
    plain, cipher, out = tmp_path / "plain", tmp_path / "cipher", tmp_path / "out"
    plain.mkdir()
    os.mkfifo(plain / "pipe", 0o640)
    (plain / "f").write_bytes(b"f\n")
    encrypt(plain, cipher)
    r = decrypt(cipher, out)
    assert r.returncode == 0, r.stderr
    st = os.lstat(out / "pipe")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    assert (out / "f").read_bytes() == b"f\n"


def test_decrypt_masterkey_from_stdin(v13, tmp_path):
    out = tmp_path / "out"
    r = run_cli("decrypt", "--masterkey", "stdin", v13, out, input=V13_KEY.encode() + b"\n")
    assert r.returncode == 0, r.stderr
    assert (out / "status.txt").read_bytes() == b"It works!\n"


def test_encrypt_refuses_symlinks_leaving_plaindir_unless_asked(tmp_path):
    plain, outside = tmp_path / "plain", tmp_path / "outside.txt"
    plain.mkdir()
    outside.write_bytes(b"outside\n")
    (plain / "inside.txt").write_bytes(b"inside\n")
    os.symlink("inside.txt", plain / "ok_link")
    os.symlink("../outside.txt", plain / "escaping_link")
    os.symlink(str(outside), plain / "absolute_link")
    cipher, out = tmp_path / "cipher", tmp_path / "out"
    r = run_cli("encrypt", "--scryptn", "10", "--passfile", PASSWORD_FILE, plain, cipher)
    assert r.returncode == exitcodes.USAGE, r.stderr
    err = r.stderr.decode()
    assert "points outside" in err and "-L" in err and "--keep-external-links" in err
    assert not cipher.exists()  # nothing kept
    r = run_cli("encrypt", "--scryptn", "10", "--passfile", PASSWORD_FILE, "--keep-external-links",
                plain, cipher)
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.decode().splitlines() if "warning" in ln]
    assert any("escaping_link" in w for w in warnings), warnings
    assert any("absolute_link" in w for w in warnings), warnings
    assert not any("ok_link" in w for w in warnings), warnings
    # kept as links, with their targets unchanged, for a decrypt that asks for them
    assert decrypt(cipher, out).returncode == 0
    assert os.readlink(out / "escaping_link") == "../outside.txt"
    assert os.readlink(out / "absolute_link") == str(outside)
    # by default decrypt never writes a link that leaves the tree
    out2 = tmp_path / "out2"
    r = run_cli("decrypt", "--passfile", PASSWORD_FILE, cipher, out2)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out2)) == ["inside.txt", "ok_link"]
    assert b"escaping_link: skipped" in r.stderr and b"absolute_link: skipped" in r.stderr


@pytest.mark.parametrize("flag", ["-L", "--dereference", "-dereference"])
def test_encrypt_dereference_copies_targets(tmp_path, flag):
    plain, ext = tmp_path / "plain", tmp_path / "external"
    (ext / "dir" / "nested").mkdir(parents=True)
    (ext / "file.bin").write_bytes(os.urandom(9000))
    (ext / "dir" / "a.txt").write_bytes(b"a\n")
    (ext / "dir" / "nested" / "b.txt").write_bytes(b"b\n")
    plain.mkdir()
    os.symlink("../external/file.bin", plain / "file_link")
    os.symlink(str(ext / "dir"), plain / "dir_link")
    cipher, out = tmp_path / "cipher", tmp_path / "out"
    r = run_cli("encrypt", "--scryptn", "10", "--passfile", PASSWORD_FILE, flag, plain, cipher)
    assert r.returncode == 0, r.stderr
    assert b"warning" not in r.stderr
    assert not [p for p in cipher.rglob("*") if p.is_symlink()]
    assert decrypt(cipher, out).returncode == 0
    assert not (out / "file_link").is_symlink() and (out / "file_link").is_file()
    assert (out / "file_link").read_bytes() == (ext / "file.bin").read_bytes()
    assert not (out / "dir_link").is_symlink() and (out / "dir_link").is_dir()
    assert snapshot(out / "dir_link", times=False) == snapshot(ext / "dir", times=False)


def test_encrypt_dereference_symlink_loop_refused(tmp_path):
    plain, cipher = tmp_path / "plain", tmp_path / "cipher"
    (plain / "sub").mkdir(parents=True)
    (plain / "sub" / "f").write_bytes(b"f\n")
    os.symlink("..", plain / "sub" / "up")
    r = run_cli("encrypt", "--scryptn", "10", "--passfile", PASSWORD_FILE, "-L", plain, cipher)
    assert r.returncode != 0
    assert b"loop" in r.stderr
    assert not cipher.exists()  # the partial output is removed
    # without -L the loop is just a symlink
    r = run_cli("encrypt", "-q", "--scryptn", "10", "--passfile", PASSWORD_FILE, plain, cipher)
    assert r.returncode == 0, r.stderr


def test_encrypt_dereference_keeps_broken_symlink(tmp_path):
    plain, cipher, out = tmp_path / "plain", tmp_path / "cipher", tmp_path / "out"
    plain.mkdir()
    os.symlink("does-not-exist", plain / "broken")
    r = run_cli("encrypt", "--scryptn", "10", "--passfile", PASSWORD_FILE, "-L", plain, cipher)
    assert r.returncode == 0, r.stderr
    assert b"broken" in r.stderr
    assert decrypt(cipher, out).returncode == 0
    assert os.readlink(out / "broken") == "does-not-exist"


def _hf_cache(root: Path) -> tuple[Path, bytes]:
    """models--org--name/{blobs/<sha>, snapshots/<rev>/model.safetensors -> ../../blobs/<sha>}."""
    repo = root / "models--org--name"
    blob = os.urandom(20000)
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "abc123").write_bytes(blob)
    (repo / "blobs" / "def456").write_bytes(b'{"model_type": "x"}\n')
    snap = repo / "snapshots" / "rev1"
    snap.mkdir(parents=True)
    os.symlink("../../blobs/abc123", snap / "model.safetensors")
    os.symlink("../../blobs/def456", snap / "config.json")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_bytes(b"rev1")
    return repo, blob


def test_encrypt_hf_snapshot_with_dereference(tmp_path):
    repo, blob = _hf_cache(tmp_path / "hf")
    snap = repo / "snapshots" / "rev1"
    cipher, out = tmp_path / "cipher", tmp_path / "out"
    # without -L the snapshot's links point outside it: refused, saying which flag to give
    r = run_cli("encrypt", "--scryptn", "10", "--passfile", PASSWORD_FILE, snap, tmp_path / "nolinks")
    assert r.returncode == exitcodes.USAGE and b"-L" in r.stderr, r.stderr
    assert not (tmp_path / "nolinks").exists()
    r = run_cli("encrypt", "-q", "--scryptn", "10", "--passfile", PASSWORD_FILE, "-L", snap, cipher)
    assert r.returncode == 0, r.stderr
    assert decrypt(cipher, out).returncode == 0
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    assert not (out / "model.safetensors").is_symlink()
    assert (out / "model.safetensors").read_bytes() == blob
    assert (out / "config.json").read_bytes() == b'{"model_type": "x"}\n'


def test_encrypt_hf_repo_with_dereference(tmp_path):
    repo, blob = _hf_cache(tmp_path / "hf")
    cipher, out = tmp_path / "cipher", tmp_path / "out"
    r = run_cli("encrypt", "-q", "--scryptn", "10", "--passfile", PASSWORD_FILE, "-L", repo, cipher)
    assert r.returncode == 0, r.stderr
    assert decrypt(cipher, out).returncode == 0
    model = out / "snapshots" / "rev1" / "model.safetensors"
    assert model.is_file() and not model.is_symlink() and model.read_bytes() == blob
    assert (out / "blobs" / "abc123").read_bytes() == blob
    assert (out / "refs" / "main").read_bytes() == b"rev1"


def test_encrypt_default_config(tmp_path):
    plain, cipher = tmp_path / "plain", tmp_path / "cipher"
    plain.mkdir()
    (plain / "f").write_bytes(b"x")
    r = run_cli("encrypt", "-q", "--passfile", PASSWORD_FILE, plain, cipher)  # default scrypt cost
    assert r.returncode == 0, r.stderr
    conf_path = cipher / "gocryptfs.conf"
    assert stat.S_IMODE(conf_path.stat().st_mode) == 0o400
    conf = json.loads(conf_path.read_text())
    assert conf["FeatureFlags"] == DEFAULT_FLAGS
    assert conf["ScryptObject"]["N"] == 65536
    assert conf["ScryptObject"]["R"] == 8 and conf["ScryptObject"]["P"] == 1
    assert conf["ScryptObject"]["KeyLen"] == 32 and conf["Version"] == 2
    assert len(base64.b64decode(conf["ScryptObject"]["Salt"])) == 32
    assert len(base64.b64decode(conf["EncryptedKey"])) == 64
    assert "LongNameMax" not in conf
    assert conf_path.read_bytes().endswith(b"}\n") and b'\n\t"Creator"' in conf_path.read_bytes()


def test_decrypt_plaintext_named_like_a_temp_file(tmp_path):
    """Regression: temp files were OUTDIR/<dir>/.cryptfs-partial-<n> (a counter, O_EXCL), so a
    plaintext entry of that name decrypted earlier made decrypt fail with "File exists"."""
    plain, cipher, out = tmp_path / "plain", tmp_path / "cipher", tmp_path / "out"
    plain.mkdir()
    for n in range(1, 4):
        (plain / f".cryptfs-partial-{n}").write_bytes(b"a legal file name %d\n" % n)
    (plain / "a").write_bytes(b"another file\n")
    # plaintext names are listed in name order, so these are written before "a"
    encrypt(plain, cipher, "--plaintextnames")
    assert fsck(cipher).returncode == 0
    r = decrypt(cipher, out)
    assert r.returncode == 0, r.stderr
    assert snapshot(out) == snapshot(plain)


# info -------------------------------------------------------------------------------------------
def test_info_on_example(v13):
    r = run_cli("info", v13)
    assert r.returncode == 0, r.stderr
    text = r.stdout.decode()
    rows = dict((k.strip(), v.strip()) for k, v in (ln.split(":", 1) for ln in text.splitlines()))
    assert rows["Creator"] == "gocryptfs v1.2.1-23-gd78a8d1-dirty"
    assert rows["FeatureFlags"] == "GCMIV128 DirIV EMENames LongNames Raw64 HKDF"
    assert rows["EncryptedKey"] == "64B"
    assert rows["ScryptObject"] == "Salt=32B N=1024 R=8 P=1 KeyLen=32"
    assert rows["contentEncryption"] == "AES-GCM-256"


@pytest.mark.parametrize("flags, content", [([], "AES-GCM-256"), (["--xchacha"], "XChaCha20-Poly1305"),
                                            (["--aessiv"], "AES-SIV-512")])
def test_info_shows_no_secrets(tmp_path, flags, content):
    plain, cipher = tmp_path / "plain", tmp_path / "cipher"
    plain.mkdir()
    encrypt(plain, cipher, *flags)
    conf = json.loads((cipher / "gocryptfs.conf").read_text())
    r = run_cli("info", cipher)
    assert r.returncode == 0, r.stderr
    text = (r.stdout + r.stderr).decode()
    for key in ("Creator", "FeatureFlags", "EncryptedKey", "ScryptObject", "contentEncryption"):
        assert f"{key}:" in text
    assert content in text and "N=1024" in text
    secrets = [conf["EncryptedKey"], conf["ScryptObject"]["Salt"]]
    secrets += [base64.b64decode(s).hex() for s in secrets]
    for s in secrets:
        assert s not in text and s[:12] not in text


def test_info_errors(tmp_path):
    assert run_cli("info", tmp_path / "nope").returncode == exitcodes.CIPHERDIR
    (tmp_path / "empty").mkdir()
    r = run_cli("info", tmp_path / "empty")
    assert r.returncode == exitcodes.CONFIG
    assert b"gocryptfs.conf" in r.stderr


def test_wrong_masterkey_on_plaintextnames_is_a_wrong_key(tmp_path):
    """With plaintext names there is no name to check the key on: the first file's block is."""
    plain, cipher, out = tmp_path / "plain", tmp_path / "cipher", tmp_path / "out"
    plain.mkdir()
    (plain / "a.txt").write_bytes(b"hello\n")
    assert run_cli("encrypt", "--scryptn", "10", "--plaintextnames", "--passfile", PASSWORD_FILE,
                   plain, cipher).returncode == 0
    proc = run_cli("decrypt", "--masterkey", "11" * 32, cipher, out)
    assert proc.returncode == exitcodes.PASSWORD_INCORRECT, proc.stderr
    assert not out.exists() or not any(out.iterdir())
