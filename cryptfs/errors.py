"""One exception class per failure kind of the gocryptfs engine; each carries its exit code.

They derive from the core kinds (:mod:`cryptfs.core.errors`), so the one top-level handler
prints ``str(exc)`` and exits with ``exc.exit_code``, and the FUSE adapter answers EIO for
any integrity failure. Messages never contain key material.
"""

from __future__ import annotations

from . import exitcodes
from .core import errors as core


class CryptfsError(core.Failure):
    """Base class: a failure the user can act on."""

    exit_code = exitcodes.ERROR


class UsageError(core.UsageError, CryptfsError):
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


class DigestMismatch(CryptfsError):
    """The tree is not the one the caller pinned: refused before any key material is read."""

    exit_code = exitcodes.DIGEST_MISMATCH


class MountPointError(core.MountPointError, CryptfsError):
    exit_code = exitcodes.MOUNTPOINT


class IntegrityError(core.IntegrityError, CryptfsError):
    """Authentication failed somewhere in the ciphertext; nothing decrypted from it is trusted."""

    exit_code = exitcodes.INTEGRITY


class BlockError(core.ChunkError, IntegrityError):
    """A content block (or the header) failed to authenticate or is malformed."""

    unit = "block"
    subject = "the ciphertext"


class BadNameError(IntegrityError):
    """An encrypted file name (or a dir IV / long-name sidecar) cannot be decrypted."""


class TreeChangedError(IntegrityError):
    """A pinned tree's entry no longer matches its measurement (swapped, truncated, re-moded).

    An IntegrityError, so the mount answers EIO (and logs it) and decrypt exits 26.
    """
