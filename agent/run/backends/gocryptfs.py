"""ENCRYPTION_METHOD=gocryptfs: a gocryptfs v2 directory, served by ``python -m cryptfs mount``.

The KMS secret is the gocryptfs password. It is read with gocryptfs' own ``-passfile``
semantics (the first line), so a secret stored with or without a trailing newline unlocks the
same directory as real gocryptfs would. Before the key is fetched the tree is measured
(:func:`cryptfs.digest.tree_digest`: the config's bytes, every entry's path, type, mode, size
and header), its FeatureFlags are held to what this run accepts (:mod:`agent.run.flags`) and
its digest to EXPECTED_MODEL_DIGEST. That digest is the model's identity: it is what ``run``
measures, and the mount (``--expect-digest``) and the copy serve only the tree it names, so a
tree changed between measuring and mounting is refused, and one changed later reads as EIO.
Both refuse all-zero cipher blocks (``--no-holes``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptfs import exitcodes as cx

from ...errors import AgentError, ConfigurationError, ModelRejected, MountFailed, WrongKey
from .. import ram
from ..flags import check_feature_flags
from .base import MountBackend

if TYPE_CHECKING:
    from cryptfs.config import ConfFile
    from cryptfs.digest import TreeDigest

    from ..config import RunConfig

__all__ = ["GocryptfsBackend", "first_line"]


def first_line(secret: bytearray) -> bytes:
    """gocryptfs' password semantics for the KMS secret: the first line, as -passfile reads it."""
    line = bytes(secret).split(b"\n", 1)[0]
    if not line:
        raise ConfigurationError("the secret fetched from the broker is empty (its first line is empty)")
    return line


