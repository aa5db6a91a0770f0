"""ENCRYPTION_METHOD=gocryptfs: a gocryptfs v2 directory, served by ``python -m cryptfs mount``.

The KMS secret is the gocryptfs password. It is read with gocryptfs' own ``-passfile``
semantics (the first line), so a secret stored with or without a trailing newline unlocks the
same directory as real gocryptfs would.
"""

from __future__ import annotations

import os

from cryptfs import exitcodes as cx

from ...errors import ConfigurationError, MountFailed, WrongKey
from .. import ram
from .base import MountBackend

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

    def copy_into(self, secret: bytearray, target: str) -> None:
        """Decrypt the whole directory; a wrong key or a damaged file fails as the mount would."""
        from cryptfs.config import ConfFile
        from cryptfs.core.files import tree_bytes
        from cryptfs.decrypt import decrypt_tree
        from cryptfs.errors import CryptfsError, WrongPasswordError
        from cryptfs.tree import CipherTree

        cipher_dir = self.cfg.cipher_dir
        ram.check_fits(tree_bytes(cipher_dir))
        try:
            conf = ConfFile.load(os.path.join(cipher_dir, "gocryptfs.conf"))
            tree = CipherTree(cipher_dir, conf.params, conf.unlock(first_line(secret)))
            decrypt_tree(tree, target)
        except WrongPasswordError:
            raise WrongKey("the key from the broker does not unlock ENCRYPTED_MODEL_PATH",
                           cx.PASSWORD_INCORRECT) from None
        except CryptfsError as e:
            raise MountFailed(f"MOUNT_MODE=copy: decryption failed: {e}", e.exit_code) from None
        except OSError as e:
            raise MountFailed(f"MOUNT_MODE=copy: decryption failed: {e.strerror or e}") from None

    def describe(self) -> str:
        """Whether gocryptfs.conf is readable, and its flags and scrypt cost (no key needed)."""
        from cryptfs.config import ConfFile
        from cryptfs.errors import CryptfsError

        try:
            conf = ConfFile.load(os.path.join(self.cfg.cipher_dir, "gocryptfs.conf"))
        except CryptfsError as e:
            raise ConfigurationError(str(e)) from None
        return f"gocryptfs.conf readable, flags {' '.join(conf.feature_flags)}, scrypt N={conf.scrypt.n}"
