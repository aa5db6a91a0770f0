"""The base failures every package shares; each class carries its exit code.

cryptfs, sam and agent subclass these (one class per failure kind, the message saying what to
do). The one top-level handler (:func:`cryptfs.core.argv.run_main`) and the FUSE adapter only
need the kinds defined here: an :class:`IntegrityError` is EIO at the mount, anything else a
clear message and ``exit_code``. Messages never contain key material.
"""

from __future__ import annotations

from . import exitcodes


class Failure(Exception):
    """Base class: a failure the user can act on."""

    exit_code = exitcodes.ERROR


class UsageError(Failure):
    exit_code = exitcodes.USAGE


class MountPointError(Failure):
    """The mount point cannot be used, or FUSE is not available here."""

    exit_code = exitcodes.MOUNTPOINT


class IntegrityError(Failure):
    """Authentication failed somewhere; nothing decrypted from it is trusted."""

    exit_code = exitcodes.INTEGRITY


class ChunkError(IntegrityError):
    """A chunk (or a file's header) failed to authenticate or is malformed: never returned as data.

    Formats subclass it to name their unit ("block", "chunk") and what was tampered with.
    """

    unit = "block"
    subject = "the ciphertext"

    def __init__(self, block_no: int | None, reason: str, path: str | None = None):
        self.block_no = block_no
        self.reason = reason
        self.path = path
        super().__init__(self._message())

    def _message(self) -> str:
        where = "header" if self.block_no is None else f"{self.unit} {self.block_no}"
        of = f" of {self.path}" if self.path else ""
        return f"{where}{of}: {self.reason} ({self.subject} is corrupt or was tampered with)"

    def with_path(self, path: str) -> ChunkError:
        """The same failure, naming the file it happened in."""
        return type(self)(self.block_no, self.reason, path)
