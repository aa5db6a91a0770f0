"""Key derivation: HKDF known answers, legacy (pre-HKDF) keys, and the example master keys.

HKDF vectors are copied from rfjakob/gocryptfs ``internal/cryptocore/hkdf_test.go``
(TestHkdfDerive, commit 1a03e993cf898bd66125d88dcd682dc056a398d6). The master keys of the
example filesystems are the ones gocryptfs' own tests mount them with
(``tests/example_filesystems/example_filesystems_test.go``, same commit).
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from Crypto.Cipher import ChaCha20_Poly1305
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cryptfs import cryptocore
from cryptfs.config import ConfFile
from cryptfs.cryptocore import AuthError
from cryptfs.password import parse_masterkey, read_passfile
from tests.support import EXAMPLE_MASTER_KEYS, EXAMPLES, PASSWORD_FILE

MASTER0 = bytes(32)
MASTER1 = b"\x01" * 32

# hkdf_test.go: out1..out4
HKDF_EME_MASTER0 = bytes.fromhex("9ba3cddd48c6339c6e56ebe85f0281d6e9051be4104176e65cb0f8a6f77ae6b4")
HKDF_EME_MASTER1 = bytes.fromhex("e8a2499f48700b954f31de732efd04abce822f5c948e7fbc0896607be0d36d12")
HKDF_GCM_MASTER1 = bytes.fromhex("9137f2e67a842484137f3c458f357f204c30d7458f94f432fa989be96854a649")
HKDF_SIV32_MASTER1 = bytes.fromhex("0bfa5da7d9724d4753269940d36898e2c0f3717c0fee86ada58b5fd6c08cc26c")



def _mk(dashed: str) -> bytes:
    return bytes.fromhex(dashed.replace("-", ""))


# --- HKDF ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("master", "info", "expected"),
    [
        (MASTER0, b"EME filename encryption", HKDF_EME_MASTER0),
        (MASTER0, cryptocore.INFO_EME, HKDF_EME_MASTER0),
        (MASTER1, b"EME filename encryption", HKDF_EME_MASTER1),
        (MASTER1, cryptocore.INFO_EME, HKDF_EME_MASTER1),
        (MASTER1, b"AES-GCM file content encryption", HKDF_GCM_MASTER1),
        (MASTER1, cryptocore.INFO_GCM, HKDF_GCM_MASTER1),
        (MASTER1, b"AES-SIV file content encryption", HKDF_SIV32_MASTER1),
        (MASTER1, cryptocore.INFO_SIV, HKDF_SIV32_MASTER1),
    ],
)
def test_hkdf_known_answers(master, info, expected):
    assert cryptocore.hkdf(master, info, 32) == expected
    assert cryptocore.hkdf(master, info) == expected  # 32 is the default length


def test_info_strings_are_exact():
    assert cryptocore.INFO_EME == b"EME filename encryption"
    assert cryptocore.INFO_GCM == b"AES-GCM file content encryption"
    assert cryptocore.INFO_SIV == b"AES-SIV file content encryption"
    assert cryptocore.INFO_XCHACHA == b"XChaCha20-Poly1305 file content encryption"


def test_hkdf_64_byte_siv_key_extends_the_32_byte_vector():
    key64 = cryptocore.hkdf(MASTER1, cryptocore.INFO_SIV, 64)
    assert len(key64) == 64
    assert key64[:32] == HKDF_SIV32_MASTER1


def test_eme_key_with_and_without_hkdf():
    assert cryptocore.eme_key(MASTER0, True) == HKDF_EME_MASTER0
    assert cryptocore.eme_key(MASTER1, True) == HKDF_EME_MASTER1
    assert cryptocore.eme_key(MASTER1, False) == MASTER1  # legacy: the master key itself


def test_purposes_give_distinct_keys():
    keys = {cryptocore.hkdf(MASTER1, info) for info in
            (cryptocore.INFO_EME, cryptocore.INFO_GCM, cryptocore.INFO_SIV, cryptocore.INFO_XCHACHA)}
    assert len(keys) == 4


# --- content ciphers are keyed as gocryptfs keys them -------------------------------------------
AAD = (7).to_bytes(8, "big") + bytes(range(16))


def test_gcm_content_key_is_hkdf_derived():
    aead = cryptocore.content_aead(cryptocore.GCM, MASTER1, True)
    assert (aead.nonce_len, aead.overhead) == (16, 32)
    nonce = bytes(range(1, 17))
    block = aead.seal(nonce, b"hello", AAD)
    assert block[:16] == nonce and len(block) == 5 + 32
    assert AESGCM(HKDF_GCM_MASTER1).decrypt(nonce, block[16:], AAD) == b"hello"
    assert aead.open(block, AAD) == b"hello"


def test_gcm_legacy_content_key_is_master_key():
    aead = cryptocore.content_aead(cryptocore.GCM, MASTER1, False)
    nonce = bytes(range(1, 17))
    block = aead.seal(nonce, b"hello", AAD)
    assert AESGCM(MASTER1).decrypt(nonce, block[16:], AAD) == b"hello"


def test_siv_content_key_is_64_byte_hkdf():
    aead = cryptocore.content_aead(cryptocore.SIV, MASTER1, True)
    assert (aead.nonce_len, aead.overhead) == (16, 32)
    nonce = bytes(range(1, 17))
    block = aead.seal(nonce, b"hello", AAD)
    key64 = HKDF(algorithm=hashes.SHA256(), length=64, salt=None,
                 info=b"AES-SIV file content encryption").derive(MASTER1)
    # layout nonce | SIV | ct; AD vector [aad, nonce]
    assert block[:16] == nonce and len(block) == 5 + 32
    assert AESSIV(key64).decrypt(block[16:], [AAD, nonce]) == b"hello"
    assert aead.open(block, AAD) == b"hello"


def test_siv_legacy_content_key_is_sha512_of_master_key():
    aead = cryptocore.content_aead(cryptocore.SIV, MASTER1, False)
    nonce = bytes(range(1, 17))
    block = aead.seal(nonce, b"hello", AAD)
    assert AESSIV(hashlib.sha512(MASTER1).digest()).decrypt(block[16:], [AAD, nonce]) == b"hello"


def test_xchacha_content_key_is_hkdf_derived():
    aead = cryptocore.content_aead(cryptocore.XCHACHA, MASTER1, True)
    assert (aead.nonce_len, aead.overhead) == (24, 40)
    nonce = bytes(range(1, 25))
    block = aead.seal(nonce, b"hello", AAD)
    assert block[:24] == nonce and len(block) == 5 + 40
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"XChaCha20-Poly1305 file content encryption").derive(MASTER1)
    c = ChaCha20_Poly1305.new(key=key, nonce=nonce)
    c.update(AAD)
    assert c.decrypt_and_verify(block[24:-16], block[-16:]) == b"hello"
    assert aead.open(block, AAD) == b"hello"


@pytest.mark.parametrize("kind", [cryptocore.GCM, cryptocore.SIV, cryptocore.XCHACHA])
def test_open_rejects_tampering_and_wrong_aad(kind):
    aead = cryptocore.content_aead(kind, MASTER1, True)
    block = aead.seal(bytes(range(1, aead.nonce_len + 1)), b"some plaintext", AAD)
    for pos in (0, aead.nonce_len, len(block) - 1):
        bad = bytearray(block)
        bad[pos] ^= 0x40
        with pytest.raises(AuthError):
            aead.open(bytes(bad), AAD)
    with pytest.raises(AuthError):
        aead.open(block, bytes(8) + bytes(range(16)))
    with pytest.raises(AuthError):
        cryptocore.content_aead(kind, MASTER0, True).open(block, AAD)


def test_unknown_content_cipher_rejected():
    with pytest.raises(ValueError):
        cryptocore.content_aead("ROT13", MASTER1, True)


# --- example filesystems: unlocking with password "test" gives the published master keys --------
@pytest.mark.parametrize("name", sorted(EXAMPLE_MASTER_KEYS))
def test_example_master_keys(name):
    conf = ConfFile.load(str(EXAMPLES / name / "gocryptfs.conf"))
    assert conf.unlock(b"test") == _mk(EXAMPLE_MASTER_KEYS[name])


def test_example_unlock_with_password_file():
    """The bundled password file is "test\\n"; its first line unlocks v1.3."""
    pw = read_passfile(str(PASSWORD_FILE))
    assert pw == b"test"
    conf = ConfFile.load(str(EXAMPLES / "v1.3" / "gocryptfs.conf"))
    assert conf.unlock(pw) == parse_masterkey(EXAMPLE_MASTER_KEYS["v1.3"])


@pytest.mark.parametrize(("name", "hkdf_wrap"), [("v1.3", True), ("v1.1-aessiv", False)])
def test_master_key_unwrap_independently(name, hkdf_wrap):
    """Spec §2.4 done by hand (hashlib scrypt, cryptography HKDF/GCM): same key as unlock()."""
    obj = json.loads((EXAMPLES / name / "gocryptfs.conf").read_bytes())
    s = obj["ScryptObject"]
    kek = hashlib.scrypt(b"test", salt=base64.b64decode(s["Salt"]), n=s["N"], r=s["R"], p=s["P"],
                         dklen=s["KeyLen"])
    blob = base64.b64decode(obj["EncryptedKey"])
    if hkdf_wrap:
        assert len(blob) == 64
        wrap = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=b"AES-GCM file content encryption").derive(kek)
        master = AESGCM(wrap).decrypt(blob[:16], blob[16:], bytes(8))
    else:
        assert len(blob) == 60
        master = AESGCM(kek).decrypt(blob[:12], blob[12:], bytes(8))
    assert master == _mk(EXAMPLE_MASTER_KEYS[name])
