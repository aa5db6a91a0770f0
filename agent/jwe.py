"""JWE for Trustee resource responses: the TEE key pair, decryption of what the KBS sends, and a
byte-compatible encryptor for the local dev broker.

Two wire forms exist (Trustee KBS protocol, resource responses):

* RFC 7516 flattened JSON (protocol 0.2.0 and later): ``protected`` is base64url JSON, the tag is a
  separate member and the AES-GCM AAD is the ``protected`` string as received.
* the legacy form (0.1.0 / 0.1.1, Alibaba openanolis <= v1.5.2): ``protected`` is raw JSON text,
  ``tag`` is empty, the 16-byte tag is appended to ``ciphertext`` and there is no AAD.

Only A256GCM content encryption exists on either side. Key management is RSA1_5, RSA-OAEP-256
(SHA-256, MGF1-SHA-256, no label) or ECDH-ES+A256KW on P-256.

The plaintext (the model key) is returned in a bytearray its receiver wipes: see
:func:`_gcm_open` for where the libraries force an immutable copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from .b64 import b64url_decode as _b64url_decode
from .b64 import b64url_encode
from .protocol import ECDH_ES_A256KW, KEY_ALGORITHMS, RSA1_5, RSA_OAEP_256

__all__ = ["ALGORITHMS", "JweError", "TeeKeyPair", "b64url_decode", "b64url_encode", "encrypt"]

ALGORITHMS = KEY_ALGORITHMS  # the TEE key algorithms (agent.protocol)
ENC = "A256GCM"

RSA_BITS = 2048  # what the upstream client (guest-components) uses
CEK_LEN = 32     # A256GCM key
IV_LEN = 12
TAG_LEN = 16
P256_COORD = 32
WRAPPED_CEK_LEN = CEK_LEN + 8  # RFC 3394 adds one 64-bit block

# Deliberately one message for every RSA1_5 failure past the structural checks: a message (or an
# early exit) that told "bad padding" from "bad tag" would be a Bleichenbacher padding oracle.
RSA1_5_FAILURE = "JWE decryption failed (RSA1_5: wrong key or corrupted encrypted_key/ciphertext/tag)"

_OAEP_256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


class JweError(ValueError):
    """A JWE body (or a JWK handed to :func:`encrypt`) is malformed, unsupported or undecryptable."""


# --------------------------------------------------------------------------------------------
# base64url: agent.b64's, failing with a JweError (a JOSE member that does not decode is a bad JWE)


def b64url_decode(value: Any, what: str) -> bytes:
    """Strict base64url decode of a JOSE member (:func:`agent.b64.b64url_decode`), as a JweError."""
    return _b64url_decode(value, what, JweError)


def _uint_b64(value: int, length: int | None = None) -> str:
    """Big-endian unsigned integer as base64url: minimal length, or left-padded to ``length``."""
    if length is None:
        length = max(1, (value.bit_length() + 7) // 8)
    return b64url_encode(value.to_bytes(length, "big"))


# --------------------------------------------------------------------------------------------
# key pair


class TeeKeyPair:
    """The TEE key pair whose public half goes into ``tee-pubkey``; it lives in memory only.

    The same pair is reused across handshakes (as the upstream client does), so a cached token
    and a later resource response stay decryptable.
    """

    __slots__ = ("_alg", "_key")

    def __init__(self, alg: str, private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        if alg not in ALGORITHMS:
            raise JweError(f"unsupported TEE key algorithm {alg!r}; expected one of {', '.join(ALGORITHMS)}")
        if alg == ECDH_ES_A256KW:
            if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
                    private_key.curve, ec.SECP256R1):
                raise JweError(f"{alg} needs an EC P-256 private key")
        elif not isinstance(private_key, rsa.RSAPrivateKey) or private_key.key_size < 2048:
            raise JweError(f"{alg} needs an RSA private key of at least 2048 bits")
        self._alg = alg
        self._key = private_key

    @classmethod
    def generate(cls, alg: str) -> TeeKeyPair:
        """A fresh key: RSA-2048 (e = 65537) for the RSA algorithms, P-256 for ECDH-ES+A256KW."""
        if alg == ECDH_ES_A256KW:
            return cls(alg, ec.generate_private_key(ec.SECP256R1()))
        if alg in (RSA1_5, RSA_OAEP_256):
            return cls(alg, rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS))
        raise JweError(f"unsupported TEE key algorithm {alg!r}; expected one of {', '.join(ALGORITHMS)}")

    @property
    def alg(self) -> str:
        return self._alg

    @property
    def private_key(self) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
        """The private key object (for tests and the dev broker); never written anywhere."""
        return self._key

    def __repr__(self) -> str:  # never show key material
        return f"TeeKeyPair(alg={self._alg!r})"

    def jwk(self) -> dict[str, str]:
        """The public JWK with exactly the members of Trustee's typed ``TeePubKey``.

        The server re-serialises the key from a typed struct before hashing it into the report
        data, so any extra member (kid, use, ...) would silently break the binding.
        """
        if self._alg == ECDH_ES_A256KW:
            pub = self._key.public_key().public_numbers()
            return {"kty": "EC", "crv": "P-256", "alg": self._alg,
                    "x": _uint_b64(pub.x, P256_COORD), "y": _uint_b64(pub.y, P256_COORD)}
        pub = self._key.public_key().public_numbers()
        return {"kty": "RSA", "alg": self._alg, "n": _uint_b64(pub.n), "e": _uint_b64(pub.e)}

    def decrypt(self, body: dict | str | bytes) -> bytearray:
        """Decrypt a KBS resource response; the wire form (RFC 7516 or legacy) is auto-detected.

        The plaintext comes back in a bytearray the caller wipes once it is handed on.
        Raises :class:`JweError` for anything malformed, unsupported or failing authentication.
        """
        jwe = _parse_body(body)
        protected = _member(jwe, "protected")
        if protected.lstrip().startswith("{"):
            # base64url never contains "{": this is the legacy raw-JSON header
            return self._decrypt_legacy(jwe, protected)
        return self._decrypt_rfc7516(jwe, protected)

    # -- the two wire forms --------------------------------------------------------------

    def _decrypt_rfc7516(self, jwe: dict, protected: str) -> bytearray:
        header = _header_json(b64url_decode(protected, "protected"), "protected header")
        for member in ("header", "unprotected"):
            if member in jwe:
                # RFC 7516 §7.2.1: the JOSE header is the union of all three; jwcrypto, for one,
                # puts the per-recipient epk into "header"
                extra = jwe[member]
                if not isinstance(extra, dict):
                    raise JweError(f"JWE member {member!r} must be a JSON object")
                dup = sorted(set(extra) & set(header))
                if dup:
                    raise JweError(f"header parameter(s) {', '.join(dup)} appear more than once")
                header = {**header, **extra}
        self._check_header(header)
        aad = protected
        if "aad" in jwe:
            aad_member = _member(jwe, "aad")
            b64url_decode(aad_member, "aad")  # validate only: the AAD uses the encoded text
            aad = protected + "." + aad_member
        encrypted_key = b64url_decode(_member(jwe, "encrypted_key"), "encrypted_key")
        iv = _iv(jwe)
        ciphertext = b64url_decode(_member(jwe, "ciphertext"), "ciphertext")
        tag = b64url_decode(_member(jwe, "tag"), "tag")
        if len(tag) != TAG_LEN:
            raise JweError(f"tag must be {TAG_LEN} bytes for A256GCM, got {len(tag)}")
        # both parts passed the base64url alphabet check, so they are ASCII
        return self._open(header, encrypted_key, iv, ciphertext + tag, aad.encode("ascii"))

    def _decrypt_legacy(self, jwe: dict, protected: str) -> bytearray:
        header = _header_json(protected, "legacy protected header")
        if header.get("alg") != RSA1_5:
            raise JweError("legacy (raw JSON protected) JWE supports only alg RSA1_5, "
                           f"got {header.get('alg')!r}")
        self._check_header(header)
        tag = jwe.get("tag", "")
        if tag != "":
            raise JweError("legacy JWE (raw JSON protected header) must have an empty tag member; "
                           "the tag travels appended to ciphertext")
        encrypted_key = b64url_decode(_member(jwe, "encrypted_key"), "encrypted_key")
        iv = _iv(jwe)
        ct_and_tag = b64url_decode(_member(jwe, "ciphertext"), "ciphertext")
        if len(ct_and_tag) < TAG_LEN:
            raise JweError(f"legacy ciphertext is truncated: {len(ct_and_tag)} bytes, shorter than "
                           f"the {TAG_LEN}-byte tag it must carry")
        return self._open(header, encrypted_key, iv, ct_and_tag, None)

    # -- helpers --------------------------------------------------------------------------

    def _check_header(self, header: dict) -> None:
        alg, enc = header.get("alg"), header.get("enc")
        if alg is None:
            raise JweError("JOSE header has no 'alg'")
        if enc is None:
            raise JweError("JOSE header has no 'enc'")
        if alg not in ALGORITHMS:
            raise JweError(f"unsupported JWE alg {alg!r}; expected one of {', '.join(ALGORITHMS)}")
        if enc != ENC:
            raise JweError(f"unsupported JWE enc {enc!r}; only {ENC} is supported")
        if alg != self._alg:
            raise JweError(f"JWE alg {alg!r} does not match this TEE key's alg {self._alg!r}")
        if "zip" in header:
            raise JweError(f"JWE compression (zip={header['zip']!r}) is not supported")
        if "crit" in header:
            raise JweError(f"JWE crit header parameters {header['crit']!r} are not understood")

    def _open(self, header: dict, encrypted_key: bytes, iv: bytes, ct_and_tag: bytes,
              aad: bytes | None) -> bytearray:
        """Recover the CEK for this key's alg, then AES-256-GCM-decrypt (tag at the end)."""
        if self._alg == RSA1_5:
            return self._open_rsa1_5(encrypted_key, iv, ct_and_tag, aad)
        if self._alg == RSA_OAEP_256:
            try:
                cek = self._key.decrypt(encrypted_key, _OAEP_256)
            except ValueError:
                raise JweError("RSA-OAEP-256 decryption of encrypted_key failed "
                               "(wrong key or corrupted data)")
        else:
            cek = self._unwrap_ecdh(header, encrypted_key)
        if len(cek) != CEK_LEN:
            raise JweError(f"content encryption key is {len(cek)} bytes; A256GCM needs {CEK_LEN}")
        try:
            return _gcm_open(cek, iv, ct_and_tag, aad)
        except InvalidTag:
            raise JweError("AES-GCM authentication failed (tag mismatch: wrong key or tampered JWE)")

    def _open_rsa1_5(self, encrypted_key: bytes, iv: bytes, ct_and_tag: bytes,
                     aad: bytes | None) -> bytearray:
        # RFC 7516 §11.5: on a bad key blob continue with a random CEK so every failure surfaces at
        # the same place, with the same message.
        fallback = os.urandom(CEK_LEN)
        try:
            cek = self._key.decrypt(encrypted_key, padding.PKCS1v15())
        except ValueError:
            cek = fallback
        if len(cek) != CEK_LEN:
            cek = fallback
        try:
            return _gcm_open(cek, iv, ct_and_tag, aad)
        except InvalidTag:
            raise JweError(RSA1_5_FAILURE)

    def _unwrap_ecdh(self, header: dict, encrypted_key: bytes) -> bytes:
        epk = header.get("epk")
        if not isinstance(epk, dict):
            raise JweError("ECDH-ES+A256KW JWE header has no 'epk' object")
        if epk.get("kty") != "EC" or epk.get("crv") != "P-256":
            raise JweError(f"epk must be an EC P-256 key, got kty={epk.get('kty')!r} crv={epk.get('crv')!r}")
        peer = _ec_public(epk, "epk")
        if len(encrypted_key) != WRAPPED_CEK_LEN:
            raise JweError(f"encrypted_key must be {WRAPPED_CEK_LEN} bytes (A256KW-wrapped 32-byte CEK), "
                           f"got {len(encrypted_key)}")
        z = self._key.exchange(ec.ECDH(), peer)
        try:
            return aes_key_unwrap(_concat_kdf(z), encrypted_key)
        except InvalidUnwrap:
            raise JweError("AES key unwrap of encrypted_key failed (wrong key or tampered epk/encrypted_key)")


