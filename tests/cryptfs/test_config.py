"""gocryptfs.conf: parsing the bundled examples, refusals, case-insensitivity, create/dump/unlock.

Refusal rules follow gocryptfs v2.4 ``internal/configfile/{validate,scrypt,config_file}.go`` and the
format spec §2 (we additionally refuse FIDO2, which cryptfs cannot unlock).
"""

from __future__ import annotations

import base64
import json

import pytest

from cryptfs import cryptocore, exitcodes
from cryptfs.config import ConfFile, FsParams, ScryptParams
from cryptfs.errors import ConfigError, WrongPasswordError
from tests.support import EXAMPLES

V13_MASTER_KEY = bytes.fromhex("fd890dab86bf61cfec5ad460ad3ed01f9c52d5462a31783da56b088d3d05232e")
DEFAULT_FLAGS = ["HKDF", "GCMIV128", "DirIV", "EMENames", "LongNames", "Raw64"]


def _v13() -> dict:
    return json.loads((EXAMPLES / "v1.3" / "gocryptfs.conf").read_bytes())


def _parse(obj) -> ConfFile:
    return ConfFile.parse(json.dumps(obj).encode())


# --- the bundled examples -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content", "hkdf", "diriv", "raw64", "plaintext_names"),
    [
        ("v1.3", cryptocore.GCM, True, True, True, False),
        ("v2.2-deterministic-names", cryptocore.GCM, True, False, True, False),
        ("v2.2-xchacha", cryptocore.XCHACHA, True, True, True, False),
        ("v2.2-xchacha-deterministic-names", cryptocore.XCHACHA, True, False, True, False),
        ("v1.1-aessiv", cryptocore.SIV, False, True, False, False),
        ("v0.9", cryptocore.GCM, False, True, False, False),
        ("v0.7", cryptocore.GCM, False, True, False, False),
        ("v0.7-plaintextnames", cryptocore.GCM, False, False, False, True),
    ],
)
def test_parse_readable_examples(name, content, hkdf, diriv, raw64, plaintext_names):
    conf = ConfFile.load(str(EXAMPLES / name / "gocryptfs.conf"))
    assert conf.version == 2
    assert conf.scrypt.n == 1024 and conf.scrypt.r == 8 and conf.scrypt.p == 1 and conf.scrypt.keylen == 32
    assert len(conf.scrypt.salt) == 32
    assert len(conf.encrypted_key) == (64 if hkdf else 60)
    p = conf.params
    assert (p.content, p.hkdf, p.diriv, p.raw64, p.plaintext_names) == (
        content, hkdf, diriv, raw64, plaintext_names)
    assert p.longnamemax == 255


@pytest.mark.parametrize("name", ["v0.4", "v0.5", "v0.6", "v0.6-plaintextnames"])
def test_pre_v07_examples_refused(name):
    with pytest.raises(ConfigError) as ei:
        ConfFile.load(str(EXAMPLES / name / "gocryptfs.conf"))
    assert ei.value.exit_code == exitcodes.CONFIG == 8


@pytest.mark.parametrize("name", ["v1.3", "v2.2-deterministic-names", "v2.2-xchacha",
                                  "v2.2-xchacha-deterministic-names"])
def test_dumps_reproduces_gocryptfs_file_byte_for_byte(name):
    raw = (EXAMPLES / name / "gocryptfs.conf").read_bytes()
    assert ConfFile.parse(raw).dumps() == raw


def test_load_missing_file(tmp_path):
    with pytest.raises(ConfigError):
        ConfFile.load(str(tmp_path / "nope.conf"))


# --- refusals -----------------------------------------------------------------------------------
def _flags(obj: dict, flags: list[str]) -> dict:
    obj["FeatureFlags"] = flags
    return obj


def _scrypt(obj: dict, **kw) -> dict:
    obj["ScryptObject"].update(kw)
    return obj


