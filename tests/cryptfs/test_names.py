"""File names: PKCS#7 padding, strict base64, name validity, long names, and known answers.

Known answers: the self-made KAT of the format spec §6 (gocryptfs 2.3 ``-zerokey
-deterministic-names``: master key 32 zero bytes, IV 16 zero bytes), and the names of the bundled
example filesystems written by real gocryptfs releases (master keys from gocryptfs'
``tests/example_filesystems/example_filesystems_test.go``).
"""

from __future__ import annotations

import base64
import hashlib
import math
import os

import pytest

from cryptfs import names
from cryptfs.cryptocore import eme_key
from cryptfs.eme import EME
from cryptfs.names import BadName, NameCodec, b64decode_strict, b64encode, pad16, unpad16
from tests.support import EXAMPLES

ZERO_IV = bytes(16)
IV = bytes(range(16))


@pytest.fixture(scope="module")
def zero_codec() -> NameCodec:
    """The spec §6 KAT setup: all-zero master key, HKDF, Raw64, default longnamemax."""
    return NameCodec(eme_key(bytes(32), True), raw64=True)


@pytest.fixture(scope="module")
def codec() -> NameCodec:
    return NameCodec(eme_key(b"\x42" * 32, True), raw64=True)


# --- pad16 / unpad16 -----------------------------------------------------------------------------
@pytest.mark.parametrize("n", list(range(0, 50)) + [255])
def test_pad16_lengths_and_roundtrip(n):
    data = bytes(range(n)) if n < 256 else b"x" * n
    padded = pad16(data)
    pad = 16 - n % 16
    assert len(padded) == n + pad and len(padded) % 16 == 0
    assert padded[:n] == data
    assert padded[n:] == bytes([pad]) * pad
    if n:
        assert unpad16(padded) == data


def test_pad16_full_block_gets_a_whole_block_of_padding():
    assert pad16(b"A" * 16) == b"A" * 16 + b"\x10" * 16


@pytest.mark.parametrize(
    "bad",
    [
        b"",  # empty
        b"\x01",  # not a multiple of 16
        b"a" * 15 + b"\x01" + b"\x01",  # 17 bytes
        bytes(16),  # pad byte 0
        b"a" * 15 + b"\x11",  # pad byte 17 > 16
        b"\x10" * 16,  # padding as long as the whole input (would leave an empty name)
        b"\x11" * 16,
        b"a" * 12 + b"\x01\x04\x04\x04",  # pad bytes not all equal
        b"a" * 13 + b"\x02\x03\x03",
        b"a" * 16 + b"\x00" * 15 + b"\x10",  # 16 pad bytes claimed, 15 of them wrong
    ],
)
def test_unpad16_rejects(bad):
    with pytest.raises(BadName):
        unpad16(bad)


def test_unpad16_accepts_maximum_padding_after_a_full_block():
    assert unpad16(b"A" * 16 + b"\x10" * 16) == b"A" * 16
    assert unpad16(b"A" * 15 + b"\x01") == b"A" * 15


# --- strict base64 -------------------------------------------------------------------------------
@pytest.mark.parametrize("raw64", [True, False])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 15, 16, 17, 31, 32, 33, 48, 256])
def test_b64_roundtrip(raw64, n):
    data = os.urandom(n)
    enc = b64encode(data, raw64)
    assert (b"=" in enc) == (not raw64 and n % 3 != 0)
    assert b"+" not in enc and b"/" not in enc
    assert b64decode_strict(enc, raw64) == data
    assert enc == (base64.urlsafe_b64encode(data).rstrip(b"=") if raw64 else base64.urlsafe_b64encode(data))


def _set_unused_bit(enc: bytes) -> bytes:
    """Change the unused low bit of the last data character (only valid when it has unused bits)."""
    body = enc.rstrip(b"=")
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(body[-1:])
    return body[:-1] + alphabet[last ^ 1 : (last ^ 1) + 1] + enc[len(body):]