def _gcm_open(cek: bytes, iv: bytes, ct_and_tag: bytes, aad: bytes | None) -> bytearray:
    """AES-256-GCM open (tag at the end) into a bytearray the caller can wipe.

    With ``AESGCM.decrypt_into`` (newer cryptography releases) the plaintext is written straight
    into that buffer and exists nowhere else; older releases only have ``decrypt``, which returns
    immutable bytes: those are copied into the buffer and that copy cannot be wiped (it stays in
    freed memory until reused). The CEK is immutable bytes in every release: the RSA decrypt and
    AES key-unwrap APIs return nothing else. A failed tag check wipes whatever was written.
    """
    out = bytearray(max(0, len(ct_and_tag) - TAG_LEN))
    aead = AESGCM(cek)
    decrypt_into = getattr(aead, "decrypt_into", None)
    if decrypt_into is None:
        out[:] = aead.decrypt(iv, ct_and_tag, aad)  # the library's immutable copy: see above
        return out
    try:
        decrypt_into(iv, ct_and_tag, aad, out)
    except BaseException:
        out[:] = bytes(len(out))
        raise
    return out


def _concat_kdf(z: bytes) -> bytes:
    """The one-round NIST Concat KDF of RFC 7518 §4.6.2 for ECDH-ES+A256KW (apu, apv empty)."""
    alg = ECDH_ES_A256KW.encode("ascii")
    other_info = struct.pack(">I", len(alg)) + alg + struct.pack(">III", 0, 0, 256)
    return hashlib.sha256(struct.pack(">I", 1) + z + other_info).digest()


