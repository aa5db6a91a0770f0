"""Report-data binding (kbs-protocol.md §3.3, §10) and the kbs:// resource URI mapping (§5.1)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agent.binding import (
    canon,
    kbs_resource_path,
    runtime_data_digest,
    sample_report_data,
    tdx_report_data,
)
from agent.jwe import TeeKeyPair

# §3.3 worked example: the P-256 generator point as the key, nonce = bytes 0..31
NONCE = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
JWK_G = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW",
         "x": "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",
         "y": "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"}
CANON_M = ('{"additional-evidence":"","nonce":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",'
           '"tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC",'
           '"x":"axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",'
           '"y":"T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"}}')
SHA384_M = ("9edc01b09e997f6578d6bd8f7fc2b28dfaaf4e5417793667b7ece025d50c7cf5"
            "b9b0f7d2bbbcebe25d2f53bd33807ce3")
SAMPLE_M = "ntwBsJ6Zf2V41r2Pf8KyjfqvTlQXeTZnt+zgJdUMfPW5sPfSu7zr4l0vU70zgHzj"
SHA384_L = ("1f0628a69ac132453783cfa3e29bec54eb45ad7eabd5794753cf0bf05ecbf2cd"
            "c01d1820149a324d16a031e1f130788f")


# -- §3.3 worked example -----------------------------------------------------------------------

def test_worked_example_key_is_the_generator_point():
    """The example's JWK really is G, encoded by our TeeKeyPair the way §3.1 prescribes."""
    kp = TeeKeyPair("ECDH-ES+A256KW", ec.derive_private_key(1, ec.SECP256R1()))
    assert kp.jwk() == JWK_G


def test_worked_example_canon_bytes():
    assert canon({"additional-evidence": "", "nonce": NONCE, "tee-pubkey": JWK_G}) == CANON_M.encode()


def test_worked_example_dialect_m():
    d = runtime_data_digest("0.4.0", NONCE, JWK_G)
    assert d.hex() == SHA384_M
    assert hashlib.sha384(CANON_M.encode()).hexdigest() == SHA384_M
    assert sample_report_data(d) == SAMPLE_M
    rd = tdx_report_data(d)
    assert len(rd) == 64 and rd == bytes.fromhex(SHA384_M) + bytes(16)


@pytest.mark.parametrize("dialect", ["0.1.0", "0.1.1", "0.2.0"])
def test_worked_example_l0_l1(dialect):
    assert runtime_data_digest(dialect, NONCE, JWK_G).hex() == SHA384_L


def test_key_insertion_order_does_not_matter():
    reordered = dict(reversed(list(JWK_G.items())))
    assert runtime_data_digest("0.4.0", NONCE, reordered).hex() == SHA384_M


# -- §10 structured runtime data vector ----------------------------------------------------------

def test_structured_runtime_data_vector():
    c = canon({"b": 1, "a": "test", "c": {"d": "e"}})
    assert c == b'{"a":"test","b":1,"c":{"d":"e"}}'
    assert hashlib.sha384(c).hexdigest() == (
        "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c"
        "4597480a186427c813ca941da78870c3")


def test_canon_non_ascii_is_raw_utf8_and_nan_rejected():
    assert canon({"k": "é", "a": [1, {"z": 0, "y": None}]}) == '{"a":[1,{"y":null,"z":0}],"k":"é"}'.encode()
    with pytest.raises(ValueError):
        canon({"x": float("nan")})


# -- hash selection, additional evidence, key checks ---------------------------------------------

@pytest.mark.parametrize("alg,size", [("sha256", 32), ("sha384", 48), ("sha512", 64), ("SHA512", 64)])
def test_selected_hash_algorithm(alg, size):
    d = runtime_data_digest("0.4.0", NONCE, JWK_G, hash_alg=alg)
    assert len(d) == size
    assert d == hashlib.new(alg.lower(), CANON_M.encode()).digest()


@pytest.mark.parametrize("alg", ["sm3", "md5", "sha1", "", None])
def test_unsupported_hash_algorithm(alg):
    with pytest.raises(ValueError, match="hash algorithm"):
        runtime_data_digest("0.4.0", NONCE, JWK_G, hash_alg=alg)


