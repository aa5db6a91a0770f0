"""Password and master-key input, with gocryptfs' semantics (format spec §2.3, readpassword/*.go)."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from cryptfs import exitcodes
from cryptfs.errors import PasswordReadError, UsageError
from cryptfs.password import (
    KeySource,
    parse_masterkey,
    read_passfile,
    read_passfiles,
    read_stdin_password,
    run_extpass,
)

V13_DASHED = "fd890dab-86bf61cf-ec5ad460-ad3ed01f-9c52d546-2a31783d-a56b088d-3d05232e"
V13_KEY = bytes.fromhex(V13_DASHED.replace("-", ""))

needs_printf = pytest.mark.skipif(not shutil.which("printf"), reason="no printf program")


def _file(tmp_path, data: bytes, name: str = "pw") -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


# --- passfile -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"abc\r\n", b"abc\r"),  # the CR is kept (VERIFIED against gocryptfs)
        (b"mypassword\n", b"mypassword"),
        (b"mypassword", b"mypassword"),  # no trailing newline
        (b"mypassword\ngarbage\nmore\n", b"mypassword"),  # trailing lines ignored
        (b"  pass word\t \n", b"  pass word\t "),  # no trimming
        (b"\xff\xfe\x80pw\n", b"\xff\xfe\x80pw"),  # opaque bytes
        ("pässwörd\n".encode(), "pässwörd".encode()),
        (b"a" * 2048 + b"\n", b"a" * 2048),  # the maximum
        (b"a" * 2048, b"a" * 2048),
        (b"a" * 2048 + b"\nlots of garbage" * 100, b"a" * 2048),
    ],
)
def test_passfile_first_line(tmp_path, data, expected):
    path = _file(tmp_path, data)
    assert read_passfile(path) == expected
    assert read_passfiles([path]) == expected


def test_passfile_trailing_garbage_warns(tmp_path, capsys):
    assert read_passfile(_file(tmp_path, b"pw\ngarbage\n")) == b"pw"
    assert "ignoring" in capsys.readouterr().err


@pytest.mark.parametrize("data", [b"", b"\n", b"\ngarbage\n", b"\n\n"])
def test_passfile_empty_first_line_is_an_error(tmp_path, data):
    with pytest.raises(PasswordReadError) as ei:
        read_passfile(_file(tmp_path, data))
    assert ei.value.exit_code == exitcodes.PASSWORD_READ == 9


@pytest.mark.parametrize("data", [b"a" * 2049, b"a" * 2049 + b"\n", b"a" * 2050, b"a" * 5000 + b"\n"])
def test_passfile_longer_than_2048_is_an_error(tmp_path, data):
    with pytest.raises(PasswordReadError):
        read_passfile(_file(tmp_path, data))


def test_passfile_missing(tmp_path):
    with pytest.raises(PasswordReadError):
        read_passfile(str(tmp_path / "does-not-exist"))


def test_several_passfiles_are_concatenated(tmp_path):
    p1 = _file(tmp_path, b"p1\n", "a")
    p2 = _file(tmp_path, b"x", "b")
    p3 = _file(tmp_path, b"yz\r\ngarbage", "c")
    assert read_passfiles([p1, p2]) == b"p1x"
    assert read_passfiles([p2, p1]) == b"xp1"
    assert read_passfiles([p1, p2, p3, p1]) == b"p1xyz\rp1"
    assert KeySource(passfiles=[p1, p2]).password() == b"p1x"


def test_several_passfiles_one_empty_is_an_error(tmp_path):
    p1 = _file(tmp_path, b"p1\n", "a")
    empty = _file(tmp_path, b"\n", "b")
    with pytest.raises(PasswordReadError):
        read_passfiles([p1, empty])


# --- extpass ------------------------------------------------------------------------------------
@needs_printf
def test_extpass_given_once_is_split_on_spaces():
    # "printf %s| a b" -> argv ["printf", "%s|", "a", "b"] -> "a|b|"
    assert run_extpass(["printf %s| a b"]) == b"a|b|"
    assert KeySource(extpass=["printf %s| a b"]).password() == b"a|b|"


@needs_printf
def test_extpass_given_several_times_each_value_is_one_argument():
    assert run_extpass(["printf", "%s|", "my pass"]) == b"my pass|"
    assert run_extpass(["printf", "%s", "  spaced  out  "]) == b"  spaced  out  "
    assert KeySource(extpass=["printf", "%s\n", "my pass"]).password() == b"my pass"


@needs_printf
def test_extpass_once_consecutive_spaces_give_empty_arguments():
    # gocryptfs: ["printf", "%s|", "a", "", "b"] -> "a||b|"
    assert run_extpass(["printf %s| a  b"]) == b"a||b|"


@needs_printf
@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("line1\\nline2\\n", b"line1"),  # only the first line
        ("pw\\r\\n", b"pw\r"),  # CR kept
        ("pw", b"pw"),  # no newline at all
        (" pw \\n", b" pw "),  # no trimming
    ],
)
def test_extpass_first_line(fmt, expected):
    assert run_extpass(["printf", fmt]) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["false"],  # non-zero exit status
        ["true"],  # empty output
        ["printf", "\\nsecond line"],  # empty first line
        ["/nonexistent/program/for/cryptfs/tests"],  # cannot run
    ],
)
def test_extpass_failures(argv):
    if not shutil.which(argv[0]) and not argv[0].startswith("/nonexistent"):
        pytest.skip(f"no {argv[0]} program")
    with pytest.raises(PasswordReadError) as ei:
        run_extpass(argv)
    assert ei.value.exit_code == 9


@needs_printf
def test_extpass_longer_than_2048_is_an_error():
    with pytest.raises(PasswordReadError):
        run_extpass(["printf", "a" * 2049])
    assert run_extpass(["printf", "a" * 2048]) == b"a" * 2048


def test_extpass_empty_command():
    with pytest.raises((UsageError, PasswordReadError)):
        run_extpass([""])


# --- stdin (not a terminal) -----------------------------------------------------------------------
@pytest.fixture
def stdin_pipe(monkeypatch):
    """Replace sys.stdin with the read end of a pipe; return a function that writes to it."""
    r, w = os.pipe()
    reader = os.fdopen(r, "r")
    monkeypatch.setattr(sys, "stdin", reader)

    def feed(data: bytes) -> int:
        os.write(w, data)
        os.close(w)
        return r

    yield feed
    reader.close()


def test_stdin_reads_up_to_newline_and_no_further(stdin_pipe):
    fd = stdin_pipe(b"pw\r\nrest of input")
    assert read_stdin_password() == b"pw\r"
    assert os.read(fd, 100) == b"rest of input"  # byte by byte: nothing after the line consumed


def test_stdin_eof_without_newline(stdin_pipe):
    stdin_pipe(b"secret")
    assert read_stdin_password() == b"secret"


@pytest.mark.parametrize("data", [b"", b"\n", b"\nsecond"])
def test_stdin_empty_is_an_error(stdin_pipe, data):
    stdin_pipe(data)
    with pytest.raises(PasswordReadError):
        read_stdin_password()


def test_stdin_too_long_is_an_error(stdin_pipe):
    stdin_pipe(b"a" * 2049 + b"\n")
    with pytest.raises(PasswordReadError):
        read_stdin_password()


# --- master key ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        V13_DASHED,
        V13_DASHED.replace("-", ""),
        V13_DASHED.upper(),
        V13_DASHED.replace("-", "").upper(),
        "-".join(V13_DASHED.replace("-", "")[i : i + 4] for i in range(0, 64, 4)),
        "fd89-0dab86bf61cfec5ad460ad3ed01f9c52d5462a31783da56b088d3d05232e",
    ],
)
def test_parse_masterkey_accepts(text):
    assert parse_masterkey(text) == V13_KEY


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-",
        V13_DASHED[:-2],  # 31 bytes
        V13_DASHED + "00",  # 33 bytes
        V13_DASHED.replace("-", "") * 2,  # 64 bytes
        V13_DASHED[:-1],  # odd number of digits
        V13_DASHED[:-1] + "g",  # not hex
        "zz" * 32,
        "0x" + "00" * 31,
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",  # base64 of 32 bytes
    ],
)
def test_parse_masterkey_rejects(text):
    with pytest.raises(UsageError) as ei:
        parse_masterkey(text)
    assert ei.value.exit_code == exitcodes.USAGE == 2


def test_parse_masterkey_from_stdin(stdin_pipe):
    stdin_pipe(V13_DASHED.encode() + b"\n")
    assert parse_masterkey("stdin") == V13_KEY


# --- KeySource ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"passfiles": ["a"], "extpass": ["printf x"]},
        {"passfiles": ["a"], "masterkey": V13_DASHED},
        {"extpass": ["printf x"], "masterkey": V13_DASHED},
        {"passfiles": ["a", "b"], "extpass": ["printf", "x"], "masterkey": V13_DASHED},
    ],
)
def test_keysource_refuses_two_sources(kwargs):
    with pytest.raises(UsageError) as ei:
        KeySource(**kwargs)
    assert ei.value.exit_code == 2


def test_keysource_single_sources(tmp_path):
    assert KeySource(masterkey=V13_DASHED).master_key() == V13_KEY
    pf = _file(tmp_path, b"test\n")
    src = KeySource(passfiles=[pf])
    assert src.master_key() is None
    assert src.password() == b"test"
    assert KeySource().master_key() is None


def test_keysource_reads_lazily(tmp_path):
    """Constructing a KeySource does not read the file (it may not exist yet)."""
    path = tmp_path / "later"
    src = KeySource(passfiles=[str(path)])
    path.write_bytes(b"late\n")
    assert src.password() == b"late"
