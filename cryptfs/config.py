"""gocryptfs.conf: parse, validate, unlock the master key, and write a new one.

The JSON layout and feature flags follow gocryptfs v2.4 (its ``internal/configfile``). We
refuse what we cannot honour (FIDO2, unknown flags, pre-v0.7 formats) with a message that says
why, and scrypt costs above the readers' cap (:mod:`cryptfs.core.kdf`): the file comes from
storage an attacker may edit, so its KDF must not become a denial of service.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from . import __version__, cryptocore
from .core.files import read_small_regular
from .core.kdf import scrypt_cost_problem
from .cryptocore import AuthError, GcmAead
from .errors import ConfigError, WrongPasswordError
from .names import LONGNAME_MAX_DEFAULT, LONGNAME_MAX_MIN

CONF_VERSION = 2
HKDF = "HKDF"
GCMIV128 = "GCMIV128"
DIRIV = "DirIV"
EMENAMES = "EMENames"
LONGNAMES = "LongNames"
RAW64 = "Raw64"
LONGNAMEMAX = "LongNameMax"
PLAINTEXTNAMES = "PlaintextNames"
AESSIV = "AESSIV"
XCHACHA = "XChaCha20Poly1305"
FIDO2 = "FIDO2"
KNOWN_FLAGS = (HKDF, GCMIV128, DIRIV, EMENAMES, LONGNAMES, RAW64, LONGNAMEMAX, PLAINTEXTNAMES,
               AESSIV, XCHACHA, FIDO2)

SCRYPT_LOGN_DEFAULT = 16
SCRYPT_LOGN_MIN = 10
SCRYPT_LOGN_MAX = 20  # gocryptfs writes up to 28; our readers cap memory at 1 GiB (N=2^20, r=8)
SCRYPT_MIN_R = 8
SCRYPT_MIN_P = 1
SALT_MIN = 32
CONF_MAX = 1 << 20  # a real gocryptfs.conf is ~400 bytes


@dataclass(frozen=True)
class FsParams:
    """What the feature flags mean for reading and writing the tree."""

    content: str = cryptocore.GCM
    hkdf: bool = True
    plaintext_names: bool = False
    diriv: bool = True
    raw64: bool = True
    longnamemax: int = LONGNAME_MAX_DEFAULT

    @classmethod
    def from_flags(cls, flags: list[str], longnamemax: int = 0) -> FsParams:
        content = cryptocore.GCM
        if XCHACHA in flags:
            content = cryptocore.XCHACHA
        elif AESSIV in flags:
            content = cryptocore.SIV
        return cls(
            content=content,
            hkdf=HKDF in flags,
            plaintext_names=PLAINTEXTNAMES in flags,
            diriv=DIRIV in flags,
            raw64=RAW64 in flags,
            longnamemax=longnamemax if LONGNAMEMAX in flags and longnamemax else LONGNAME_MAX_DEFAULT,
        )

    def flags(self) -> list[str]:
        """Feature flags in the order gocryptfs v2 writes them."""
        out = [HKDF] if self.hkdf else []
        out.append(XCHACHA if self.content == cryptocore.XCHACHA else GCMIV128)
        if self.plaintext_names:
            return out + [PLAINTEXTNAMES] + ([AESSIV] if self.content == cryptocore.SIV else [])
        if self.diriv:
            out.append(DIRIV)
        if self.longnamemax != LONGNAME_MAX_DEFAULT:
            out.append(LONGNAMEMAX)
        out += [EMENAMES, LONGNAMES]
        if self.raw64:
            out.append(RAW64)
        if self.content == cryptocore.SIV:
            out.append(AESSIV)
        return out


@dataclass
class ScryptParams:
    salt: bytes
    n: int
    r: int = 8
    p: int = 1
    keylen: int = 32

    def validate(self) -> None:
        if len(self.salt) < SALT_MIN:
            raise ConfigError(f"scrypt salt has {len(self.salt)} bytes, at least {SALT_MIN} are required")
        if self.n < (1 << SCRYPT_LOGN_MIN) or self.n > (1 << 28) or self.n & (self.n - 1):
            raise ConfigError(f"scrypt N={self.n} is not a power of two between 2^10 and 2^28")
        if self.r < SCRYPT_MIN_R or self.p < SCRYPT_MIN_P:
            raise ConfigError(f"scrypt R={self.r} P={self.p} are below gocryptfs' minimum (R>=8, P>=1)")
        problem = scrypt_cost_problem(self.n, self.r, self.p)
        if problem:
            raise ConfigError(f"{problem}: refused (a gocryptfs.conf from untrusted storage must not "
                              "exhaust the machine; re-create the filesystem with -scryptn 20 or less)")
        if self.keylen != 32:
            raise ConfigError(f"scrypt KeyLen={self.keylen}; gocryptfs only works with 32")

    def derive(self, password: bytes) -> bytes:
        return Scrypt(salt=self.salt, length=self.keylen, n=self.n, r=self.r, p=self.p).derive(password)


def _b64(value, name: str) -> bytes:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{name} is not valid base64") from None


def _int(obj: dict, key: str, name: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer")
    return value


def _lower_keys(obj: dict) -> dict:
    """Go's JSON decoder matches field names case-insensitively."""
    return {k.lower(): v for k, v in obj.items()}