def test_additional_evidence_is_bound_in_dialect_m():
    extra = '{"nvidia":{"x":1}}'
    d = runtime_data_digest("0.4.0", NONCE, JWK_G, additional_evidence=extra)
    expect = canon({"additional-evidence": extra, "nonce": NONCE, "tee-pubkey": JWK_G})
    assert d == hashlib.sha384(expect).digest()
    assert d.hex() != SHA384_M


def test_additional_evidence_rejected_in_old_dialects():
    with pytest.raises(ValueError, match="additional evidence"):
        runtime_data_digest("0.1.0", NONCE, JWK_G, additional_evidence="{}")


@pytest.mark.parametrize("dialect", ["0.3.0", "0.4.1", "", "v0.4.0"])
def test_unknown_dialect(dialect):
    with pytest.raises(ValueError, match="dialect"):
        runtime_data_digest(dialect, NONCE, JWK_G)


@pytest.mark.parametrize("jwk", [
    {**JWK_G, "kid": "k1"},                                  # extra member breaks the server-side hash
    {k: v for k, v in JWK_G.items() if k != "alg"},          # missing member
    {"kty": "oct", "k": "AAAA"},                              # unknown key type
    "not a dict",
])
def test_tee_pubkey_member_set_enforced(jwk):
    with pytest.raises(ValueError, match="tee-pubkey"):
        runtime_data_digest("0.4.0", NONCE, jwk)


def test_nonce_must_be_string():
    with pytest.raises(ValueError, match="nonce"):
        runtime_data_digest("0.4.0", base64.b64decode(NONCE), JWK_G)


def test_rsa_jwk_accepted():
    jwk = {"kty": "RSA", "alg": "RSA1_5", "n": "AQAB", "e": "AQAB"}
    expect = hashlib.sha384(canon({"nonce": NONCE, "tee-pubkey": jwk})).digest()
    assert runtime_data_digest("0.1.0", NONCE, jwk) == expect


# -- report_data placement -----------------------------------------------------------------------

def test_tdx_report_data_pad_and_truncate():
    assert tdx_report_data(b"\x01" * 32) == b"\x01" * 32 + bytes(32)
    assert tdx_report_data(bytes(range(64))) == bytes(range(64))
    assert tdx_report_data(bytes(range(70))) == bytes(range(64))
    with pytest.raises(TypeError):
        tdx_report_data("ab")


def test_sample_report_data_is_padded_standard_base64():
    d = bytes([0xfb, 0xff]) + bytes(30)   # 32 bytes: needs one "=", and shows "+" and "/"
    s = sample_report_data(d)
    assert s.endswith("=") and s.startswith("+/")
    assert base64.b64decode(s, validate=True) == d


# -- kbs:// URIs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("uri,path", [
    ("kbs:///default/aliyun/my_secret", "default/aliyun/my_secret"),
    ("kbs://10.0.0.1:8080/default/key/1", "default/key/1"),
    ("kbs://kbs.example.com/repo/type/tag.v1", "repo/type/tag.v1"),
    ("kbs:///a-b/_c/d.e-f", "a-b/_c/d.e-f"),
    ("kbs:///default/key/1?version=2&x=y", "default/key/1?version=2&x=y"),
    ("kbs:///default/key/1?", "default/key/1"),
])
def test_kbs_resource_path_valid(uri, path):
    assert kbs_resource_path(uri) == path


@pytest.mark.parametrize("uri", [
    "kbs:///default/key",            # 2 segments (old-server shorthand is not produced)
    "kbs:///a/b/c/d",                # 4 segments
    "kbs:///a/b/c/",                 # trailing slash
    "kbs:///a//c",                   # empty segment
    "kbs:///.a/b/c",                 # leading dot
    "kbs:///a/b%20/c",               # percent-encoding
    "kbs:///a/b/c#frag",
    "kbs://host",                    # no path at all
    "kbs:/a/b/c",
    "https://host/a/b/c",
    "kbs+plugin:///a/b",
    "default/key/1",
    "",
])
def test_kbs_resource_path_invalid(uri):
    with pytest.raises(ValueError, match=r"kbs:///<repository>/<type>/<tag>"):
        kbs_resource_path(uri)


def test_kbs_resource_path_non_string():
    with pytest.raises(ValueError, match="kbs:///"):
        kbs_resource_path(b"kbs:///a/b/c")
