"""The AEAD interface the chunk layer seals and opens with, and AES-256-GCM behind it.

On disk an AEAD chunk is ``nonce | sealed data`` (for GCM: ``nonce | ciphertext | tag``).
gocryptfs adds AES-SIV and XChaCha20-Poly1305 (:mod:`cryptfs.cryptocore`); both formats use
:class:`GcmAead`, the one the C block path implements.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TAG_LEN = 16


class AuthError(Exception):
    """The AEAD tag did not verify."""


class Aead:
    """One content cipher: nonce || sealed data as the formats lay it out on disk."""

    name: str
    nonce_len: int
    overhead: int

    def seal(self, nonce: bytes, plain: bytes, aad: bytes) -> bytes:
        """Return the on-disk chunk: nonce followed by the sealed data."""
        raise NotImplementedError

    def open(self, block: bytes | memoryview, aad: bytes) -> bytes:
        """Authenticate and decrypt one on-disk chunk (nonce included); raise AuthError."""
        raise NotImplementedError

    def open_into(self, block: bytes | memoryview, aad: bytes, out: memoryview) -> int:
        """Like open() but write the plaintext into ``out``; return its length."""
        plain = self.open(block, aad)
        out[: len(plain)] = plain
        return len(plain)


class GcmAead(Aead):
    """AES-256-GCM: nonce | ct | tag, with 128-bit (gocryptfs), 96-bit (Sam, legacy gocryptfs) nonces."""

    name = "AES-GCM"

    def __init__(self, key: bytes, nonce_len: int = 16):
        self.key = key  # the C block path keys its own OpenSSL context with it
        self._gcm = AESGCM(key)
        self.nonce_len = nonce_len
        self.overhead = nonce_len + TAG_LEN
        self._has_into = hasattr(self._gcm, "decrypt_into")

    def seal(self, nonce: bytes, plain: bytes, aad: bytes) -> bytes:
        return nonce + self._gcm.encrypt(nonce, bytes(plain), aad)

    def open(self, block, aad):
        n = self.nonce_len
        try:
            return self._gcm.decrypt(bytes(block[:n]), bytes(block[n:]), aad)
        except InvalidTag:
            raise AuthError from None

    def open_into(self, block, aad, out):
        if not self._has_into:
            return super().open_into(block, aad, out)
        n = self.nonce_len
        plain_len = len(block) - self.overhead
        try:
            self._gcm.decrypt_into(bytes(block[:n]), block[n:], aad, out[:plain_len])
        except InvalidTag:
            raise AuthError from None
        return plain_len