def _parse_body(body: Any) -> dict:
    """JSON text/bytes or an already parsed dict -> dict, or a JweError saying what it was."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise JweError("JWE body is not UTF-8 text")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except RecursionError:
            raise JweError("JWE body is not valid JSON: nested too deeply")
        except ValueError as e:
            raise JweError(f"JWE body is not valid JSON: {e}")
    if not isinstance(body, dict):
        raise JweError(f"JWE body must be a JSON object, got {type(body).__name__}")
    return body


def _member(jwe: dict, name: str) -> str:
    if name not in jwe:
        raise JweError(f"JWE has no {name!r} member")
    value = jwe[name]
    if not isinstance(value, str):
        raise JweError(f"JWE member {name!r} must be a string, got {type(value).__name__}")
    return value


def _iv(jwe: dict) -> bytes:
    iv = b64url_decode(_member(jwe, "iv"), "iv")
    if len(iv) != IV_LEN:
        raise JweError(f"iv must be {IV_LEN} bytes for A256GCM, got {len(iv)}")
    return iv


def _header_json(raw: bytes | str, what: str) -> dict:
    try:
        header = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise JweError(f"{what} is not valid JSON")
    if not isinstance(header, dict):
        raise JweError(f"{what} must be a JSON object")
    return header


# --------------------------------------------------------------------------------------------
# server side (local dev broker)


def _rsa_public(jwk: dict) -> rsa.RSAPublicKey:
    missing = [m for m in ("n", "e") if m not in jwk]
    if missing:
        raise JweError(f"RSA JWK lacks {', '.join(missing)}")
    n = int.from_bytes(b64url_decode(jwk["n"], "jwk.n"), "big")
    e = int.from_bytes(b64url_decode(jwk["e"], "jwk.e"), "big")
    try:
        key = rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as ex:
        raise JweError(f"RSA JWK is not a valid public key: {ex}")
    if key.key_size < 2048:
        raise JweError(f"RSA JWK modulus is {key.key_size} bits; at least 2048 required")
    return key


def _ec_public(jwk: dict, what: str = "EC JWK") -> ec.EllipticCurvePublicKey:
    """A P-256 public key from JWK coordinates (the client's key, or a JWE header's epk)."""
    if jwk.get("crv") != "P-256":
        raise JweError(f"{what} curve must be P-256, got {jwk.get('crv')!r}")
    coords = []
    for c in ("x", "y"):
        if c not in jwk:
            raise JweError(f"{what} lacks {c!r}: there is no {c!r} coordinate")
        raw = b64url_decode(jwk[c], f"{what}.{c}")
        if len(raw) != P256_COORD:
            raise JweError(f"{what}.{c} must be {P256_COORD} bytes for P-256, got {len(raw)}")
        coords.append(int.from_bytes(raw, "big"))
    try:
        return ec.EllipticCurvePublicNumbers(coords[0], coords[1], ec.SECP256R1()).public_key()
    except ValueError:
        raise JweError(f"{what} is not a point on P-256") from None


def _compact_json(obj: dict) -> str:
    # serde_json::to_string: no whitespace, fields in declaration order
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def encrypt(jwk: dict, plaintext: bytes, legacy: bool = False) -> dict[str, str]:
    """Encrypt ``plaintext`` to a tee-pubkey exactly as Trustee's KBS does.

    Default: the RFC 7516 flattened form of Trustee >= v0.12 (kbs/src/jwe). ``legacy=True``: the
    openanolis <= v1.5.2 / Trustee v0.11 form (RSA1_5 only). Member order follows kbs-types.
    """
    if not isinstance(jwk, dict):
        raise JweError(f"tee-pubkey must be a JSON object, got {type(jwk).__name__}")
    if not isinstance(plaintext, (bytes, bytearray, memoryview)):
        raise TypeError("plaintext must be bytes")
    plaintext = bytes(plaintext)
    kty, alg = jwk.get("kty"), jwk.get("alg")
    if (kty, alg) not in (("RSA", RSA1_5), ("RSA", RSA_OAEP_256), ("EC", ECDH_ES_A256KW)):
        raise JweError(f"unsupported tee-pubkey kty={kty!r} alg={alg!r}")
    if legacy and alg != RSA1_5:
        raise JweError(f"the legacy JWE form exists only for RSA1_5, not {alg!r}")

    cek = AESGCM.generate_key(bit_length=256)
    iv = os.urandom(IV_LEN)
    header: dict[str, Any] = {"alg": alg, "enc": ENC}
    if alg == ECDH_ES_A256KW:
        peer = _ec_public(jwk)
        eph = ec.generate_private_key(ec.SECP256R1())
        encrypted_key = aes_key_wrap(_concat_kdf(eph.exchange(ec.ECDH(), peer)), cek)
        nums = eph.public_key().public_numbers()
        header["epk"] = {"crv": "P-256", "kty": "EC",
                         "x": _uint_b64(nums.x, P256_COORD), "y": _uint_b64(nums.y, P256_COORD)}
    else:
        pad = padding.PKCS1v15() if alg == RSA1_5 else _OAEP_256
        encrypted_key = _rsa_public(jwk).encrypt(cek, pad)

    if legacy:
        sealed = AESGCM(cek).encrypt(iv, plaintext, None)  # no AAD, tag stays appended
        return {"protected": _compact_json(header), "encrypted_key": b64url_encode(encrypted_key),
                "iv": b64url_encode(iv), "ciphertext": b64url_encode(sealed), "tag": ""}
    protected = b64url_encode(_compact_json(header).encode("utf-8"))
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    return {"protected": protected, "encrypted_key": b64url_encode(encrypted_key), "iv": b64url_encode(iv),
            "ciphertext": b64url_encode(sealed[:-TAG_LEN]), "tag": b64url_encode(sealed[-TAG_LEN:])}
