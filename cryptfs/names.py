"""File-name encryption: PKCS#7 + EME + URL-safe base64, dir IVs and long names.

Names are bytes end to end (non-UTF-8 names must survive). Decoding is strict: the base64
must re-encode to exactly the same string (gocryptfs >= 2.5 behaviour), so two different
ciphertext names can never map to one plaintext name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from .eme import EME

DIRIV_NAME = b"gocryptfs.diriv"
DIRIV_LEN = 16
CONF_NAME = b"gocryptfs.conf"
LONGNAME_PREFIX = b"gocryptfs.longname."
LONGNAME_SUFFIX = b".name"
LONGNAME_MAX_DEFAULT = 255
LONGNAME_MAX_MIN = 62
NAME_MAX = 255
SIDECAR_MAX = 344  # gocryptfs refuses longer sidecars
ZERO_IV = bytes(DIRIV_LEN)


class BadName(Exception):
    """A name that cannot be decrypted or is not a valid plaintext name."""


def pad16(data: bytes) -> bytes:
    n = 16 - len(data) % 16
    return data + bytes([n]) * n


def unpad16(data: bytes) -> bytes:
    if not data or len(data) % 16:
        raise BadName("padded length is not a positive multiple of 16")
    n = data[-1]
    if n == 0 or n > 16 or n >= len(data):
        raise BadName("invalid padding")
    if data[-n:] != bytes([n]) * n:
        raise BadName("invalid padding")
    return data[:-n]


def b64encode(data: bytes, raw64: bool) -> bytes:
    enc = base64.urlsafe_b64encode(data)
    return enc.rstrip(b"=") if raw64 else enc


def b64decode_strict(text: bytes, raw64: bool) -> bytes:
    """Decode URL-safe base64 and require the canonical encoding."""
    padded = text + b"=" * (-len(text) % 4) if raw64 else text
    try:
        data = base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise BadName("invalid base64") from None
    if b64encode(data, raw64) != text:
        raise BadName("non-canonical base64")
    return data


def validate_plain_name(name: bytes) -> None:
    if not name:
        raise BadName("empty name")
    if len(name) > NAME_MAX:
        raise BadName("name longer than 255 bytes")
    if b"/" in name or b"\0" in name:
        raise BadName("name contains '/' or NUL")
    if name in (b".", b".."):
        raise BadName("name is '.' or '..'")


def is_longname(disk_name: bytes) -> bool:
    return disk_name.startswith(LONGNAME_PREFIX) and not disk_name.endswith(LONGNAME_SUFFIX)


def is_sidecar(disk_name: bytes) -> bool:
    return disk_name.startswith(LONGNAME_PREFIX) and disk_name.endswith(LONGNAME_SUFFIX)


def check_diriv(data: bytes) -> bytes:
    if len(data) != DIRIV_LEN:
        raise BadName(f"gocryptfs.diriv has {len(data)} bytes, expected 16")
    if data == ZERO_IV:
        raise BadName("gocryptfs.diriv is all zeros")
    return data


def new_diriv() -> bytes:
    return os.urandom(DIRIV_LEN)


class NameCodec:
    """Encrypts and decrypts single path components of one filesystem."""

    def __init__(self, eme_key: bytes | None, raw64: bool = True, longnamemax: int = 255):
        self.plaintext = eme_key is None
        self._eme = None if eme_key is None else EME(eme_key)
        self.raw64 = raw64
        self.longnamemax = longnamemax

    def encrypt(self, name: bytes, iv: bytes) -> bytes:
        """The full encoded encrypted name (before long-name hashing)."""
        validate_plain_name(name)
        if self._eme is None:
            return name
        return b64encode(self._eme.encrypt(iv, pad16(name)), self.raw64)

    def decrypt(self, encoded: bytes, iv: bytes) -> bytes:
        if self._eme is None:
            validate_plain_name(encoded)
            return encoded
        data = b64decode_strict(encoded, self.raw64)
        if not data or len(data) % 16 or len(data) > 16 * 128:
            raise BadName("ciphertext length is not a multiple of 16")
        name = unpad16(self._eme.decrypt(iv, data))
        validate_plain_name(name)
        return name

    def longname_hash(self, encoded: bytes) -> bytes:
        return LONGNAME_PREFIX + b64encode(hashlib.sha256(encoded).digest(), self.raw64)

    def disk_name(self, name: bytes, iv: bytes) -> tuple[bytes, bytes | None]:
        """The on-disk name and, for a long name, the sidecar content to store beside it."""
        encoded = self.encrypt(name, iv)
        if self._eme is None or len(encoded) <= self.longnamemax:
            return encoded, None
        return self.longname_hash(encoded), encoded