@pytest.mark.parametrize("raw64", [True, False])
@pytest.mark.parametrize("n", [1, 2, 16, 32])
def test_b64_non_canonical_trailing_bits_rejected(raw64, n):
    data = bytes(range(n))
    enc = b64encode(data, raw64)
    bad = _set_unused_bit(enc)
    assert bad != enc
    # the lenient decoder (gocryptfs <= 2.4) maps both strings to the same bytes
    lenient = bad + b"=" * (-len(bad) % 4)
    assert base64.urlsafe_b64decode(lenient) == data
    with pytest.raises(BadName):
        b64decode_strict(bad, raw64)


def test_b64_padding_handling_depends_on_raw64():
    assert b64decode_strict(b"AA", True) == b"\x00"
    assert b64decode_strict(b"AA==", False) == b"\x00"
    for text, raw64 in [(b"AA==", True), (b"AA=", True), (b"AA", False), (b"AA=", False),
                        (b"AAA", False), (b"AAA==", False), (b"A", True), (b"A", False),
                        (b"AAAAA", True), (b"A=AA", False), (b"AA==AA==", False)]:
        with pytest.raises(BadName):
            b64decode_strict(text, raw64)


@pytest.mark.parametrize("text", [b"AA\nAA", b"AAAA\n", b"AA\rAA", b" AAAA", b"AA AA", b"AA+A", b"AA/A",
                                  b"AA.A", b"AA\x00A", b"\xff\xfe"])
def test_b64_rejects_foreign_characters(text):
    with pytest.raises(BadName):
        b64decode_strict(text, True)


# --- plaintext name validity ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", [b"", b".", b"..", b"a/b", b"/", b"/abc", b"abc/", b"a\0b", b"\0",
                                 b"x" * 256, b"x" * 1000])
def test_invalid_plain_names(bad, codec):
    with pytest.raises(BadName):
        names.validate_plain_name(bad)
    with pytest.raises(BadName):
        codec.encrypt(bad, IV)
    with pytest.raises(BadName):
        codec.disk_name(bad, IV)


@pytest.mark.parametrize("good", [b"...", b".a", b"..a", b"a..", b" ", b"x" * 255, b"\xff", b"\\",
                                  "ünïcødé 名前".encode(), b"gocryptfs.conf", b"gocryptfs.diriv"])
def test_valid_plain_names(good, codec):
    names.validate_plain_name(good)
    enc = codec.encrypt(good, IV)
    assert codec.decrypt(enc, IV) == good


# --- encrypt / decrypt ---------------------------------------------------------------------------
def test_self_made_kat(zero_codec):
    """Spec §6: produced by gocryptfs 2.3 -zerokey -deterministic-names."""
    assert zero_codec.disk_name(b"hello.txt", ZERO_IV) == (b"jL2AGWCsH3KL2YR2S3kqNg", None)
    assert zero_codec.disk_name(b"dir", ZERO_IV) == (b"7yOetdsBqe9HhaPn8DSi1w", None)
    disk, sidecar = zero_codec.disk_name(b"a" * 176, ZERO_IV)
    assert disk == b"gocryptfs.longname.mU9b1WfQCEF54SD_avIq7VJDl6-T7yyzEEClO9eJDG0"
    assert sidecar.startswith(b"OJstjlsM8Kj6QWYjN_xQPRbjiusgD-ho")
    assert len(sidecar) == 256
    assert zero_codec.decrypt(b"jL2AGWCsH3KL2YR2S3kqNg", ZERO_IV) == b"hello.txt"
    assert zero_codec.decrypt(b"7yOetdsBqe9HhaPn8DSi1w", ZERO_IV) == b"dir"
    assert zero_codec.decrypt(sidecar, ZERO_IV) == b"a" * 176


def test_encrypt_is_eme_of_padded_name(codec):
    """The pipeline of spec §5.3, rebuilt from the parts."""
    key = eme_key(b"\x42" * 32, True)
    raw = EME(key).encrypt(IV, pad16(b"hello.txt"))
    assert codec.encrypt(b"hello.txt", IV) == base64.urlsafe_b64encode(raw).rstrip(b"=")


