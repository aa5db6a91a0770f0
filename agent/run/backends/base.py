"""The interface every ENCRYPTION_METHOD implements, so that ``run``, the mount and ``check`` never
ask which method they serve.

A backend knows its format's tool (``python -m cryptfs`` or ``python -m sam``), how the key
from the broker becomes the bytes that tool reads, what the tool's exit codes mean for the
operator, how to put the plaintext into RAM without FUSE, what can be checked before the key
is fetched, and the model's identity (:meth:`MountBackend.model_digest`): the digest ``run``
measures and then serves, and that ``agent reference`` prints for the owner to register. It
uses the other packages' public modules only, never their command lines' internals.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from cryptfs.core import exitcodes as core_exitcodes

from ...errors import AgentError, ConfigurationError, MountFailed, WrongKey

if TYPE_CHECKING:
    from ..config import RunConfig

__all__ = ["COMMON_REASONS", "MountBackend"]

# What the operator should check when a mount child exits with a code both formats share (for
# MOUNTPOINT, mount_failure adds what this container lacks for FUSE: agent.run.fuse.fuse_hint).
COMMON_REASONS = {
    core_exitcodes.MOUNTPOINT: "MODEL_MOUNT_PATH cannot be used (it must be an empty directory, not a mount "
                               "point), or FUSE is unavailable",
}


class MountBackend(ABC):
    """One ENCRYPTION_METHOD for one run configuration."""

    name: ClassVar[str]  # the ENCRYPTION_METHOD value
    tool: ClassVar[str]  # the package whose ``mount`` serves the model (``python -m TOOL mount``)
    key_flag: ClassVar[str]  # the tool's option that reads the key from a file (an inherited pipe here)
    wrong_key_code: ClassVar[int]  # the tool's exit code for a key that does not unlock the model
    reasons: ClassVar[dict[int, str]]  # the tool's other exit codes -> what to check
    check_label: ClassVar[str]  # how ``agent check`` names the cipher directory

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg

    @classmethod
    def check_expected_digest(cls, value: str) -> str:
        """EXPECTED_MODEL_DIGEST in its canonical form; refused by a method that cannot pin.

        Refused rather than ignored: an operator who pinned a digest believes the model is pinned.
        """
        raise ConfigurationError(f"EXPECTED_MODEL_DIGEST is set, but ENCRYPTION_METHOD {cls.name} cannot pin "
                                 "a model: unset it")

    @property
    @abstractmethod
    def pin(self) -> str | None:
        """The digest the model must have; once :meth:`prepare` ran, the one it found (and logged),
        which ``run`` measures and the mount or copy then enforces."""

    @abstractmethod
    def model_digest(self) -> str:
        """The model's identity (``sha256:...``), computed without the key from the ciphertext alone.

        One function for the instance and the owner (``agent reference``), so that what is
        registered is byte for byte what is measured.
        """

    @abstractmethod
    def prepare(self) -> dict[str, object]:
        """Open and check what can be checked before the key is fetched, find the model's digest
        (:attr:`pin` from then on); extra fields for the log.

        A model that would be refused anyway must never cost a key release.
        """

    def check_kind(self) -> None:
        """Refuse a directory of the other method, or a plaintext model, naming the variable to change."""
        from .detect import mismatch

        problem = mismatch(self.cfg.cipher_dir, self.name)
        if problem:
            raise ConfigurationError(problem)

    def mount_command(self, key_fd: int, note_fd: int) -> list[str]:
        """The mount child's argv: the key comes from ``key_fd``, readiness goes to ``note_fd``.

        Never the key itself: argv is readable by every process of the machine.
        """
        cfg = self.cfg
        return [sys.executable, "-m", self.tool, "mount", "--fg", "--allow_other", self.key_flag,
                f"/dev/fd/{key_fd}", "--notify-fd", str(note_fd), *self.mount_options(),
                *self.warmup_options(), cfg.cipher_dir, cfg.mount_path]

    def warmup_options(self) -> list[str]:
        """MODEL_WARMUP: decrypt ahead through the mount while the model server starts (opt-in).

        The mount is ready (and the command started) before the pass begins; foreground reads
        always go first, and the pass stops at its memory budget.
        """
        warmup = getattr(self.cfg, "warmup", None)
        if not warmup:
            return []
        return ["--warmup"] if warmup == "on" else ["--warmup-budget", warmup]

    def mount_options(self) -> list[str]:
        """Options of this method's mount besides the key and readiness ones."""
        return []

    @abstractmethod
    def key_bytes(self, secret: bytearray) -> bytes:
        """What the tool reads from the key pipe, given the secret the broker released."""

    def mount_failure(self, code: int) -> AgentError:
        """The agent error for the mount child's exit ``code``: the message says what to check."""
        reason = self.reasons.get(code) or COMMON_REASONS.get(code, "see the messages above")
        if code == core_exitcodes.MOUNTPOINT and code not in self.reasons:
            from ..fuse import fuse_hint

            reason = f"{reason}: {fuse_hint()}"
        error = WrongKey if code == self.wrong_key_code else MountFailed
        return error(f"mount failed ({self.tool} exit {code}): {reason}", code)

    @abstractmethod
    def copy_into(self, secret: bytearray, target: str) -> None:
        """MOUNT_MODE=copy: the whole plaintext into ``target`` (RAM-backed, checked by the caller)."""

    @abstractmethod
    def describe(self) -> str:
        """``agent check``'s line about the cipher directory, without the key; AgentError if unusable."""
