"""The plaintext key, the key ID, and the keys derived from them.

The plaintext key is the exact bytes the owner gives (the KMS secret is the same bytes).
scrypt with a per-package salt makes every guess cost memory and time (a 4-byte key must
not be cheap to brute-force offline); HKDF then derives a key-wrapping key and a key check
value. The content and the manifest MAC use keys derived from a random per-package master
key, stored wrapped in the manifest (as gocryptfs does): the content keys have full entropy
whatever the plaintext key, and the packer seals while scrypt runs. Every HKDF info string
ends with the key ID, so a package is bound to the key ID it was packed under.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import sys
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cryptfs.core.files import close_passed_fd
from cryptfs.core.kdf import SCRYPT_MEM_MAX, SCRYPT_WORK_MAX

from .errors import KeyReadError, ManifestError, UsageError

KEY_MIN, KEY_MAX = 4, 128  # bytes, as the platform's packager
KEY_ID_MIN, KEY_ID_MAX = 8, 48
KEY_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\Z")  # safe as one directory name

SCRYPT_LOGN_DEFAULT = 17  # N = 2^17, r = 8: 128 MiB and ~0.45 s per guess here (2 vCPU)
SCRYPT_R_DEFAULT = 8
SCRYPT_P_DEFAULT = 1
SCRYPT_LOGN_RANGE = (10, 20)  # what a reader accepts, and --scryptn
SCRYPT_R_RANGE = (1, 32)
SCRYPT_P_RANGE = (1, 16)
SALT_LEN = 32

INFO_PREFIX = b"sam-open/1 "


def check_key(key: bytes) -> None:
    if not KEY_MIN <= len(key) <= KEY_MAX:
        raise UsageError(f"the plaintext key is {len(key)} bytes: it must be {KEY_MIN} to {KEY_MAX} bytes")


def check_key_id(key_id: str) -> None:
    size = len(key_id.encode("utf-8", "surrogateescape"))
    if not KEY_ID_MIN <= size <= KEY_ID_MAX:
        raise UsageError(f"the key ID is {size} bytes: it must be {KEY_ID_MIN} to {KEY_ID_MAX} bytes")
    if not KEY_ID_RE.match(key_id):
        raise UsageError(f"the key ID {key_id!r} must be usable as a directory name: letters, digits, "
                         "'.', '_' and '-' only, not starting with '.' or '-'")


def read_key_file(path: str) -> bytearray:
    """The key bytes of a file (or stdin for ``-``), at most one trailing newline stripped."""
    try:
        if path == "-":
            data = bytearray(sys.stdin.buffer.read())
        else:
            with open(path, "rb") as f:
                data = bytearray(f.read())
    except OSError as e:
        raise KeyReadError(f"cannot read the key from {path}: {e.strerror}") from None
    finally:
        if path != "-":
            close_passed_fd(path)  # agent run hands the key in through an inherited pipe
    del data[len(strip_newline(data)):]
    if not data:
        where = "standard input" if path == "-" else path
        raise KeyReadError(f"the key read from {where} is empty")
    return data


def strip_newline(data: bytes | bytearray) -> bytes | bytearray:
    """At most one trailing newline ("\n" or "\r\n") removed: an editor's or echo's, not the key's."""
    for end in (b"\r\n", b"\n"):
        if data.endswith(end):
            return data[: -len(end)]
    return data


@dataclass(frozen=True)
class KdfParams:
    log_n: int
    r: int
    p: int
    salt: bytes

    @classmethod
    def new(cls, log_n: int = SCRYPT_LOGN_DEFAULT) -> KdfParams:
        return cls(log_n, SCRYPT_R_DEFAULT, SCRYPT_P_DEFAULT, os.urandom(SALT_LEN))

    def to_json(self) -> dict:
        return {"name": "scrypt", "log_n": self.log_n, "r": self.r, "p": self.p, "salt": self.salt.hex()}

    @classmethod
    def from_json(cls, obj) -> KdfParams:
        if not isinstance(obj, dict) or obj.get("name") != "scrypt":
            raise ManifestError("manifest: kdf must be {\"name\": \"scrypt\", ...}")
        values = []
        for field, (lo, hi) in (("log_n", SCRYPT_LOGN_RANGE), ("r", SCRYPT_R_RANGE), ("p", SCRYPT_P_RANGE)):
            v = obj.get(field)
            if type(v) is not int or not lo <= v <= hi:
                raise ManifestError(f"manifest: kdf.{field} must be an integer in {lo}..{hi}")
            values.append(v)
        log_n, r, p = values
        if 128 * r << log_n > SCRYPT_MEM_MAX:
            raise ManifestError(f"manifest: scrypt with log_n={log_n} r={r} needs more than "
                                f"{SCRYPT_MEM_MAX >> 20} MiB of memory: refused")
        if (r * p) << log_n > SCRYPT_WORK_MAX:
            raise ManifestError(f"manifest: scrypt with log_n={log_n} r={r} p={p} costs more than "
                                "8 times the default: refused")
        if log_n >= 16 * r:  # scrypt requires N < 2^(128 r / 8)
            raise ManifestError(f"manifest: scrypt log_n={log_n} is invalid with r={r} (needs log_n < 16 r)")
        salt = _hex(obj.get("salt"), SALT_LEN, "kdf.salt")
        return cls(*values, salt)


