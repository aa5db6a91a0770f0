"""ENCRYPTION_METHOD=gocryptfs: a gocryptfs v2 directory, served by ``python -m cryptfs mount``.

The KMS secret is the gocryptfs password. It is read with gocryptfs' own ``-passfile``
semantics (the first line), so a secret stored with or without a trailing newline unlocks the
same directory as real gocryptfs would. Before the key is fetched the directory must be a
gocryptfs one whose FeatureFlags this run accepts (:mod:`agent.run.flags`); the mount and the
copy both refuse all-zero cipher blocks (``--no-holes``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from cryptfs import exitcodes as cx

from ...errors import ConfigurationError, MountFailed, WrongKey
from .. import ram
from ..flags import check_feature_flags
from .base import MountBackend

if TYPE_CHECKING:
    from cryptfs.config import ConfFile

__all__ = ["GocryptfsBackend", "first_line"]


def first_line(secret: bytearray) -> bytes:
    """gocryptfs' password semantics for the KMS secret: the first line, as -passfile reads it."""
    line = bytes(secret).split(b"\n", 1)[0]
    if not line:
        raise ConfigurationError("the secret fetched from the broker is empty (its first line is empty)")
    return line


class GocryptfsBackend(MountBackend):
    """The gocryptfs format: ``cryptfs mount --passfile /dev/fd/N``; copy mode decrypts the tree."""

    name = "gocryptfs"
    tool = "cryptfs"
    key_flag = "--passfile"
    wrong_key_code = cx.PASSWORD_INCORRECT
    reasons = {
        cx.PASSWORD_INCORRECT: "the key from the broker does not unlock ENCRYPTED_MODEL_PATH (wrong secret "
                               "stored for DECRYPTION_KEY_URI?)",
        cx.CONFIG: "ENCRYPTED_MODEL_PATH has no usable gocryptfs.conf (is it the encrypted model directory?)",
        cx.CIPHERDIR: "ENCRYPTED_MODEL_PATH is not a directory",
    }
    check_label = "cipher dir"

    def key_bytes(self, secret: bytearray) -> bytes:
        """The first line and a newline: what ``--passfile`` reads, whatever the secret ends with."""
        return first_line(secret) + b"\n"

    def load_conf(self) -> ConfFile:
        """gocryptfs.conf, its FeatureFlags held to GOCRYPTFS_FLAGS (no key needed).

        The conf is not authenticated by the password: its flags are checked here, before the key
        is fetched, so that a rewritten conf (PlaintextNames: files renamed at will) is refused.
        """
        from cryptfs.config import ConfFile
        from cryptfs.errors import CryptfsError

        self.check_kind()
        path = os.path.join(self.cfg.cipher_dir, "gocryptfs.conf")
        try:
            conf = ConfFile.load(path)
        except CryptfsError as e:
            raise ConfigurationError(f"ENCRYPTED_MODEL_PATH: {e}") from None
        check_feature_flags(conf.feature_flags, self.cfg.gocryptfs_flags, f"ENCRYPTED_MODEL_PATH {path}")
        return conf

    def prepare(self) -> dict[str, object]:
        """The directory is a gocryptfs one, with a flag set this run accepts."""
        return {"flags": ",".join(self.load_conf().feature_flags)}

    def mount_options(self) -> list[str]:
        """``--no-holes``: a model has no sparse files, so an all-zero cipher block is tampering."""
        return ["--no-holes"]

    def copy_into(self, secret: bytearray, target: str) -> None:
        """Decrypt the whole directory; a wrong key or a damaged file fails as the mount would.

        As the mount does: no holes (an all-zero block is tampering), no FIFOs or device nodes,
        no symlinks leaving the tree.
        """
        from cryptfs.core.files import tree_bytes
        from cryptfs.decrypt import decrypt_tree
        from cryptfs.errors import CryptfsError, WrongPasswordError
        from cryptfs.tree import CipherTree

        cipher_dir = self.cfg.cipher_dir
        conf = self.load_conf()  # again: the conf read now is the one that is used
        ram.check_fits(tree_bytes(cipher_dir))
        try:
            tree = CipherTree(cipher_dir, conf.params, conf.unlock(first_line(secret)), holes=False)
            decrypt_tree(tree, target, progress=False, special_files=False, keep_external_links=False)
        except WrongPasswordError:
            raise WrongKey("the key from the broker does not unlock ENCRYPTED_MODEL_PATH",
                           cx.PASSWORD_INCORRECT) from None
        except CryptfsError as e:
            raise MountFailed(f"MOUNT_MODE=copy: decryption failed: {e}", e.exit_code) from None
        except OSError as e:
            raise MountFailed(f"MOUNT_MODE=copy: decryption failed: {e.strerror or e}") from None

    def describe(self) -> str:
        """Whether gocryptfs.conf is readable and accepted, its flags and scrypt cost (no key needed)."""
        conf = self.load_conf()
        return f"gocryptfs.conf readable, flags {' '.join(conf.feature_flags)}, scrypt N={conf.scrypt.n}"
