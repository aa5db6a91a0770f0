"""One exception class per failure kind, each with its exit code and a message saying what to do.

They derive from the cryptfs classes of the same kind, so the shared FUSE adapter maps them
to errno the same way (a BlockError is EIO) and one handler serves both command lines.
"""

from __future__ import annotations

from cryptfs import errors as cx

from . import exitcodes


class SamError(cx.CryptfsError):
    exit_code = exitcodes.ERROR


class UsageError(cx.UsageError, SamError):
    exit_code = exitcodes.USAGE


class PackageError(cx.CipherDirError, SamError):
    """The package directory (or the model directory to pack) cannot be used."""

    exit_code = exitcodes.PACKAGE


class OutputError(cx.OutputError, SamError):
    exit_code = exitcodes.OUTPUT


class ManifestError(cx.ConfigError, SamError):
    """The manifest is missing, malformed or of a format version we do not read."""

    exit_code = exitcodes.MANIFEST


class KeyReadError(cx.PasswordReadError, SamError):
    exit_code = exitcodes.KEY_READ


class WrongKeyError(cx.WrongPasswordError, SamError):
    exit_code = exitcodes.WRONG_KEY


class DigestMismatch(SamError):
    """The package is authentic but not the one the caller pinned (a rollback or a swap)."""

    exit_code = exitcodes.DIGEST_MISMATCH


class IntegrityError(cx.IntegrityError, SamError):
    exit_code = exitcodes.INTEGRITY


class ChunkError(cx.BlockError, SamError):
    """A chunk (or a file's header) failed to authenticate: never returned as data."""

    exit_code = exitcodes.INTEGRITY

    def _message(self) -> str:
        where = "header" if self.block_no is None else f"chunk {self.block_no}"
        of = f" of {self.path}" if self.path else ""
        return f"{where}{of}: {self.reason} (the package is corrupt or was tampered with)"

    def with_path(self, path: str) -> ChunkError:
        return ChunkError(self.block_no, self.reason, path)

