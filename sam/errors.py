"""One exception class per failure kind, each with its exit code and a message saying what to do.

They derive from the core kinds (:mod:`cryptfs.core.errors`): the shared FUSE adapter maps
any integrity failure to EIO, and the one top-level handler serves this command line too.
"""

from __future__ import annotations

from cryptfs.core import errors as core

from . import exitcodes


class SamError(core.Failure):
    exit_code = exitcodes.ERROR


class UsageError(core.UsageError, SamError):
    exit_code = exitcodes.USAGE


class PackageError(SamError):
    """The package directory (or the model directory to pack) cannot be used."""

    exit_code = exitcodes.PACKAGE


class OutputError(SamError):
    exit_code = exitcodes.OUTPUT


class ManifestError(SamError):
    """The manifest is missing, malformed or of a format version we do not read."""

    exit_code = exitcodes.MANIFEST


class KeyReadError(SamError):
    exit_code = exitcodes.KEY_READ


class WrongKeyError(SamError):
    exit_code = exitcodes.WRONG_KEY


class DigestMismatch(SamError):
    """The package is authentic but not the one the caller pinned (a rollback or a swap)."""

    exit_code = exitcodes.DIGEST_MISMATCH


class IntegrityError(core.IntegrityError, SamError):
    exit_code = exitcodes.INTEGRITY


class ChunkError(core.ChunkError, IntegrityError):
    """A chunk (or a file's header) failed to authenticate: never returned as data."""

    unit = "chunk"
    subject = "the package"