def _hex(value, length: int, what: str) -> bytes:
    # exactly 2*length of [0-9a-f]: bytes.fromhex alone would also take spaces (and return fewer bytes)
    if (not isinstance(value, str) or len(value) != 2 * length
            or value.strip("0123456789abcdef")):
        raise ManifestError(f"manifest: {what} must be {2 * length} lowercase hex digits")
    return bytes.fromhex(value)


MASTER_LEN = 32
WRAP_NONCE_LEN = 12
WRAPPED_LEN = WRAP_NONCE_LEN + MASTER_LEN + 16  # nonce | AES-256-GCM(master key) | tag


@dataclass(frozen=True)
class KeyEncryptionKeys:
    """From the plaintext key (scrypt): they open the package's master key, nothing else."""

    wrap: bytes  # AES-256-GCM key that seals the random master key
    check: bytes  # stored in the manifest: tells a wrong key from a tampered manifest


@dataclass(frozen=True)
class PackageKeys:
    """From the random master key: the content is sealed with full-entropy keys."""

    content: bytes  # AES-256-GCM key of every chunk
    mac: bytes  # HMAC-SHA256 key of the manifest


def _hkdf(secret: bytes, purpose: bytes, key_id: str) -> bytes:
    info = INFO_PREFIX + purpose + b"\0" + key_id.encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def derive_kek(key: bytes, key_id: str, kdf: KdfParams) -> KeyEncryptionKeys:
    """scrypt(key, salt), then HKDF-SHA256 per purpose, bound to the key ID (the slow step)."""
    n = 1 << kdf.log_n
    try:
        seed = hashlib.scrypt(bytes(key), salt=kdf.salt, n=n, r=kdf.r, p=kdf.p, dklen=32,
                              maxmem=128 * kdf.r * (n + kdf.p + 2) + (1 << 20))
    except (ValueError, MemoryError) as e:
        raise ManifestError(f"manifest: scrypt refused the stored parameters ({e})") from None
    return KeyEncryptionKeys(_hkdf(seed, b"key wrap", key_id), _hkdf(seed, b"key check", key_id))


def new_master_key() -> bytes:
    return os.urandom(MASTER_LEN)


def package_keys(master: bytes, key_id: str) -> PackageKeys:
    return PackageKeys(_hkdf(master, b"content", key_id), _hkdf(master, b"manifest mac", key_id))


def _wrap_aad(package_id: bytes, key_id: str) -> bytes:
    return INFO_PREFIX + b"master key\0" + key_id.encode() + b"\0" + package_id


def wrap(kek: KeyEncryptionKeys, master: bytes, package_id: bytes, key_id: str) -> bytes:
    nonce = os.urandom(WRAP_NONCE_LEN)
    return nonce + AESGCM(kek.wrap).encrypt(nonce, master, _wrap_aad(package_id, key_id))


def unwrap(kek: KeyEncryptionKeys, wrapped: bytes, package_id: bytes, key_id: str) -> bytes | None:
    """The master key, or None if the wrapped key or what it is bound to was altered."""
    try:
        return AESGCM(kek.wrap).decrypt(wrapped[:WRAP_NONCE_LEN], wrapped[WRAP_NONCE_LEN:],
                                        _wrap_aad(package_id, key_id))
    except InvalidTag:
        return None


def mac(keys: PackageKeys, manifest_raw: bytes) -> bytes:
    return hmac.new(keys.mac, manifest_raw, hashlib.sha256).digest()