class GocryptfsBackend(MountBackend):
    """The gocryptfs format: ``cryptfs mount --passfile /dev/fd/N --expect-digest D``; copy decrypts."""

    name = "gocryptfs"
    tool = "cryptfs"
    key_flag = "--passfile"
    wrong_key_code = cx.PASSWORD_INCORRECT
    reasons = {
        cx.PASSWORD_INCORRECT: "the key from the broker does not unlock ENCRYPTED_MODEL_PATH (wrong secret "
                               "stored for DECRYPTION_KEY_URI?)",
        cx.CONFIG: "ENCRYPTED_MODEL_PATH has no usable gocryptfs.conf (is it the encrypted model directory?)",
        cx.CIPHERDIR: "ENCRYPTED_MODEL_PATH is not a directory, or its tree can no longer be measured",
    }
    check_label = "cipher dir"

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.measured: TreeDigest | None = None  # the tree as measured at start: all that is served

    @classmethod
    def check_expected_digest(cls, value: str) -> str:
        """The pin in its canonical form (``sha256:`` and 64 lowercase hex digits), as ``cryptfs digest``
        prints it."""
        from cryptfs.digest import check_digest_syntax
        from cryptfs.errors import CryptfsError

        try:
            return check_digest_syntax(value, "EXPECTED_MODEL_DIGEST")
        except CryptfsError as e:
            raise ConfigurationError(str(e)) from None

    @property
    def pin(self) -> str | None:
        """The digest the tree must have: the one measured at start, else the pinned one."""
        return self.measured.digest if self.measured else self.cfg.expect_digest

    def measure_tree(self) -> TreeDigest:
        """The tree digest of ENCRYPTED_MODEL_PATH, computed without the key."""
        from cryptfs.digest import tree_digest
        from cryptfs.errors import ConfigError, CryptfsError

        self.check_kind()
        try:
            return tree_digest(self.cfg.cipher_dir)
        except ConfigError as e:
            raise ConfigurationError(f"ENCRYPTED_MODEL_PATH: {e}") from None
        except CryptfsError as e:
            raise ConfigurationError(f"ENCRYPTED_MODEL_PATH cannot be measured (tree digest): {e}") from None

    def model_digest(self) -> str:
        """The tree digest: what ``cryptfs digest`` prints and ``agent reference`` registers."""
        return self.measure_tree().digest

    def check_conf(self, measured: TreeDigest) -> ConfFile:
        """The measured gocryptfs.conf, its FeatureFlags held to GOCRYPTFS_FLAGS (no key needed).

        The conf is not authenticated by the password: its flags are checked here, before the key
        is fetched, so that a rewritten conf (PlaintextNames: files renamed at will) is refused.
        They are read from the measured bytes, the very ones the pinned mount unlocks.
        """
        conf = measured.config()
        check_feature_flags(conf.feature_flags, self.cfg.gocryptfs_flags,
                            f"ENCRYPTED_MODEL_PATH {measured.conf_path}")
        return conf

    @staticmethod
    def check_pin(measured: TreeDigest, expected: str | None, what: str) -> None:
        """Refuse a tree whose digest is not ``expected`` (the model, not the setup, is wrong: 123)."""
        if expected is not None and measured.digest != expected:
            raise ModelRejected(f"ENCRYPTED_MODEL_PATH: tree digest {measured.digest} is not {what} "
                                f"{expected}: files were swapped, renamed, added, deleted, truncated or "
                                "re-headed, or its gocryptfs.conf changed, or it is another model; refused")

    def prepare(self) -> dict[str, object]:
        """Measure the tree, check its flags and EXPECTED_MODEL_DIGEST; the digest is then enforced."""
        measured = self.measure_tree()
        conf = self.check_conf(measured)
        self.check_pin(measured, self.cfg.expect_digest, "the EXPECTED_MODEL_DIGEST")
        self.measured = measured
        return {"flags": ",".join(conf.feature_flags), "digest": measured.digest,
                "pinned": bool(self.cfg.expect_digest)}

    def key_bytes(self, secret: bytearray) -> bytes:
        """The first line and a newline: what ``--passfile`` reads, whatever the secret ends with."""
        return first_line(secret) + b"\n"

    def mount_options(self) -> list[str]:
        """``--no-holes`` (a model has no sparse files: an all-zero cipher block is tampering) and
        ``--expect-digest``: serve exactly the tree that was measured, nothing added or changed since."""
        return ["--no-holes"] + (["--expect-digest", self.pin] if self.pin else [])

    def mount_failure(self, code: int) -> AgentError:
        """A tree that is no longer the measured one is its own failure (the model is wrong)."""
        if code == cx.DIGEST_MISMATCH:
            return ModelRejected(f"mount refused (cryptfs exit {code}): ENCRYPTED_MODEL_PATH changed after "
                                 "it was measured (its tree digest is no longer the one measured and logged)")
        return super().mount_failure(code)

    def copy_into(self, secret: bytearray, target: str) -> None:
        """Decrypt the measured tree only; a wrong key or a damaged file fails as the mount would.

        The tree is measured again and must still be the one measured at start; what is then
        decrypted is checked entry by entry against that measurement (a pinned tree). As the
        mount does: no holes, no FIFOs or device nodes, no symlinks leaving the tree.
        """
        from cryptfs.decrypt import decrypt_tree
        from cryptfs.errors import CryptfsError, TreeChangedError, WrongPasswordError
        from cryptfs.pin import PinnedTree

        measured = self.measure_tree()
        self.check_pin(measured, self.pin, "the one measured at start,")  # 123
        conf = self.check_conf(measured)
        ram.check_fits(measured.cipher_bytes)
        try:
            tree = PinnedTree(measured, conf.unlock(first_line(secret)))
            decrypt_tree(tree, target, progress=False, special_files=False, keep_external_links=False)
        except WrongPasswordError:
            raise WrongKey("the key from the broker does not unlock ENCRYPTED_MODEL_PATH",
                           cx.PASSWORD_INCORRECT) from None
        except TreeChangedError as e:
            raise ModelRejected(f"MOUNT_MODE=copy: ENCRYPTED_MODEL_PATH changed under decryption: {e}") \
                from None
        except CryptfsError as e:
            raise MountFailed(f"MOUNT_MODE=copy: decryption failed: {e}", e.exit_code) from None
        except OSError as e:
            raise MountFailed(f"MOUNT_MODE=copy: decryption failed: {e.strerror or e}") from None

    def describe(self) -> str:
        """gocryptfs.conf's flags and scrypt cost, and the tree digest against the pin (no key needed)."""
        measured = self.measure_tree()
        conf = self.check_conf(measured)
        self.check_pin(measured, self.cfg.expect_digest, "the EXPECTED_MODEL_DIGEST")
        pin = "matches EXPECTED_MODEL_DIGEST" if self.cfg.expect_digest else "not pinned"
        return (f"gocryptfs.conf readable, flags {' '.join(conf.feature_flags)}, scrypt N={conf.scrypt.n}, "
                f"tree digest {measured.digest} ({pin})")
