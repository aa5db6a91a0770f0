"""Reading the password or master key exactly as gocryptfs does.

- ``--passfile F`` (repeatable): the first line of each file, ``\\r`` kept, concatenated.
- ``--extpass CMD`` (repeatable): given once it is split on spaces; given several times each
  value is one argument. Its stdout up to the first newline is the password.
- stdin when it is not a terminal: bytes up to the first newline or EOF.
- ``--masterkey HEX`` (dashes ignored) or ``--masterkey stdin``.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import sys

from .core.files import close_passed_fd
from .errors import PasswordReadError, UsageError

MAX_PASSWORD = 2048
MASTER_KEY_LEN = 32


def _first_line(data: bytes, source: str) -> bytes:
    line, sep, rest = data.partition(b"\n")
    if sep and rest.strip(b"\n"):
        print(f"cryptfs: warning: {source}: ignoring everything after the first line", file=sys.stderr)
    if not line:
        raise PasswordReadError(f"{source}: the password (first line) is empty")
    if len(line) > MAX_PASSWORD:
        raise PasswordReadError(f"{source}: the password is longer than {MAX_PASSWORD} bytes")
    return line


def read_passfile(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PASSWORD + 2)
    except OSError as e:
        raise PasswordReadError(f"cannot read passfile {path}: {e.strerror}") from None
    finally:
        close_passed_fd(path)  # agent run hands the key in through an inherited pipe
    return _first_line(data, f"passfile {path}")


def read_passfiles(paths: list[str]) -> bytes:
    return b"".join(read_passfile(p) for p in paths)


def _read_line_from_fd(fd: int, source: str) -> bytes:
    """Read byte by byte up to newline or EOF, so nothing after the line is consumed."""
    buf = bytearray()
    while len(buf) <= MAX_PASSWORD:
        c = os.read(fd, 1)
        if not c or c == b"\n":
            break
        buf += c
    return _first_line(bytes(buf), source)


def run_extpass(args: list[str]) -> bytes:
    argv = args[0].split(" ") if len(args) == 1 else list(args)  # as gocryptfs: empty parts kept
    if not argv or not argv[0]:
        raise UsageError("--extpass: empty command")
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, check=False)
    except OSError as e:
        raise PasswordReadError(f"--extpass: cannot run {argv[0]!r}: {e.strerror}") from None
    if proc.returncode != 0:
        raise PasswordReadError(f"--extpass: {argv[0]!r} exited with status {proc.returncode}")
    line = proc.stdout.split(b"\n", 1)[0]
    if not line:
        raise PasswordReadError("--extpass: the program printed an empty password")
    if len(line) > MAX_PASSWORD:
        raise PasswordReadError(f"--extpass: the password is longer than {MAX_PASSWORD} bytes")
    return line


def read_stdin_password(confirm: bool = False) -> bytes:
    if sys.stdin is None:
        raise PasswordReadError("no password source: give --passfile, --extpass or --masterkey")
    if sys.stdin.isatty():
        pw = getpass.getpass("Password: ").encode("utf-8", "surrogateescape")
        if not pw:
            raise PasswordReadError("the password is empty")
        if confirm and getpass.getpass("Repeat: ").encode("utf-8", "surrogateescape") != pw:
            raise PasswordReadError("the passwords do not match")
        return pw
    return _read_line_from_fd(sys.stdin.fileno(), "stdin")


def parse_masterkey(text: str) -> bytes:
    """A 32-byte master key from hex, dashes and spaces ignored (gocryptfs' printed form)."""
    if text == "stdin":
        text = _read_line_from_fd(sys.stdin.fileno(), "stdin (master key)").decode("ascii", "replace")
    clean = text.replace("-", "").replace(" ", "").strip()
    try:
        key = bytes.fromhex(clean)
    except ValueError:
        raise UsageError("--masterkey: not a hex string (expected 64 hex digits, dashes allowed)") from None
    if len(key) != MASTER_KEY_LEN:
        raise UsageError(f"--masterkey: {len(key)} bytes given, a master key has 32 (64 hex digits)")
    return key


class KeySource:
    """Where the key comes from, as given on the command line; read only when needed."""

    def __init__(self, passfiles: list[str] | None = None, extpass: list[str] | None = None,
                 masterkey: str | None = None):
        self.passfiles = list(passfiles or [])
        self.extpass = list(extpass or [])
        self.masterkey = masterkey
        given = [n for n, v in (("--passfile", self.passfiles), ("--extpass", self.extpass),
                                ("--masterkey", self.masterkey)) if v]
        if len(given) > 1:
            raise UsageError(f"{' and '.join(given)} cannot be combined: give one key source")

    def password(self, confirm: bool = False) -> bytes:
        if self.passfiles:
            return read_passfiles(self.passfiles)
        if self.extpass:
            return run_extpass(self.extpass)
        return read_stdin_password(confirm)

    def master_key(self) -> bytes | None:
        return parse_masterkey(self.masterkey) if self.masterkey else None