def test_iv_matters(codec):
    a = codec.encrypt(b"same name", IV)
    b = codec.encrypt(b"same name", ZERO_IV)
    assert a != b
    assert codec.encrypt(b"same name", IV) == a  # deterministic for a given IV
    try:
        wrong = codec.decrypt(a, ZERO_IV)
    except BadName:
        pass
    else:
        assert wrong != b"same name"


@pytest.mark.parametrize("name", [b"raw\xff\xfename", b"\x80", b"\xc3\x28", b"\xed\xa0\x80surrogate",
                                  bytes(b for b in range(1, 256) if b != 0x2F)])
def test_non_utf8_names_roundtrip_as_bytes(codec, name):
    disk, sidecar = codec.disk_name(name, IV)
    encoded = sidecar if sidecar is not None else disk
    out = codec.decrypt(encoded, IV)
    assert isinstance(out, bytes)
    assert out == name


@pytest.mark.parametrize("raw64", [True, False])
def test_non_canonical_encrypted_name_rejected(raw64):
    """Two ciphertext names must never map to one plaintext name (gocryptfs >= 2.5)."""
    c = NameCodec(eme_key(b"\x42" * 32, True), raw64=raw64)
    for name in (b"a", b"x" * 16):  # 16- and 32-byte ciphertexts, both with unused bits
        enc = c.encrypt(name, IV)
        assert c.decrypt(enc, IV) == name
        with pytest.raises(BadName):
            c.decrypt(_set_unused_bit(enc), IV)


def test_padding_style_must_match_raw64(codec):
    padded_codec = NameCodec(eme_key(b"\x42" * 32, True), raw64=False)
    enc_raw = codec.encrypt(b"a", IV)
    enc_padded = padded_codec.encrypt(b"a", IV)
    assert enc_padded == enc_raw + b"=="
    with pytest.raises(BadName):
        codec.decrypt(enc_padded, IV)
    with pytest.raises(BadName):
        padded_codec.decrypt(enc_raw, IV)


def test_standard_alphabet_rejected(codec):
    for i in range(500):
        name = b"n%d" % i
        enc = codec.encrypt(name, IV)
        if b"-" in enc or b"_" in enc:
            break
    else:
        pytest.fail("no name with '-' or '_' found")
    bad = enc.replace(b"-", b"+").replace(b"_", b"/")
    assert codec.decrypt(enc, IV) == name
    with pytest.raises(BadName):
        codec.decrypt(bad, IV)


def _eme_encoded(plain_padded: bytes, raw64: bool = True) -> bytes:
    return b64encode(EME(eme_key(b"\x42" * 32, True)).encrypt(IV, plain_padded), raw64)


@pytest.mark.parametrize(
    "padded",
    [
        bytes(16),  # pad byte 0
        b"\x10" * 16,  # decrypts to an empty name
        b"a" * 15 + b"\x11",  # pad byte > 16
        b"a" * 12 + b"\x01\x04\x04\x04",  # inconsistent padding
        pad16(b"."),
        pad16(b".."),
        pad16(b"a/b"),
        pad16(b"/"),
        pad16(b"a\0b"),
        pad16(b"x" * 256),  # longer than 255 bytes
        pad16(b"x" * 2000),
    ],
)
def test_decrypt_rejects_bad_plaintext(codec, padded):
    enc = _eme_encoded(padded)
    with pytest.raises(BadName):
        codec.decrypt(enc, IV)


@pytest.mark.parametrize("nbytes", [0, 1, 8, 15, 17, 31, 33, 16 * 129, 16 * 200])
def test_decrypt_rejects_bad_ciphertext_lengths(codec, nbytes):
    """Never a ValueError from EME: every bad length is a BadName."""
    with pytest.raises(BadName):
        codec.decrypt(b64encode(os.urandom(nbytes), True), IV)