REFUSED = {
    "version 3": lambda o: {**o, "Version": 3},
    "version 1": lambda o: {**o, "Version": 1},
    "version 0": lambda o: {**o, "Version": 0},
    "version missing": lambda o: {k: v for k, v in o.items() if k != "Version"},
    "version string": lambda o: {**o, "Version": "2"},
    "unknown flag": lambda o: _flags(o, DEFAULT_FLAGS + ["FooBar"]),
    "unknown flag wrong case": lambda o: _flags(o, ["hkdf", "GCMIV128", "DirIV", "EMENames", "Raw64"]),
    "salt 31 bytes": lambda o: _scrypt(o, Salt=base64.b64encode(bytes(range(1, 32))).decode()),
    "salt empty": lambda o: _scrypt(o, Salt=""),
    "salt not base64": lambda o: _scrypt(o, Salt="!!notbase64!!"),
    "salt urlsafe alphabet": lambda o: _scrypt(o, Salt="-_" * 21 + "AA="),
    "N 1000": lambda o: _scrypt(o, N=1000),
    "N 1536 not power of two": lambda o: _scrypt(o, N=1536),
    "N 512": lambda o: _scrypt(o, N=512),
    "N 0": lambda o: _scrypt(o, N=0),
    "N float": lambda o: _scrypt(o, N=1024.0),
    "R 7": lambda o: _scrypt(o, R=7),
    "R 1": lambda o: _scrypt(o, R=1),
    "P 0": lambda o: _scrypt(o, P=0),
    "KeyLen 31": lambda o: _scrypt(o, KeyLen=31),
    "KeyLen 33": lambda o: _scrypt(o, KeyLen=33),
    "KeyLen 64": lambda o: _scrypt(o, KeyLen=64),
    "ScryptObject missing": lambda o: {k: v for k, v in o.items() if k != "ScryptObject"},
    "EncryptedKey 63 bytes": lambda o: {**o, "EncryptedKey": base64.b64encode(bytes(63)).decode()},
    "EncryptedKey 60 bytes with HKDF": lambda o: {**o, "EncryptedKey": base64.b64encode(bytes(60)).decode()},
    "EncryptedKey not base64": lambda o: {**o, "EncryptedKey": "***"},
    "EncryptedKey missing": lambda o: {k: v for k, v in o.items() if k != "EncryptedKey"},
    "EncryptedKey number": lambda o: {**o, "EncryptedKey": 5},
    "XChaCha + GCMIV128": lambda o: _flags(o, ["HKDF", "XChaCha20Poly1305", "GCMIV128", "DirIV", "EMENames",
                                               "LongNames", "Raw64"]),
    "XChaCha without HKDF": lambda o: _flags(o, ["XChaCha20Poly1305", "DirIV", "EMENames", "LongNames"]),
    "XChaCha + AESSIV": lambda o: _flags(o, ["HKDF", "XChaCha20Poly1305", "DirIV", "EMENames", "AESSIV"]),
    "AESSIV without GCMIV128": lambda o: _flags(o, ["HKDF", "DirIV", "EMENames", "LongNames", "AESSIV"]),
    "GCM without GCMIV128": lambda o: _flags(o, ["HKDF", "DirIV", "EMENames", "LongNames", "Raw64"]),
    "no flags at all": lambda o: _flags(o, []),
    "flags null": lambda o: _flags(o, None),
    "flags not a list": lambda o: _flags(o, "HKDF"),
    "PlaintextNames + EMENames": lambda o: _flags(o, ["HKDF", "GCMIV128", "PlaintextNames", "EMENames"]),
    "PlaintextNames + DirIV": lambda o: _flags(o, ["HKDF", "GCMIV128", "PlaintextNames", "DirIV"]),
    "PlaintextNames + LongNames": lambda o: _flags(o, ["HKDF", "GCMIV128", "PlaintextNames", "LongNames"]),
    "PlaintextNames + Raw64": lambda o: _flags(o, ["HKDF", "GCMIV128", "PlaintextNames", "Raw64"]),
    "PlaintextNames + LongNameMax": lambda o: {**_flags(o, ["HKDF", "GCMIV128", "PlaintextNames",
                                                            "LongNameMax"]), "LongNameMax": 100},
    "neither EMENames nor PlaintextNames": lambda o: _flags(o, ["HKDF", "GCMIV128", "DirIV", "Raw64"]),
    "LongNameMax 61": lambda o: {**_flags(o, DEFAULT_FLAGS + ["LongNameMax"]), "LongNameMax": 61},
    "LongNameMax 256": lambda o: {**_flags(o, DEFAULT_FLAGS + ["LongNameMax"]), "LongNameMax": 256},
    "LongNameMax 0 with flag": lambda o: {**_flags(o, DEFAULT_FLAGS + ["LongNameMax"]), "LongNameMax": 0},
    "LongNameMax flag, field missing": lambda o: _flags(o, DEFAULT_FLAGS + ["LongNameMax"]),
    "LongNameMax -1": lambda o: {**_flags(o, DEFAULT_FLAGS + ["LongNameMax"]), "LongNameMax": -1},
    "LongNameMax string": lambda o: {**_flags(o, DEFAULT_FLAGS + ["LongNameMax"]), "LongNameMax": "100"},
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused(case):
    obj = REFUSED[case](_v13())
    with pytest.raises(ConfigError) as ei:
        _parse(obj)
    assert ei.value.exit_code == 8
    assert str(ei.value)


def test_unknown_flag_is_named_in_the_message():
    with pytest.raises(ConfigError, match="FooBar"):
        _parse(_flags(_v13(), DEFAULT_FLAGS + ["FooBar"]))


def test_fido2_refused_with_masterkey_hint():
    obj = _flags(_v13(), DEFAULT_FLAGS + ["FIDO2"])
    obj["FIDO2"] = {"CredentialID": base64.b64encode(bytes(32)).decode(),
                    "HMACSalt": base64.b64encode(bytes(32)).decode()}
    with pytest.raises(ConfigError) as ei:
        _parse(obj)
    assert "--masterkey" in str(ei.value)
    assert "FIDO2" in str(ei.value)


def test_version_3_message_mentions_version():
    with pytest.raises(ConfigError, match="3"):
        _parse({**_v13(), "Version": 3})


@pytest.mark.parametrize("data", [b"", b" ", b"\n", b"\t\n  \n"])
def test_empty_file_refused(data):
    with pytest.raises(ConfigError):
        ConfFile.parse(data)


@pytest.mark.parametrize("data", [b"{", b"{]", b"not json", b"[1, 2]", b"null", b"2", b'"x"', b"\xff\xfe{}",
                                  b'{"Version": 2,}'])
def test_invalid_json_refused(data):
    with pytest.raises(ConfigError):
        ConfFile.parse(data)


def test_empty_file_on_disk_refused(tmp_path):
    p = tmp_path / "gocryptfs.conf"
    p.write_bytes(b"")
    with pytest.raises(ConfigError):
        ConfFile.load(str(p))


def test_longnamemax_field_without_flag_refused():
    obj = {**_v13(), "LongNameMax": 100}  # flags unchanged: no "LongNameMax"
    with pytest.raises(ConfigError):
        _parse(obj)


@pytest.mark.parametrize("value", [62, 100, 254, 255])
def test_longnamemax_in_range_accepted(value):
    conf = _parse({**_flags(_v13(), DEFAULT_FLAGS + ["LongNameMax"]), "LongNameMax": value})
    assert conf.params.longnamemax == value


def test_accepted_scrypt_edges():
    conf = _parse(_scrypt(_v13(), Salt=base64.b64encode(bytes(range(64))).decode(), R=16, P=2))
    assert len(conf.scrypt.salt) == 64 and conf.scrypt.r == 16 and conf.scrypt.p == 2


# --- tolerant reading ----------------------------------------------------------------------------
def _rekey(obj, fn):
    if isinstance(obj, dict):
        return {fn(k): _rekey(v, fn) for k, v in obj.items()}
    return obj


@pytest.mark.parametrize("fn", [str.lower, str.upper, str.swapcase,
                                lambda k: k[0].lower() + k[1:].upper()])
def test_field_names_case_insensitive(fn):
    obj = _rekey(_v13(), fn)
    assert "EncryptedKey" not in obj
    conf = _parse(obj)
    assert conf.params == FsParams()
    assert conf.unlock(b"test") == V13_MASTER_KEY


def test_unknown_fields_ignored():
    """cppcryptfs adds VolumeName and FsFeatureDisableMask; Go's decoder ignores unknown fields."""
    obj = {**_v13(), "VolumeName": "c29tZXRoaW5n", "FsFeatureDisableMask": 0, "Whatever": [1, {"a": None}]}
    conf = _parse(obj)
    assert conf.unlock(b"test") == V13_MASTER_KEY


def test_creator_is_informational():
    conf = _parse({k: v for k, v in _v13().items() if k != "Creator"})
    assert conf.creator == ""
    assert _parse({**_v13(), "Creator": 42}).creator == ""


# --- create / dumps / parse / unlock ------------------------------------------------------------
CREATE_CASES = {
    "default": (FsParams(), DEFAULT_FLAGS),
    "xchacha": (FsParams(content=cryptocore.XCHACHA),
                ["HKDF", "XChaCha20Poly1305", "DirIV", "EMENames", "LongNames", "Raw64"]),
    "aessiv": (FsParams(content=cryptocore.SIV), DEFAULT_FLAGS + ["AESSIV"]),
    "deterministic": (FsParams(diriv=False), ["HKDF", "GCMIV128", "EMENames", "LongNames", "Raw64"]),
    "xchacha-deterministic": (FsParams(content=cryptocore.XCHACHA, diriv=False),
                              ["HKDF", "XChaCha20Poly1305", "EMENames", "LongNames", "Raw64"]),
    "plaintextnames": (FsParams(plaintext_names=True, diriv=False, raw64=False),
                       ["HKDF", "GCMIV128", "PlaintextNames"]),
    "plaintextnames-aessiv": (FsParams(content=cryptocore.SIV, plaintext_names=True, diriv=False,
                                       raw64=False), ["HKDF", "GCMIV128", "PlaintextNames", "AESSIV"]),
    "longnamemax": (FsParams(longnamemax=100),
                    ["HKDF", "GCMIV128", "DirIV", "LongNameMax", "EMENames", "LongNames", "Raw64"]),
    "longnamemax-62-deterministic": (FsParams(longnamemax=62, diriv=False),
                                     ["HKDF", "GCMIV128", "LongNameMax", "EMENames", "LongNames", "Raw64"]),
}


@pytest.mark.parametrize("case", list(CREATE_CASES))
def test_create_dumps_parse_unlock_roundtrip(case):
    params, flags = CREATE_CASES[case]
    master = bytes(range(32))
    conf = ConfFile.create(b"pass word", master, params, logn=10)
    assert conf.feature_flags == flags
    data = conf.dumps()
    obj = json.loads(data)
    assert obj["FeatureFlags"] == flags
    assert obj["Version"] == 2
    assert obj["ScryptObject"]["N"] == 1024
    assert (obj["ScryptObject"]["R"], obj["ScryptObject"]["P"], obj["ScryptObject"]["KeyLen"]) == (8, 1, 32)
    assert len(base64.b64decode(obj["ScryptObject"]["Salt"], validate=True)) == 32
    assert len(base64.b64decode(obj["EncryptedKey"], validate=True)) == 64
    if params.longnamemax != 255:
        assert obj["LongNameMax"] == params.longnamemax
    else:
        assert "LongNameMax" not in obj
    assert "FIDO2" not in obj

    back = ConfFile.parse(data)
    assert back.params == params
    assert back.feature_flags == flags
    assert back.unlock(b"pass word") == master
    with pytest.raises(WrongPasswordError):
        back.unlock(b"pass words")


def test_flags_of_plaintextnames_ignore_name_options():
    assert FsParams(plaintext_names=True).flags() == ["HKDF", "GCMIV128", "PlaintextNames"]


def test_create_is_randomised():
    a = ConfFile.create(b"pw", bytes(32), FsParams(), logn=10)
    b = ConfFile.create(b"pw", bytes(32), FsParams(), logn=10)
    assert a.scrypt.salt != b.scrypt.salt
    assert a.encrypted_key[:16] != b.encrypted_key[:16]  # the wrap nonce
    assert a.unlock(b"pw") == b.unlock(b"pw") == bytes(32)


@pytest.mark.parametrize("logn", [0, 9, 29])
def test_create_rejects_scrypt_logn_out_of_range(logn):
    with pytest.raises(ConfigError):
        ConfFile.create(b"pw", bytes(32), FsParams(), logn=logn)


def test_dumps_layout():
    conf = ConfFile(encrypted_key=bytes(range(64)),
                    scrypt=ScryptParams(salt=bytes(range(100, 132)), n=1024),
                    feature_flags=list(DEFAULT_FLAGS), creator="gocryptfs v2.4.0")
    expected = (
        "{\n"
        '\t"Creator": "gocryptfs v2.4.0",\n'
        f'\t"EncryptedKey": "{base64.b64encode(bytes(range(64))).decode()}",\n'
        '\t"ScryptObject": {\n'
        f'\t\t"Salt": "{base64.b64encode(bytes(range(100, 132))).decode()}",\n'
        '\t\t"N": 1024,\n'
        '\t\t"R": 8,\n'
        '\t\t"P": 1,\n'
        '\t\t"KeyLen": 32\n'
        "\t},\n"
        '\t"Version": 2,\n'
        '\t"FeatureFlags": [\n'
        + "".join(f'\t\t"{f}",\n' for f in DEFAULT_FLAGS[:-1]) + f'\t\t"{DEFAULT_FLAGS[-1]}"\n'
        "\t]\n"
        "}\n"
    ).encode()
    assert conf.dumps() == expected


def test_dumps_created_uses_tabs_standard_base64_and_trailing_newline():
    data = ConfFile.create(b"pw", bytes(32), FsParams(longnamemax=80), logn=10).dumps()
    assert data.endswith(b"}\n") and not data.endswith(b"\n\n")
    lines = data.split(b"\n")
    assert all(not line.startswith(b" ") for line in lines)
    assert any(line.startswith(b"\t\t") for line in lines)
    keys = [k for k in json.loads(data)]
    assert keys == ["Creator", "EncryptedKey", "ScryptObject", "Version", "FeatureFlags", "LongNameMax"]
    obj = json.loads(data)
    assert obj["EncryptedKey"].endswith("==")  # 64 bytes: standard base64 keeps its padding
    assert "-" not in obj["EncryptedKey"] + obj["ScryptObject"]["Salt"]
    assert "_" not in obj["EncryptedKey"] + obj["ScryptObject"]["Salt"]


# --- wrong password -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["v1.3", "v1.1-aessiv", "v2.2-xchacha"])
def test_wrong_password(name):
    conf = ConfFile.load(str(EXAMPLES / name / "gocryptfs.conf"))
    for pw in (b"Test", b"test\n", b"test ", b"tes"):
        with pytest.raises(WrongPasswordError) as ei:
            conf.unlock(pw)
        assert ei.value.exit_code == exitcodes.PASSWORD_INCORRECT == 12


def test_tampered_encrypted_key_is_a_wrong_password():
    obj = _v13()
    blob = bytearray(base64.b64decode(obj["EncryptedKey"]))
    blob[40] ^= 1
    obj["EncryptedKey"] = base64.b64encode(bytes(blob)).decode()
    conf = _parse(obj)
    with pytest.raises(WrongPasswordError):
        conf.unlock(b"test")
