"""The gocryptfs side of "hold under attack": what a storage attacker could do, refused or EIO.

Every test here failed (or hung: hence the subprocess timeouts) on the code before the fix.
The attacker controls the cipher directory but knows neither the password nor the VM's memory.
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest

from cryptfs import exitcodes
from cryptfs.core.files import close_passed_fd
from cryptfs.password import read_passfile
from tests.support import PASSWORD_FILE, cryptfs_mount, run_cli

PLAIN_BS = 4096
CIPHER_BS = 4096 + 32
HEADER = 18
HANG = 30  # seconds: a subprocess still running then has hung on a FIFO or a KDF


def encrypt(plain: Path, cipher: Path, *flags: str) -> None:
    r = run_cli("encrypt", "-q", "--scryptn", "10", "--passfile", PASSWORD_FILE, *flags, plain, cipher)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def tree(tmp_path) -> dict:
    """A small gocryptfs tree (our encrypt, v2.4 defaults): a 3-block file and a subdirectory."""
    plain, cipher = tmp_path / "plain", tmp_path / "cipher"
    (plain / "sub").mkdir(parents=True)
    (plain / "weights.bin").write_bytes(os.urandom(3 * PLAIN_BS))
    (plain / "sub" / "config.json").write_bytes(b'{"a": 1}\n')
    (plain / ("long" * 50)).write_bytes(b"long name\n")  # 200 bytes: a hashed long name
    encrypt(plain, cipher)
    return {"plain": plain, "cipher": cipher, "tmp": tmp_path}


def backing(cipher: Path, size: int) -> Path:
    """The one ciphertext file of a plaintext size (names are encrypted)."""
    want = HEADER + size + 32 * -(-size // PLAIN_BS)
    found = [p for p in cipher.rglob("*") if p.is_file() and p.stat().st_size == want]
    assert len(found) == 1, found
    return found[0]


def set_conf(cipher: Path, **changes) -> None:
    conf = cipher / "gocryptfs.conf"
    obj = json.loads(conf.read_text())
    for key, value in changes.items():
        if key.startswith("scrypt_"):
            obj["ScryptObject"][key[len("scrypt_"):]] = value
        else:
            obj[key] = value
    os.chmod(conf, 0o600)
    conf.write_text(json.dumps(obj))


# 5. a FIFO never hangs anything -------------------------------------------------------------
def test_fifo_as_gocryptfs_conf_is_refused_not_waited_on(tree):
    conf = tree["cipher"] / "gocryptfs.conf"
    conf.unlink()
    os.mkfifo(conf)
    for args in (["info", tree["cipher"]], ["decrypt", "--passfile", PASSWORD_FILE, tree["cipher"],
                                             tree["tmp"] / "out"]):
        r = run_cli(*args, timeout=HANG)
        assert r.returncode == exitcodes.CONFIG, r.stderr
        assert b"Traceback" not in r.stderr


def test_fifo_as_a_dir_iv_is_refused_not_waited_on(tree):
    subdirs = [p for p in tree["cipher"].iterdir() if p.is_dir()]
    assert len(subdirs) == 1
    diriv = subdirs[0] / "gocryptfs.diriv"
    diriv.unlink()
    os.mkfifo(diriv)
    r = run_cli("fsck", "--passfile", PASSWORD_FILE, tree["cipher"], timeout=HANG)
    assert r.returncode == exitcodes.INTEGRITY, r.stderr
    assert b"gocryptfs.diriv" in r.stdout and b"not a regular file" in r.stdout
    r = run_cli("decrypt", "--passfile", PASSWORD_FILE, tree["cipher"], tree["tmp"] / "out", timeout=HANG)
    assert r.returncode == exitcodes.INTEGRITY, r.stderr


def test_fifo_as_a_long_name_sidecar_is_reported_not_waited_on(tree):
    sidecars = list(tree["cipher"].glob("gocryptfs.longname.*.name"))
    assert len(sidecars) == 1
    sidecars[0].unlink()
    os.mkfifo(sidecars[0])
    r = run_cli("fsck", "--passfile", PASSWORD_FILE, tree["cipher"], timeout=HANG)
    assert r.returncode == exitcodes.INTEGRITY, r.stderr
    assert b"sidecar unreadable" in r.stdout


def test_fifo_in_place_of_a_file_is_never_served(tree):
    victim = backing(tree["cipher"], 3 * PLAIN_BS)
    victim.unlink()
    os.mkfifo(victim)
    with cryptfs_mount(tree["cipher"], tree["tmp"] / "m") as m:
        assert "weights.bin" not in os.listdir(m)  # special files are invisible
        with pytest.raises(FileNotFoundError):
            os.stat(m / "weights.bin")
        assert (m / "sub" / "config.json").read_bytes() == b'{"a": 1}\n'


# 7, 8. a hostile gocryptfs.conf: clear errors, bounded cost, no traceback ------------------------
@pytest.mark.parametrize("changes", [
    {"scrypt_N": 1 << 26},  # 64 GiB at r = 8
    {"scrypt_R": 1 << 19},  # 64 GiB at N = 2^16... and MemoryError before
    {"scrypt_P": 1 << 17},  # minutes of CPU at N = 2^16
    {"scrypt_N": 1 << 21},  # just above the 1 GiB cap
], ids=["N", "R", "P", "N-just-above"])
def test_scrypt_costs_above_the_cap_are_refused_fast(tree, changes):
    set_conf(tree["cipher"], **changes)
    started = time.monotonic()
    r = run_cli("decrypt", "--passfile", PASSWORD_FILE, tree["cipher"], tree["tmp"] / "out", timeout=HANG)
    assert r.returncode == exitcodes.CONFIG, r.stderr
    assert b"scrypt" in r.stderr and b"refused" in r.stderr and b"Traceback" not in r.stderr
    assert time.monotonic() - started < 20
    assert not (tree["tmp"] / "out").exists()


def test_the_cap_itself_is_accepted(tree):
    """N = 2^20, r = 8 is exactly 1 GiB: allowed (and refused by the password check, not the cap)."""
    set_conf(tree["cipher"], scrypt_N=1 << 20)
    r = run_cli("info", tree["cipher"], timeout=HANG)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000,
                                  b'{"a":' * 50_000 + b"1" + b"}" * 50_000])
def test_deeply_nested_conf_is_a_config_error(tree, body):
    conf = tree["cipher"] / "gocryptfs.conf"
    os.chmod(conf, 0o600)
    conf.write_bytes(body)
    r = run_cli("info", tree["cipher"], timeout=HANG)
    assert r.returncode == exitcodes.CONFIG, r.stderr
    assert b"Traceback" not in r.stderr and b"nested too deeply" in r.stderr


def test_encrypt_never_writes_what_readers_refuse(tmp_path):
    (tmp_path / "p").mkdir()
    r = run_cli("encrypt", "--scryptn", "21", "--passfile", PASSWORD_FILE, tmp_path / "p", tmp_path / "c")
    assert r.returncode == exitcodes.USAGE and b"between 10 and 20" in r.stderr


# 2. an all-zero block: a hole for gocryptfs, tampering for a model ------------------------------
def zero_block(path: Path, block_no: int) -> None:
    with open(path, "r+b") as f:
        f.seek(HEADER + block_no * CIPHER_BS)
        f.write(bytes(CIPHER_BS))


def test_no_holes_refuses_a_zeroed_block(tree):
    zero_block(backing(tree["cipher"], 3 * PLAIN_BS), 1)
    want = (tree["plain"] / "weights.bin").read_bytes()
    r = run_cli("decrypt", "--passfile", PASSWORD_FILE, tree["cipher"], tree["tmp"] / "holes")
    assert r.returncode == 0, r.stderr  # gocryptfs' rule, still the default of decrypt
    assert (tree["tmp"] / "holes" / "weights.bin").read_bytes() == want[:PLAIN_BS] + bytes(PLAIN_BS) + \
        want[2 * PLAIN_BS:]
    r = run_cli("decrypt", "--no-holes", "--passfile", PASSWORD_FILE, tree["cipher"], tree["tmp"] / "out")
    assert r.returncode == exitcodes.INTEGRITY, r.stderr
    assert b"block 1 of /weights.bin" in r.stderr and b"all-zero block" in r.stderr
    assert not (tree["tmp"] / "out").exists()
    with cryptfs_mount(tree["cipher"], tree["tmp"] / "m", "--no-holes") as m:
        fd = os.open(m / "weights.bin", os.O_RDONLY)
        try:
            assert os.pread(fd, PLAIN_BS, 0) == want[:PLAIN_BS]
            with pytest.raises(OSError) as e:
                os.pread(fd, PLAIN_BS, PLAIN_BS)
            assert e.value.errno == errno.EIO
            assert os.pread(fd, PLAIN_BS, 2 * PLAIN_BS) == want[2 * PLAIN_BS:]
        finally:
            os.close(fd)


def test_fsck_warns_about_zero_blocks_and_headerless_files(tree):
    zero_block(backing(tree["cipher"], 3 * PLAIN_BS), 2)
    os.truncate(backing(tree["cipher"], 9), 10)  # sub/config.json: 10 bytes, no header
    r = run_cli("fsck", "--passfile", PASSWORD_FILE, tree["cipher"])
    assert r.returncode == 0, (r.stdout, r.stderr)  # gocryptfs accepts both: warnings only
    warnings = [ln for ln in r.stdout.decode().splitlines() if ln.startswith("fsck: warning: ")]
    assert len(warnings) == 2, warnings
    assert any("/weights.bin: block 2 is all zeros" in w for w in warnings)
    assert any("/sub/config.json" in w and "no header" in w for w in warnings)
    assert "no problems found, 2 warnings" in r.stdout.decode()


def test_fsck_counts_one_problem_in_the_singular(tree):
    victim = backing(tree["cipher"], 3 * PLAIN_BS)
    data = bytearray(victim.read_bytes())
    data[HEADER + 100] ^= 1
    victim.write_bytes(bytes(data))
    r = run_cli("fsck", "--passfile", PASSWORD_FILE, tree["cipher"])
    assert r.returncode == exitcodes.INTEGRITY
    assert b": 1 problem found" in r.stderr and b"problems" not in r.stderr


# 1. FeatureFlags are not authenticated: PlaintextNames lets the attacker place a symlink ----------
def test_plaintextnames_flag_rewrite_cannot_serve_a_file_of_the_machine(tmp_path):
    plain, cipher = tmp_path / "plain", tmp_path / "cipher"
    plain.mkdir()
    (plain / "model.bin").write_bytes(b"weights\n")
    encrypt(plain, cipher, "--plaintextnames")
    os.symlink("/etc/hostname", cipher / "config.json")  # the attacker's addition
    os.symlink("../../../../etc/passwd", cipher / "tokenizer.json")
    r = run_cli("decrypt", "--passfile", PASSWORD_FILE, cipher, tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["model.bin"]  # never written
    assert b"config.json: skipped" in r.stderr and b"leaves the tree" in r.stderr
    r = run_cli("fsck", "--passfile", PASSWORD_FILE, cipher)
    assert r.returncode == exitcodes.INTEGRITY
    assert b"/config.json: symlink to /etc/hostname leaves the tree" in r.stdout
    assert b"/tokenizer.json" in r.stdout
    with cryptfs_mount(cipher, tmp_path / "m") as m:
        for name in ("config.json", "tokenizer.json"):
            with pytest.raises(OSError) as e:
                (m / name).read_bytes()
            assert e.value.errno == errno.EIO
        assert (m / "model.bin").read_bytes() == b"weights\n"


# 19. a password saved with Windows line endings ------------------------------------------------
def test_a_password_ending_in_cr_gets_a_hint(tree):
    crlf = tree["tmp"] / "pw-crlf"
    crlf.write_bytes(b"test\r\n")
    r = run_cli("decrypt", "--passfile", crlf, tree["cipher"], tree["tmp"] / "out")
    assert r.returncode == exitcodes.PASSWORD_INCORRECT
    assert b"carriage return" in r.stderr


# 11. the key pipe is closed once read ----------------------------------------------------------
def test_passfile_from_an_inherited_pipe_is_closed_after_reading():
    r, w = os.pipe()
    os.write(w, b"secret\n")
    os.close(w)
    assert read_passfile(f"/dev/fd/{r}") == b"secret"
    with pytest.raises(OSError) as e:
        os.fstat(r)
    assert e.value.errno == errno.EBADF


def test_close_passed_fd_leaves_other_paths_alone(tmp_path):
    r, w = os.pipe()
    try:
        close_passed_fd(str(tmp_path / "file"))
        close_passed_fd(f"/dev/fd/{r}x")
        os.fstat(r)  # still open
    finally:
        os.close(r)
        os.close(w)