def read_conf_bytes(path: str) -> bytes:
    """The raw bytes of a config file (at most CONF_MAX), as the tree digest hashes them.

    A FIFO, device or directory in its place is refused, never waited on.
    """
    try:
        data = read_small_regular(path, CONF_MAX, follow=True)
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: is this a gocryptfs directory? "
                          "(give --config, or --masterkey to work without it)") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    if len(data) > CONF_MAX:
        raise ConfigError(f"{path} is larger than {CONF_MAX >> 20} MiB: not a gocryptfs.conf")
    return data


@dataclass
class ConfFile:
    encrypted_key: bytes
    scrypt: ScryptParams
    feature_flags: list[str]
    creator: str = ""
    version: int = CONF_VERSION
    longnamemax: int = 0
    path: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str) -> ConfFile:
        """Read and validate; a FIFO, device or directory in its place is refused, never waited on."""
        return cls.parse(read_conf_bytes(path), path)

    @classmethod
    def parse(cls, data: bytes, path: str = "gocryptfs.conf") -> ConfFile:
        if not data.strip():
            raise ConfigError(f"{path} is empty")
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        except (RecursionError, MemoryError):
            raise ConfigError(f"{path} is nested too deeply or too large to be a gocryptfs.conf") from None
        if not isinstance(obj, dict):
            raise ConfigError(f"{path} is not a JSON object")
        o = _lower_keys(obj)
        scrypt_obj = o.get("scryptobject")
        if not isinstance(scrypt_obj, dict):
            raise ConfigError(f"{path}: ScryptObject is missing")
        s = _lower_keys(scrypt_obj)
        flags = o.get("featureflags") or []
        if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
            raise ConfigError(f"{path}: FeatureFlags must be a list of strings")
        conf = cls(
            encrypted_key=_b64(o.get("encryptedkey"), "EncryptedKey"),
            scrypt=ScryptParams(
                salt=_b64(s.get("salt"), "ScryptObject.Salt"),
                n=_int(s, "n", "ScryptObject.N"),
                r=_int(s, "r", "ScryptObject.R"),
                p=_int(s, "p", "ScryptObject.P"),
                keylen=_int(s, "keylen", "ScryptObject.KeyLen"),
            ),
            feature_flags=list(flags),
            creator=o.get("creator") if isinstance(o.get("creator"), str) else "",
            version=_int(o, "version", "Version"),
            longnamemax=o.get("longnamemax") or 0,
            path=path,
            extra={"fido2": o.get("fido2")},
        )
        conf.validate()
        return conf

    def validate(self) -> None:
        """Refuse anything gocryptfs v2 would refuse, and FIDO2, which we cannot unlock."""
        path = self.path or "gocryptfs.conf"
        if self.version != CONF_VERSION:
            raise ConfigError(f"{path}: on-disk format version {self.version} is not supported (only 2)")
        unknown = [f for f in self.feature_flags if f not in KNOWN_FLAGS]
        if unknown:
            raise ConfigError(f"{path}: unknown feature flag(s) {', '.join(unknown)}: written by a newer "
                              "gocryptfs; refusing rather than misreading it")
        if FIDO2 in self.feature_flags:
            raise ConfigError(f"{path}: this filesystem is unlocked with a FIDO2 token, which cryptfs does "
                              "not support; unlock it with --masterkey instead")
        self._validate_content_flags(path)
        self._validate_name_flags(path)
        self.scrypt.validate()
        expected = 64 if self.has(HKDF) else 60
        if len(self.encrypted_key) != expected:
            raise ConfigError(f"{path}: EncryptedKey has {len(self.encrypted_key)} bytes, "
                              f"expected {expected}")

    def _validate_content_flags(self, path: str) -> None:
        if self.has(XCHACHA) and self.has(AESSIV):
            raise ConfigError(f"{path}: both XChaCha20Poly1305 and AESSIV are set")
        if self.has(XCHACHA):
            if self.has(GCMIV128):
                raise ConfigError(f"{path}: XChaCha20Poly1305 conflicts with GCMIV128")
            if not self.has(HKDF):
                raise ConfigError(f"{path}: XChaCha20Poly1305 requires HKDF")
        elif not self.has(GCMIV128):
            raise ConfigError(f"{path}: no GCMIV128 flag: this filesystem was made by gocryptfs 0.6 or "
                              "older, which gocryptfs v2 no longer reads; open it with gocryptfs v1.x")

    def _validate_name_flags(self, path: str) -> None:
        if self.has(PLAINTEXTNAMES):
            bad = [f for f in (EMENAMES, DIRIV, LONGNAMES, RAW64, LONGNAMEMAX) if self.has(f)]
            if bad:
                raise ConfigError(f"{path}: PlaintextNames conflicts with {', '.join(bad)}")
        elif not self.has(EMENAMES):
            raise ConfigError(f"{path}: neither EMENames nor PlaintextNames is set; this is a pre-v0.7 "
                              "format that gocryptfs v2 no longer reads")
        if self.longnamemax and not self.has(LONGNAMEMAX):
            raise ConfigError(f"{path}: LongNameMax={self.longnamemax} but the LongNameMax feature flag "
                              "is not set")
        if self.has(LONGNAMEMAX):
            if not isinstance(self.longnamemax, int) or not LONGNAME_MAX_MIN <= self.longnamemax <= 255:
                raise ConfigError(f"{path}: LongNameMax={self.longnamemax!r} is outside 62..255")

    def has(self, flag: str) -> bool:
        return flag in self.feature_flags

    @property
    def params(self) -> FsParams:
        return FsParams.from_flags(self.feature_flags, self.longnamemax)

    def _wrap_aead(self, kek: bytes) -> GcmAead:
        if self.has(HKDF):
            return GcmAead(cryptocore.hkdf(kek, cryptocore.INFO_GCM), nonce_len=16)
        return GcmAead(kek, nonce_len=12)

    def unlock(self, password: bytes) -> bytes:
        """Derive the KEK with scrypt and unwrap the master key; wrong password raises."""
        kek = self.scrypt.derive(password)
        try:
            return self._wrap_aead(kek).open(self.encrypted_key, bytes(8))
        except AuthError:
            hint = ""
            if password.endswith(b"\r"):
                hint = (" (it ends with a carriage return: was the secret saved with Windows line endings? "
                        "store it without the trailing \\r)")
            raise WrongPasswordError(f"password incorrect: it does not unlock this filesystem{hint}") \
                from None

    @classmethod
    def create(cls, password: bytes, master_key: bytes, params: FsParams,
               logn: int = SCRYPT_LOGN_DEFAULT) -> ConfFile:
        if not SCRYPT_LOGN_MIN <= logn <= SCRYPT_LOGN_MAX:
            raise ConfigError(f"--scryptn {logn} is outside {SCRYPT_LOGN_MIN}..{SCRYPT_LOGN_MAX}")
        scrypt = ScryptParams(salt=os.urandom(32), n=1 << logn)
        conf = cls(encrypted_key=b"", scrypt=scrypt, feature_flags=params.flags(),
                   creator=f"cryptfs {__version__}",
                   longnamemax=params.longnamemax if params.longnamemax != LONGNAME_MAX_DEFAULT else 0)
        kek = scrypt.derive(password)
        conf.encrypted_key = conf._wrap_aead(kek).seal(os.urandom(16), master_key, bytes(8))
        return conf

    def dumps(self) -> bytes:
        """JSON as gocryptfs writes it: tab indentation, fixed field order, trailing newline."""
        obj = {
            "Creator": self.creator,
            "EncryptedKey": base64.b64encode(self.encrypted_key).decode(),
            "ScryptObject": {
                "Salt": base64.b64encode(self.scrypt.salt).decode(),
                "N": self.scrypt.n, "R": self.scrypt.r, "P": self.scrypt.p, "KeyLen": self.scrypt.keylen,
            },
            "Version": self.version,
            "FeatureFlags": self.feature_flags,
        }
        if self.longnamemax:
            obj["LongNameMax"] = self.longnamemax
        return (json.dumps(obj, indent="\t") + "\n").encode()
