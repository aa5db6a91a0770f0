"""AEAD primitives and key derivation shared by content, names and the master-key wrap.

gocryptfs derives one key per purpose from the 32-byte master key with HKDF-SHA256
(empty salt, ASCII info string); filesystems from before HKDF (v1.2 and older) use the
master key directly, and SHA-512 of it for AES-SIV.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .core.aead import TAG_LEN, Aead, AuthError, GcmAead

__all__ = ["GCM", "SIV", "XCHACHA", "Aead", "AuthError", "GcmAead", "SivAead", "XChaChaAead", "content_aead",
           "eme_key", "hkdf"]

KEY_LEN = 32

INFO_EME = b"EME filename encryption"
INFO_GCM = b"AES-GCM file content encryption"
INFO_SIV = b"AES-SIV file content encryption"
INFO_XCHACHA = b"XChaCha20-Poly1305 file content encryption"

GCM = GcmAead.name  # "AES-GCM"
SIV = "AES-SIV"
XCHACHA = "XChaCha20-Poly1305"


def hkdf(master_key: bytes, info: bytes, length: int = KEY_LEN) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(master_key)


def eme_key(master_key: bytes, use_hkdf: bool) -> bytes:
    return hkdf(master_key, INFO_EME) if use_hkdf else master_key


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
