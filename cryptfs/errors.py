"""One exception class per failure kind; each carries its exit code and says what to do.

The CLI has a single handler that prints ``str(exc)`` and exits with ``exc.exit_code``.
Messages never contain key material.
"""

from __future__ import annotations

from . import exitcodes


class CryptfsError(Exception):
    """Base class: a failure the user can act on."""

    exit_code = exitcodes.ERROR


class UsageError(CryptfsError):
    exit_code = exitcodes.USAGE


class CipherDirError(CryptfsError):
    """The cipher (or plain input) directory cannot be used."""

    exit_code = exitcodes.CIPHERDIR


class OutputError(CryptfsError):
    """The output directory cannot be used."""

    exit_code = exitcodes.OUTPUT


class ConfigError(CryptfsError):
    """gocryptfs.conf is missing, malformed, or asks for something we refuse."""

    exit_code = exitcodes.CONFIG


class PasswordReadError(CryptfsError):
    exit_code = exitcodes.PASSWORD_READ


class WrongPasswordError(CryptfsError):
    exit_code = exitcodes.PASSWORD_INCORRECT


class MountPointError(CryptfsError):
    exit_code = exitcodes.MOUNTPOINT


class IntegrityError(CryptfsError):
    """Authentication failed somewhere in the ciphertext; nothing decrypted from it is trusted."""

    exit_code = exitcodes.INTEGRITY


class BlockError(IntegrityError):
    """A content block (or the header) failed to authenticate or is malformed."""

    def __init__(self, block_no: int | None, reason: str, path: str | None = None):
        self.block_no = block_no
        self.reason = reason
        self.path = path
        super().__init__(self._message())

    def _message(self) -> str:
        where = "header" if self.block_no is None else f"block {self.block_no}"
        of = f" of {self.path}" if self.path else ""
        return f"{where}{of}: {self.reason} (the ciphertext is corrupt or was tampered with)"

    def with_path(self, path: str) -> BlockError:
        return BlockError(self.block_no, self.reason, path)


class BadNameError(IntegrityError):
    """An encrypted file name (or a dir IV / long-name sidecar) cannot be decrypted."""
