"""AEAD primitives and key derivation shared by content, names and the master-key wrap.

gocryptfs derives one key per purpose from the 32-byte master key with HKDF-SHA256
(empty salt, ASCII info string); filesystems from before HKDF (v1.2 and older) use the
master key directly, and SHA-512 of it for AES-SIV.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_LEN = 32
TAG_LEN = 16

INFO_EME = b"EME filename encryption"
INFO_GCM = b"AES-GCM file content encryption"
INFO_SIV = b"AES-SIV file content encryption"
INFO_XCHACHA = b"XChaCha20-Poly1305 file content encryption"

GCM = "AES-GCM"
SIV = "AES-SIV"
XCHACHA = "XChaCha20-Poly1305"


class AuthError(Exception):
    """The AEAD tag did not verify."""


def hkdf(master_key: bytes, info: bytes, length: int = KEY_LEN) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(master_key)


def eme_key(master_key: bytes, use_hkdf: bool) -> bytes:
    return hkdf(master_key, INFO_EME) if use_hkdf else master_key


class Aead:
    """One content cipher: nonce || sealed data as gocryptfs lays it out on disk."""

    name: str
    nonce_len: int
    overhead: int

    def seal(self, nonce: bytes, plain: bytes, aad: bytes) -> bytes:
        """Return the on-disk block: nonce followed by the sealed data."""
        raise NotImplementedError

    def open(self, block: bytes | memoryview, aad: bytes) -> bytes:
        """Authenticate and decrypt one on-disk block (nonce included); raise AuthError."""
        raise NotImplementedError

    def open_into(self, block: bytes | memoryview, aad: bytes, out: memoryview) -> int:
        """Like open() but write the plaintext into ``out``; return its length."""
        plain = self.open(block, aad)
        out[: len(plain)] = plain
        return len(plain)


class GcmAead(Aead):
    """AES-256-GCM with gocryptfs' 128-bit (or legacy 96-bit) nonces: nonce | ct | tag."""

    name = GCM

    def __init__(self, key: bytes, nonce_len: int = 16):
        self.key = key  # the C block path keys its own OpenSSL context with it
        self._gcm = AESGCM(key)
        self.nonce_len = nonce_len
        self.overhead = nonce_len + TAG_LEN
        self._has_into = hasattr(self._gcm, "decrypt_into")

    def seal(self, nonce: bytes, plain: bytes, aad: bytes) -> bytes:
        return nonce + self._gcm.encrypt(nonce, plain, aad)

    def open(self, block, aad):
        n = self.nonce_len
        try:
            return self._gcm.decrypt(bytes(block[:n]), block[n:], aad)
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


class SivAead(Aead):
    """AES-SIV-512 (RFC 5297): nonce | SIV | ct, associated data vector [aad, nonce]."""

    name = SIV
    nonce_len = 16
    overhead = 32

    def __init__(self, key64: bytes):
        self._siv = AESSIV(key64)

    def seal(self, nonce, plain, aad):
        return nonce + self._siv.encrypt(plain, [aad, nonce])

    def open(self, block, aad):
        nonce = bytes(block[:16])
        try:
            return self._siv.decrypt(bytes(block[16:]), [aad, nonce])
        except InvalidTag:
            raise AuthError from None


class XChaChaAead(Aead):
    """XChaCha20-Poly1305 with 24-byte nonces: nonce | ct | tag (pycryptodome)."""

    name = XCHACHA
    nonce_len = 24
    overhead = 40

    def __init__(self, key: bytes):
        self._key = key

    def seal(self, nonce, plain, aad):
        from Crypto.Cipher import ChaCha20_Poly1305

        c = ChaCha20_Poly1305.new(key=self._key, nonce=nonce)
        c.update(aad)
        ct, tag = c.encrypt_and_digest(plain)
        return nonce + ct + tag

    def open(self, block, aad):
        from Crypto.Cipher import ChaCha20_Poly1305

        block = bytes(block)
        c = ChaCha20_Poly1305.new(key=self._key, nonce=block[:24])
        c.update(aad)
        try:
            return c.decrypt_and_verify(block[24:-TAG_LEN], block[-TAG_LEN:])
        except ValueError:
            raise AuthError from None


def content_aead(kind: str, master_key: bytes, use_hkdf: bool) -> Aead:
    """The content cipher for a filesystem, keyed as gocryptfs keys it."""
    if kind == GCM:
        return GcmAead(hkdf(master_key, INFO_GCM) if use_hkdf else master_key)
    if kind == SIV:
        key = hkdf(master_key, INFO_SIV, 64) if use_hkdf else hashlib.sha512(master_key).digest()
        return SivAead(key)
    if kind == XCHACHA:
        return XChaChaAead(hkdf(master_key, INFO_XCHACHA))
    raise ValueError(f"unknown content cipher {kind!r}")
