"""ENCRYPTION_METHOD=sam: a Sam package, served by ``python -m sam mount``.

The KMS secret is the plaintext key given to the packer, byte for byte (one trailing newline
is tolerated, as ``--key-file`` does). The package is opened and its digest checked before the
key is fetched: a package that is not the one EXPECTED_MODEL_DIGEST pins never costs a key
release, and an unpinned run still serves exactly the package whose digest it logged at start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sam import exitcodes as sx

from ...errors import AgentError, ConfigurationError, ModelRejected, MountFailed, WrongKey
from .. import ram
from .base import MountBackend

if TYPE_CHECKING:
    from sam.package import Package

    from ..config import RunConfig

__all__ = ["SamBackend", "sam_key"]

# The sam codes that say the package itself is not to be served (not a setup problem).
REJECTED = {
    sx.DIGEST_MISMATCH: "is not the package EXPECTED_MODEL_DIGEST pins",
    sx.INTEGRITY: "fails authentication (tampered, truncated or incomplete upload)",
}


def sam_key(secret: bytearray) -> bytes:
    """The KMS secret is the plaintext key given to the packer, byte for byte (4-128 bytes)."""
    from sam.errors import SamError
    from sam.keys import check_key, strip_newline

    key = bytes(secret)
    try:
        check_key(strip_newline(key))
    except SamError as e:
        raise ConfigurationError(f"the secret fetched for DECRYPTION_KEY_URI is not a Sam key: {e}") from None
    return key


class SamBackend(MountBackend):
    """The Sam package: ``sam mount --key-file /dev/fd/N --expect-digest``; copy mode unpacks."""

    name = "sam"
    tool = "sam"
    key_flag = "--key-file"
    wrong_key_code = sx.WRONG_KEY
    reasons = {
        sx.WRONG_KEY: "the key from the broker does not unlock the Sam package at ENCRYPTED_MODEL_PATH "
                      "(wrong secret stored for DECRYPTION_KEY_URI?)",
        sx.MANIFEST: "ENCRYPTED_MODEL_PATH has no usable .sam/manifest.json (is it the package directory?)",
        sx.PACKAGE: "ENCRYPTED_MODEL_PATH is not a directory",
        sx.KEY_READ: "the key from the broker is empty",
    }
    check_label = "sam package"

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.seen_digest: str | None = None  # the digest logged at start: what is served must be that one

    @classmethod
    def check_expected_digest(cls, value: str) -> str:
        """The pin in its canonical form (``sha256:`` and 64 lowercase hex digits)."""
        from sam.errors import SamError
        from sam.manifest import check_digest_syntax

        try:
            return check_digest_syntax(value, "EXPECTED_MODEL_DIGEST")
        except SamError as e:
            raise ConfigurationError(str(e)) from None

    @property
    def pin(self) -> str | None:
        """The digest the package must have: the pinned one, else the one seen at start."""
        return self.cfg.expect_digest or self.seen_digest

    def open_package(self) -> Package:
        """The package's manifest, its digest checked against :attr:`pin` (no key needed)."""
        from sam.errors import DigestMismatch, SamError
        from sam.package import Package

        self.check_kind()
        try:
            pkg = Package.open(self.cfg.cipher_dir, expect_digest=self.pin)  # the pin before parsing
        except DigestMismatch as e:
            raise ModelRejected(f"ENCRYPTED_MODEL_PATH: {e}") from None
        except SamError as e:
            raise ConfigurationError(f"ENCRYPTED_MODEL_PATH is not a usable Sam package: {e}") from None
        return pkg

    def model_digest(self) -> str:
        """The package digest, as ``sam pack`` and ``sam info`` print it."""
        return self.open_package().digest

    def prepare(self) -> dict[str, object]:
        """Open the package, check the pin, remember its digest: logged, then enforced by the mount."""
        self.seen_digest = self.open_package().digest
        return {"digest": self.seen_digest, "pinned": bool(self.cfg.expect_digest)}

    def mount_options(self) -> list[str]:
        """Serve exactly the package that was logged (the pinned one, or the one seen at start)."""
        return ["--expect-digest", self.pin] if self.pin else []

    def key_bytes(self, secret: bytearray) -> bytes:
        """The secret's exact bytes, checked as a Sam key (the mount strips one newline itself)."""
        return sam_key(secret)

    def mount_failure(self, code: int) -> AgentError:
        """A rejected package is its own failure (the model, not the setup, is wrong)."""
        if code in REJECTED:
            return ModelRejected(f"mount refused (sam exit {code}): ENCRYPTED_MODEL_PATH {REJECTED[code]}")
        return super().mount_failure(code)

    def copy_into(self, secret: bytearray, target: str) -> None:
        """Unpack the whole package (re-opened and re-checked against the pin) into ``target``."""
        from sam.errors import SamError, WrongKeyError
        from sam.keys import strip_newline
        from sam.unpack import unpack

        pkg = self.open_package()
        ram.check_fits(pkg.manifest.total_size())
        raw = sam_key(secret)
        try:
            unpack(pkg.unlock(strip_newline(raw)), target, progress=False)
        except WrongKeyError:
            raise WrongKey("the key from the broker does not unlock the Sam package", sx.WRONG_KEY) from None
        except SamError as e:
            if e.exit_code in REJECTED:
                raise ModelRejected(f"MOUNT_MODE=copy: {e}") from None
            raise MountFailed(f"MOUNT_MODE=copy: unpacking failed: {e}", e.exit_code) from None
        except OSError as e:
            raise MountFailed(f"MOUNT_MODE=copy: unpacking failed: {e.strerror or e}") from None

    def describe(self) -> str:
        """Key ID, file count and digest of the package, and whether it matches the pin."""
        pkg = self.open_package()
        pin = "matches EXPECTED_MODEL_DIGEST" if self.cfg.expect_digest else "not pinned"
        return f"key ID {pkg.manifest.key_id}, {len(pkg.manifest.files)} files, digest {pkg.digest} ({pin})"