def test_decrypt_rejects_garbage(codec):
    for garbage in (b"gocryptfs.diriv", b"gocryptfs.conf", b"gocryptfs.diriv.rmdir.123", b"!!!!",
                    b"hello.txt", b"a" * 22):
        with pytest.raises(BadName):
            codec.decrypt(garbage, IV)


# --- long names ----------------------------------------------------------------------------------
def _encoded_len(n: int) -> int:
    padded = (n // 16 + 1) * 16
    return math.ceil(padded * 4 / 3)


@pytest.mark.parametrize(
    ("n", "hashed", "encoded_len"),
    [(1, False, 22), (15, False, 22), (16, False, 43), (31, False, 43), (32, False, 64),
     (175, False, 235), (176, True, 256), (191, True, 256), (192, True, 278), (255, True, 342)],
)
def test_long_name_threshold_default(codec, n, hashed, encoded_len):
    name = b"n" * n
    disk, sidecar = codec.disk_name(name, IV)
    encoded = codec.encrypt(name, IV)
    assert len(encoded) == encoded_len
    if hashed:
        assert sidecar == encoded
        assert disk == b"gocryptfs.longname." + base64.urlsafe_b64encode(
            hashlib.sha256(encoded).digest()).rstrip(b"=")
        assert len(disk) == 62
        assert names.is_longname(disk) and not names.is_sidecar(disk)
        assert codec.decrypt(sidecar, IV) == name
    else:
        assert sidecar is None
        assert disk == encoded
        assert len(disk) <= 255
        assert not names.is_longname(disk)


def test_long_name_threshold_every_length(codec):
    for n in range(1, 256):
        disk, sidecar = codec.disk_name(b"q" * n, IV)
        assert (sidecar is not None) == (n >= 176), n
        assert len(sidecar if sidecar else disk) == _encoded_len(n)


@pytest.mark.parametrize(("n", "hashed"), [(1, False), (15, False), (16, False), (31, False),
                                           (32, True), (33, True), (175, True), (255, True)])
def test_long_name_threshold_longnamemax_62(n, hashed):
    c = NameCodec(eme_key(b"\x42" * 32, True), raw64=True, longnamemax=62)
    disk, sidecar = c.disk_name(b"m" * n, IV)
    assert (sidecar is not None) == hashed
    if hashed:
        assert len(disk) == 62 and disk.startswith(b"gocryptfs.longname.")
        assert c.decrypt(sidecar, IV) == b"m" * n
    else:
        assert len(disk) == (43 if n >= 16 else 22)


@pytest.mark.parametrize("longnamemax", [62, 63, 64, 100, 234, 235, 236, 254, 255])
def test_long_name_rule_is_strictly_longer_than_max(longnamemax):
    """gocryptfs' TestLongNameMax: hashed iff the encoded name is longer than longNameMax."""
    c = NameCodec(eme_key(bytes(32), True), raw64=True, longnamemax=longnamemax)
    for n in range(1, 256):
        encoded = c.encrypt(b"y" * n, ZERO_IV)
        disk, sidecar = c.disk_name(b"y" * n, ZERO_IV)
        assert (sidecar is not None) == (len(encoded) > longnamemax), (n, longnamemax)


def test_long_name_hash_keeps_padding_without_raw64():
    c = NameCodec(eme_key(b"\x42" * 32, False), raw64=False)
    disk, sidecar = c.disk_name(b"z" * 200, IV)
    assert sidecar is not None and sidecar.endswith(b"==")  # 208 padded bytes: padded base64
    assert c.decrypt(sidecar, IV) == b"z" * 200
    assert disk.endswith(b"=")
    assert len(disk) == 19 + 44
    assert disk == b"gocryptfs.longname." + base64.urlsafe_b64encode(hashlib.sha256(sidecar).digest())


def test_longname_and_sidecar_classification():
    h = b"gocryptfs.longname.QhUr5d9FHerwEs--muUs6_80cy6JRp89c1otLwp92Cs"
    assert names.is_longname(h) and not names.is_sidecar(h)
    assert names.is_sidecar(h + b".name") and not names.is_longname(h + b".name")
    assert not names.is_longname(b"QhUr5d9FHerwEs--muUs6_80cy6JRp89c1otLwp92Cs")
    assert not names.is_sidecar(b"gocryptfs.diriv")


def test_plaintext_names_codec():
    c = NameCodec(None)
    assert c.plaintext
    assert c.disk_name(b"x" * 255, b"") == (b"x" * 255, None)
    assert c.decrypt(b"raw\xff", b"") == b"raw\xff"
    for bad in (b"a/b", b".", b"", b"a\0"):
        with pytest.raises(BadName):
            c.decrypt(bad, b"")


# --- dir IVs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [b"", bytes(15), b"\x01" * 15, b"\x01" * 17, bytes(16)])
def test_check_diriv_rejects(bad):
    with pytest.raises(BadName):
        names.check_diriv(bad)


def test_check_diriv_accepts_and_new_diriv():
    assert names.check_diriv(b"\x00" * 15 + b"\x01") == b"\x00" * 15 + b"\x01"
    a, b = names.new_diriv(), names.new_diriv()
    assert len(a) == 16 and a != b
    assert names.check_diriv(a) == a


# --- names written by real gocryptfs -------------------------------------------------------------
LONGNAME_255 = b"longname_255_" + b"x" * 242
EXAMPLE_NAMES = {
    # dir: (master key, hkdf, raw64, diriv, has the long name)
    "v1.3": ("fd890dab86bf61cfec5ad460ad3ed01f9c52d5462a31783da56b088d3d05232e", True, True, True, True),
    "v2.2-deterministic-names": ("722733f5b0f399f55465ad7af0bed125e82de7b4045e7608a5e5c78e04a1a61e",
                                 True, True, False, True),
    "v2.2-xchacha": ("44670e7e32475bfcbdfb8a8cbe17a7670679cac0be705d8caf41c41128c40f26",
                     True, True, True, True),
    "v2.2-xchacha-deterministic-names": ("beba88a9c6cd1dc0b69c6f9d9daea4939ae870824ffc40bfb44e52db3933af39",
                                         True, True, False, True),
    "v1.1-aessiv": ("eaf371c3f9a553368819f22b7bccd7c2a738cf617261c65814c28a039428992b",
                    False, False, True, True),
    "v0.9": ("1cafe3f4bc3164662214c47cecd89bf34e078fe4f5faeea78b7cab02884f5e1c", False, False, True, True),
    "v0.7": ("ed7f6d8340cce86c0e7d79c2a9438710575221bf30a0eb602821fa8f7f3123bf", False, False, True, False),
}


@pytest.mark.parametrize("name", sorted(EXAMPLE_NAMES))
def test_example_filesystem_names(name):
    mk_hex, hkdf, raw64, diriv, has_long = EXAMPLE_NAMES[name]
    d = EXAMPLES / name
    iv = names.check_diriv((d / "gocryptfs.diriv").read_bytes()) if diriv else ZERO_IV
    c = NameCodec(eme_key(bytes.fromhex(mk_hex), hkdf), raw64=raw64)
    on_disk = {os.fsencode(p.name) for p in d.iterdir()} - {b"gocryptfs.conf", b"gocryptfs.diriv"}
    plain = [b"status.txt", b"rel", b"abs"] + ([LONGNAME_255] if has_long else [])

    expected = set()
    for p in plain:
        disk, sidecar = c.disk_name(p, iv)
        expected.add(disk)
        if sidecar is not None:
            assert p == LONGNAME_255
            assert (d / os.fsdecode(disk + b".name")).read_bytes() == sidecar  # no trailing newline
            expected.add(disk + b".name")
    assert expected == on_disk

    # and every on-disk name decrypts back
    decrypted = set()
    for disk in on_disk:
        if names.is_sidecar(disk):
            continue
        if names.is_longname(disk):
            decrypted.add(c.decrypt((d / os.fsdecode(disk + b".name")).read_bytes(), iv))
        else:
            decrypted.add(c.decrypt(disk, iv))
    assert decrypted == set(plain)
