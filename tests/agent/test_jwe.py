"""JWE interop (kbs-protocol.md §3.1, §5.2, §5.3, §10): our TeeKeyPair/encrypt against jwcrypto, an
independent implementation, plus hand-built legacy bodies and the failure modes."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from agent.jwe import RSA1_5_FAILURE, JweError, TeeKeyPair, encrypt

jwcrypto_jwe = pytest.importorskip("jwcrypto.jwe")
jwcrypto_jwk = pytest.importorskip("jwcrypto.jwk")

ALGS = ["RSA1_5", "RSA-OAEP-256", "ECDH-ES+A256KW"]
PLAINTEXT = b"model key \x00\xff" + bytes(range(256))
OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
LEGACY_HEADER = '{"alg":"RSA1_5","enc":"A256GCM"}'


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def unb64u(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


@pytest.fixture(scope="module")
def keys() -> dict[str, TeeKeyPair]:
    """One key per alg (RSA keygen is slow), plus a second RSA1_5 key for wrong-key cases."""
    ks = {alg: TeeKeyPair.generate(alg) for alg in ALGS}
    ks["other-RSA1_5"] = TeeKeyPair.generate("RSA1_5")
    return ks


def jwcrypto_private(kp: TeeKeyPair):
    pem = kp.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
    return jwcrypto_jwk.JWK.from_pem(pem)


def jwcrypto_encrypt(jwk: dict, plaintext: bytes, compact: bool = False, aad: bytes | None = None) -> str:
    e = jwcrypto_jwe.JWE(plaintext, protected=json.dumps({"alg": jwk["alg"], "enc": "A256GCM"}),
                         algs=ALGS + ["A256GCM"], aad=aad)
    e.add_recipient(jwcrypto_jwk.JWK(**jwk))
    return e.serialize(compact=compact)


def hand_rfc(cek: bytes, encrypted_key: bytes, header: dict | str, plaintext: bytes = PLAINTEXT,
             gcm_aad: bytes | None = None, **extra) -> dict:
    """An RFC 7516 body built with primitives only; the GCM AAD is the protected string by default."""
    if not isinstance(header, str):
        header = b64u(json.dumps(header, separators=(",", ":")).encode())
    protected = header
    iv = bytes(range(12))
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode() if gcm_aad is None else gcm_aad)
    return {"protected": protected, "encrypted_key": b64u(encrypted_key), "iv": b64u(iv),
            "ciphertext": b64u(sealed[:-16]), "tag": b64u(sealed[-16:]), **extra}


def hand_legacy(kp: TeeKeyPair, plaintext: bytes = PLAINTEXT, cek: bytes | None = None) -> dict:
    """The §5.3 form built by hand: raw JSON protected, tag appended, no AAD, empty tag."""
    cek = cek or AESGCM.generate_key(bit_length=256)
    iv = b"\x07" * 12
    ek = kp.private_key.public_key().encrypt(cek, padding.PKCS1v15())
    return {"protected": LEGACY_HEADER, "encrypted_key": b64u(ek), "iv": b64u(iv),
            "ciphertext": b64u(AESGCM(cek).encrypt(iv, plaintext, None)), "tag": ""}


# -- §3.1 public JWK ---------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ALGS)
def test_jwk_members_exact(keys, alg):
    jwk = keys[alg].jwk()
    assert keys[alg].alg == alg and jwk["alg"] == alg
    if alg == "ECDH-ES+A256KW":
        assert list(jwk) == ["kty", "crv", "alg", "x", "y"]
        assert (jwk["kty"], jwk["crv"]) == ("EC", "P-256")
        assert len(unb64u(jwk["x"])) == 32 and len(unb64u(jwk["y"])) == 32
    else:
        assert list(jwk) == ["kty", "alg", "n", "e"]
        assert jwk["kty"] == "RSA" and jwk["e"] == "AQAB"
        n = unb64u(jwk["n"])
        assert len(n) == 256 and n[0] != 0
        assert int.from_bytes(n, "big") == keys[alg].private_key.public_key().public_numbers().n
    material = [v for k, v in jwk.items() if k in ("n", "e", "x", "y")]
    assert material and all("=" not in v and "+" not in v and "/" not in v for v in material)


def test_ec_coordinates_left_padded():
    d = 1
    while ec.derive_private_key(d, ec.SECP256R1()).public_key().public_numbers().x >> 248:
        d += 1
    kp = TeeKeyPair("ECDH-ES+A256KW", ec.derive_private_key(d, ec.SECP256R1()))
    x = unb64u(kp.jwk()["x"])
    assert len(x) == 32 and x[0] == 0


def test_generate_rejects_unknown_alg():
    for alg in ("RSA-OAEP", "ECDH-ES", "A256KW", ""):
        with pytest.raises(JweError, match="unsupported TEE key algorithm"):
            TeeKeyPair.generate(alg)


def test_key_type_must_fit_alg(keys):
    with pytest.raises(JweError, match="P-256"):
        TeeKeyPair("ECDH-ES+A256KW", keys["RSA1_5"].private_key)
    with pytest.raises(JweError, match="RSA"):
        TeeKeyPair("RSA-OAEP-256", keys["ECDH-ES+A256KW"].private_key)


def test_repr_shows_no_key_material(keys):
    assert repr(keys["RSA1_5"]) == "TeeKeyPair(alg='RSA1_5')"


# -- interop with jwcrypto ----------------------------------------------------------------------

@pytest.mark.parametrize("alg", ALGS)
def test_jwcrypto_encrypts_we_decrypt(keys, alg):
    kp = keys[alg]
    body = jwcrypto_encrypt(kp.jwk(), PLAINTEXT)
    assert kp.decrypt(body) == PLAINTEXT                       # str
    assert kp.decrypt(body.encode()) == PLAINTEXT              # bytes
    assert kp.decrypt(json.loads(body)) == PLAINTEXT           # dict


@pytest.mark.parametrize("alg", ALGS)
def test_jwcrypto_compact_as_flattened(keys, alg):
    """Compact form puts everything (epk too) in the protected header, like Trustee does."""
    kp = keys[alg]
    p, ek, iv, ct, tag = jwcrypto_encrypt(kp.jwk(), b"", compact=True).split(".")
    assert kp.decrypt({"protected": p, "encrypted_key": ek, "iv": iv, "ciphertext": ct, "tag": tag}) == b""


@pytest.mark.parametrize("alg", ALGS)
def test_we_encrypt_jwcrypto_decrypts(keys, alg):
    kp = keys[alg]
    body = encrypt(kp.jwk(), PLAINTEXT)
    token = jwcrypto_jwe.JWE(algs=ALGS + ["A256GCM"])
    token.deserialize(json.dumps(body), key=jwcrypto_private(kp))
    assert token.payload == PLAINTEXT
    assert kp.decrypt(body) == PLAINTEXT


@pytest.mark.parametrize("alg", ALGS)
def test_encrypt_output_shape_matches_trustee(keys, alg):
    body = encrypt(keys[alg].jwk(), PLAINTEXT)
    assert list(body) == ["protected", "encrypted_key", "iv", "ciphertext", "tag"]
    header = unb64u(body["protected"]).decode()
    if alg == "ECDH-ES+A256KW":
        h = json.loads(header)
        assert list(h) == ["alg", "enc", "epk"] and list(h["epk"]) == ["crv", "kty", "x", "y"]
        assert header == ('{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":{"crv":"P-256","kty":"EC",'
                          f'"x":"{h["epk"]["x"]}","y":"{h["epk"]["y"]}"}}}}')
        assert len(unb64u(h["epk"]["x"])) == 32 and len(unb64u(body["encrypted_key"])) == 40
    else:
        assert header == f'{{"alg":"{alg}","enc":"A256GCM"}}'
        assert len(unb64u(body["encrypted_key"])) == 256
    assert len(unb64u(body["iv"])) == 12 and len(unb64u(body["tag"])) == 16
    assert len(unb64u(body["ciphertext"])) == len(PLAINTEXT)
    assert encrypt(keys[alg].jwk(), PLAINTEXT)["iv"] != body["iv"]       # fresh IV and CEK each time


def test_ecdh_independent_concat_kdf(keys):
    """ECDH-ES+A256KW body built with cryptography's own ConcatKDFHash and key wrap."""
    kp = keys["ECDH-ES+A256KW"]
    eph = ec.generate_private_key(ec.SECP256R1())
    z = eph.exchange(ec.ECDH(), kp.private_key.public_key())
    other = (14).to_bytes(4, "big") + b"ECDH-ES+A256KW" + bytes(8) + (256).to_bytes(4, "big")
    kek = ConcatKDFHash(hashes.SHA256(), 32, other).derive(z)
    cek = AESGCM.generate_key(bit_length=256)
    n = eph.public_key().public_numbers()
    header = {"alg": "ECDH-ES+A256KW", "enc": "A256GCM",
              "epk": {"crv": "P-256", "kty": "EC", "x": b64u(n.x.to_bytes(32, "big")),
                      "y": b64u(n.y.to_bytes(32, "big"))}}
    assert kp.decrypt(hand_rfc(cek, aes_key_wrap(kek, cek), header)) == PLAINTEXT


# -- AAD -----------------------------------------------------------------------------------------

def test_aad_vector_from_kbs_types():
    assert b64u(b'{"alg":"fakealg","enc":"fakeenc"}') == "eyJhbGciOiJmYWtlYWxnIiwiZW5jIjoiZmFrZWVuYyJ9"


def test_kbs_types_sample_bodies_rejected_cleanly(keys):
    body = {"protected": "eyJhbGciOiJmYWtlYWxnIiwiZW5jIjoiZmFrZWVuYyJ9", "encrypted_key": "ZmFrZWtleQ",
            "iv": "cmFuZG9tZGF0YQ", "ciphertext": "ZmFrZWVuY291dHB1dA", "tag": "ZmFrZXRhZw"}
    with pytest.raises(JweError, match="unsupported JWE alg 'fakealg'"):
        keys["RSA1_5"].decrypt(body)


def test_aad_is_protected_string_as_received(keys):
    """Header JSON with odd spacing/order: the AAD must be the received text, not a re-serialisation."""
    kp = keys["RSA-OAEP-256"]
    cek = AESGCM.generate_key(bit_length=256)
    ek = kp.private_key.public_key().encrypt(cek, OAEP)
    protected = b64u(b'{ "enc" : "A256GCM", "alg" : "RSA-OAEP-256" }\n')
    assert kp.decrypt(hand_rfc(cek, ek, protected)) == PLAINTEXT
    decoded_aad = unb64u(protected)
    with pytest.raises(JweError, match="tag mismatch"):
        kp.decrypt(hand_rfc(cek, ek, protected, gcm_aad=decoded_aad))


def test_aad_member_rfc7516(keys):
    kp = keys["RSA-OAEP-256"]
    cek = AESGCM.generate_key(bit_length=256)
    ek = kp.private_key.public_key().encrypt(cek, OAEP)
    protected = b64u(b'{"alg":"RSA-OAEP-256","enc":"A256GCM"}')
    aad = b64u(b"extra authenticated")
    good = hand_rfc(cek, ek, protected, gcm_aad=f"{protected}.{aad}".encode(), aad=aad)
    assert kp.decrypt(good) == PLAINTEXT
    without = hand_rfc(cek, ek, protected, aad=aad)          # GCM AAD lacks ".aad"
    with pytest.raises(JweError, match="tag mismatch"):
        kp.decrypt(without)
    with pytest.raises(JweError, match="tag mismatch"):
        kp.decrypt({**good, "aad": b64u(b"other")})
    with pytest.raises(JweError, match="aad"):
        kp.decrypt({**good, "aad": "a"})                      # impossible base64 length
    with pytest.raises(JweError, match="'aad' must be a string"):
        kp.decrypt({**good, "aad": 5})


@pytest.mark.parametrize("alg", ALGS)
def test_aad_member_from_jwcrypto(keys, alg):
    body = jwcrypto_encrypt(keys[alg].jwk(), PLAINTEXT, aad=b"bound")
    assert "aad" in json.loads(body)
    assert keys[alg].decrypt(body) == PLAINTEXT


# -- legacy §5.3 ---------------------------------------------------------------------------------

def test_legacy_hand_built_decrypts(keys):
    assert keys["RSA1_5"].decrypt(hand_legacy(keys["RSA1_5"])) == PLAINTEXT
    assert keys["RSA1_5"].decrypt(json.dumps(hand_legacy(keys["RSA1_5"], b""))) == b""


def test_legacy_encrypt_decrypted_by_hand(keys):
    kp = keys["RSA1_5"]
    body = encrypt(kp.jwk(), PLAINTEXT, legacy=True)
    assert list(body) == ["protected", "encrypted_key", "iv", "ciphertext", "tag"]
    assert body["protected"] == LEGACY_HEADER and body["tag"] == ""
    cek = kp.private_key.decrypt(unb64u(body["encrypted_key"]), padding.PKCS1v15())
    assert len(cek) == 32
    assert AESGCM(cek).decrypt(unb64u(body["iv"]), unb64u(body["ciphertext"]), None) == PLAINTEXT
    assert kp.decrypt(body) == PLAINTEXT


def test_legacy_rejects_non_rsa1_5(keys):
    with pytest.raises(JweError, match="legacy"):
        encrypt(keys["RSA-OAEP-256"].jwk(), b"x", legacy=True)
    body = {**hand_legacy(keys["RSA1_5"]), "protected": '{"alg":"RSA-OAEP-256","enc":"A256GCM"}'}
    with pytest.raises(JweError, match="only alg RSA1_5"):
        keys["RSA-OAEP-256"].decrypt(body)
    with pytest.raises(JweError, match="does not match"):
        keys["ECDH-ES+A256KW"].decrypt(hand_legacy(keys["RSA1_5"]))


def test_legacy_malformed(keys):
    kp = keys["RSA1_5"]
    body = hand_legacy(kp)
    with pytest.raises(JweError, match="empty tag"):
        kp.decrypt({**body, "tag": b64u(bytes(16))})
    with pytest.raises(JweError, match="truncated"):
        kp.decrypt({**body, "ciphertext": b64u(bytes(15))})
    for broken in ('{"alg":"RSA1_5",', "{" + '"a":[' * 100_000, '{"alg":"RSA1_5","enc":"A256GCM"\ud800'):
        with pytest.raises(JweError, match="legacy protected header is not valid JSON"):
            kp.decrypt({**body, "protected": broken})
    with pytest.raises(JweError, match="unsupported JWE enc"):
        kp.decrypt({**body, "protected": '{"alg":"RSA1_5","enc":"A128GCM"}'})
    with pytest.raises(JweError) as e:                      # legacy has no AAD: a tagged-with-AAD body fails
        cek = AESGCM.generate_key(bit_length=256)
        ek = kp.private_key.public_key().encrypt(cek, padding.PKCS1v15())
        ct = AESGCM(cek).encrypt(b"\x07" * 12, PLAINTEXT, LEGACY_HEADER.encode())
        kp.decrypt({**body, "encrypted_key": b64u(ek), "ciphertext": b64u(ct)})
    assert str(e.value) == RSA1_5_FAILURE


# -- negative cases ----------------------------------------------------------------------------

@pytest.mark.parametrize("member", ["protected", "encrypted_key", "iv", "ciphertext", "tag"])
def test_missing_member(keys, member):
    body = encrypt(keys["RSA-OAEP-256"].jwk(), PLAINTEXT)
    del body[member]
    with pytest.raises(JweError, match=f"no '{member}' member"):
        keys["RSA-OAEP-256"].decrypt(body)


@pytest.mark.parametrize("member", ["protected", "encrypted_key", "iv", "ciphertext", "tag"])
@pytest.mark.parametrize("bad", ["a", "ab!c", "ab+/", 17, None])
def test_garbled_member(keys, member, bad):
    body = encrypt(keys["ECDH-ES+A256KW"].jwk(), PLAINTEXT)
    body[member] = bad
    with pytest.raises(JweError, match=member):
        keys["ECDH-ES+A256KW"].decrypt(body)


@pytest.mark.parametrize("alg", ALGS)
def test_truncated_iv_and_tag(keys, alg):
    body = encrypt(keys[alg].jwk(), PLAINTEXT)
    with pytest.raises(JweError, match="iv must be 12 bytes"):
        keys[alg].decrypt({**body, "iv": b64u(unb64u(body["iv"])[:11])})
    with pytest.raises(JweError, match="tag must be 16 bytes"):
        keys[alg].decrypt({**body, "tag": b64u(unb64u(body["tag"])[:15])})


@pytest.mark.parametrize("alg", ["RSA-OAEP-256", "ECDH-ES+A256KW"])
def test_bad_tag_and_tampered_ciphertext(keys, alg):
    body = encrypt(keys[alg].jwk(), PLAINTEXT)
    tag = bytearray(unb64u(body["tag"]))
    tag[0] ^= 1
    with pytest.raises(JweError, match="tag mismatch"):
        keys[alg].decrypt({**body, "tag": b64u(bytes(tag))})
    ct = bytearray(unb64u(body["ciphertext"]))
    ct[-1] ^= 0x80
    with pytest.raises(JweError, match="tag mismatch"):
        keys[alg].decrypt({**body, "ciphertext": b64u(bytes(ct))})


def test_wrong_alg_for_key(keys):
    body = encrypt(keys["RSA-OAEP-256"].jwk(), PLAINTEXT)
    with pytest.raises(JweError, match="does not match this TEE key's alg 'RSA1_5'"):
        keys["RSA1_5"].decrypt(body)
    body = encrypt(keys["ECDH-ES+A256KW"].jwk(), PLAINTEXT)
    with pytest.raises(JweError, match="does not match"):
        keys["RSA-OAEP-256"].decrypt(body)


@pytest.mark.parametrize("header,match", [
    ({"alg": "RSA-OAEP", "enc": "A256GCM"}, "unsupported JWE alg 'RSA-OAEP'"),
    ({"alg": "RSA-OAEP-256", "enc": "A128GCM"}, "unsupported JWE enc 'A128GCM'"),
    ({"alg": "RSA-OAEP-256", "enc": "A256CBC-HS512"}, "unsupported JWE enc"),
    ({"enc": "A256GCM"}, "no 'alg'"),
    ({"alg": "RSA-OAEP-256"}, "no 'enc'"),
    ({"alg": "RSA-OAEP-256", "enc": "A256GCM", "zip": "DEF"}, "compression"),
    ({"alg": "RSA-OAEP-256", "enc": "A256GCM", "crit": ["exp"]}, "crit"),
])
def test_unsupported_headers(keys, header, match):
    kp = keys["RSA-OAEP-256"]
    cek = AESGCM.generate_key(bit_length=256)
    with pytest.raises(JweError, match=match):
        kp.decrypt(hand_rfc(cek, kp.private_key.public_key().encrypt(cek, OAEP), header))


@pytest.mark.parametrize("protected,match", [
    (b64u(b"not json"), "protected header is not valid JSON"),
    (b64u(b'["alg"]'), "protected header must be a JSON object"),
    (b64u(b"\xff\xfe"), "protected header is not valid JSON"),
])
def test_protected_not_a_json_object(keys, protected, match):
    body = {**encrypt(keys["RSA-OAEP-256"].jwk(), b"x"), "protected": protected}
    with pytest.raises(JweError, match=match):
        keys["RSA-OAEP-256"].decrypt(body)


def test_header_union_and_duplicates(keys):
    body = json.loads(jwcrypto_encrypt(keys["ECDH-ES+A256KW"].jwk(), PLAINTEXT))
    assert "epk" in body["header"]          # jwcrypto keeps epk in the per-recipient header
    dup = {**body, "header": {**body["header"], "alg": "ECDH-ES+A256KW"}}
    with pytest.raises(JweError, match="more than once"):
        keys["ECDH-ES+A256KW"].decrypt(dup)
    with pytest.raises(JweError, match="'header' must be a JSON object"):
        keys["ECDH-ES+A256KW"].decrypt({**body, "header": "x"})
    no_epk = {k: v for k, v in body.items() if k != "header"}
    with pytest.raises(JweError, match="no 'epk'"):
        keys["ECDH-ES+A256KW"].decrypt(no_epk)


def test_wrong_key(keys):
    with pytest.raises(JweError, match="RSA-OAEP-256 decryption of encrypted_key failed"):
        foreign = keys["RSA-OAEP-256"].jwk() | {"n": keys["RSA1_5"].jwk()["n"]}
        keys["RSA-OAEP-256"].decrypt(encrypt(foreign, b"x"))
    other_ec = TeeKeyPair.generate("ECDH-ES+A256KW")
    with pytest.raises(JweError, match="key unwrap"):
        keys["ECDH-ES+A256KW"].decrypt(encrypt(other_ec.jwk(), b"x"))


def test_ecdh_epk_and_key_size_errors(keys):
    kp = keys["ECDH-ES+A256KW"]
    body = encrypt(kp.jwk(), PLAINTEXT)
    header = json.loads(unb64u(body["protected"]))

    def with_header(h):
        return {**body, "protected": b64u(json.dumps(h).encode())}

    epk = header["epk"]
    off_curve_y = b64u((int.from_bytes(unb64u(epk["y"]), "big") ^ 1).to_bytes(32, "big"))
    cases = [
        ({**epk, "crv": "P-384"}, "P-256"),
        ({**epk, "kty": "OKP"}, "P-256"),
        ({k: v for k, v in epk.items() if k != "y"}, "no 'y'"),
        ({**epk, "x": b64u(unb64u(epk["x"])[1:])}, "epk.x must be 32 bytes"),
        ({**epk, "y": off_curve_y}, "not a point"),
        ({**epk, "x": "!!"}, "epk.x"),
    ]
    for bad, match in cases:
        with pytest.raises(JweError, match=match):
            kp.decrypt(with_header({**header, "epk": bad}))
    with pytest.raises(JweError, match="'epk' object"):
        kp.decrypt(with_header({**header, "epk": "x"}))
    with pytest.raises(JweError, match="encrypted_key must be 40 bytes"):
        kp.decrypt({**body, "encrypted_key": b64u(unb64u(body["encrypted_key"])[:32])})


def test_wrong_cek_size_non_rsa1_5(keys):
    kp = keys["RSA-OAEP-256"]
    short = bytes(16)
    body = hand_rfc(bytes(32), kp.private_key.public_key().encrypt(short, OAEP),
                    {"alg": "RSA-OAEP-256", "enc": "A256GCM"})
    with pytest.raises(JweError, match="16 bytes; A256GCM needs 32"):
        kp.decrypt(body)


def test_rsa1_5_failures_all_read_the_same(keys):
    kp = keys["RSA1_5"]
    good = encrypt(kp.jwk(), PLAINTEXT)
    assert kp.decrypt(good) == PLAINTEXT
    ek = unb64u(good["encrypted_key"])
    flipped = bytearray(ek)
    flipped[5] ^= 0xFF
    tag = bytearray(unb64u(good["tag"]))
    tag[3] ^= 1
    cek16 = bytes(16)
    wrong_size = hand_rfc(AESGCM.generate_key(bit_length=256),
                          kp.private_key.public_key().encrypt(cek16, padding.PKCS1v15()),
                          {"alg": "RSA1_5", "enc": "A256GCM"})
    bodies = [
        encrypt(keys["other-RSA1_5"].jwk(), PLAINTEXT),                 # wrong key
        {**good, "encrypted_key": b64u(bytes(flipped))},               # garbled padding
        {**good, "encrypted_key": b64u(ek[:-1])},                      # truncated
        {**good, "encrypted_key": ""},                                 # empty
        {**good, "tag": b64u(bytes(tag))},                             # bad tag
        wrong_size,                                                    # CEK of the wrong size
        encrypt(keys["other-RSA1_5"].jwk(), PLAINTEXT, legacy=True),   # legacy, wrong key
    ]
    messages = set()
    for body in bodies:
        with pytest.raises(JweError) as e:
            kp.decrypt(body)
        messages.add(str(e.value))
    assert messages == {RSA1_5_FAILURE}


@pytest.mark.parametrize("body", [
    "[]", "null", "42", '"string"', "not json", b"\xff\xfe", b"", 42, None, ["protected"], 1.5,
    "[" * 100_000, b"{" + b'"a":{' * 100_000,
])
def test_non_dict_bodies(keys, body):
    with pytest.raises(JweError, match="JWE body"):
        keys["RSA1_5"].decrypt(body)


@pytest.mark.parametrize("jwk,match", [
    ({"kty": "RSA", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"}, "unsupported tee-pubkey"),
    ({"kty": "EC", "crv": "P-521", "alg": "ECDH-ES+A256KW", "x": "AA", "y": "AA"}, "P-256"),
    ({"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": b64u(bytes(32))}, "lacks 'y'"),
    ({"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": b64u(bytes(32)), "y": b64u(bytes(32))},
     "not a point"),
    ({"kty": "RSA", "alg": "RSA1_5", "n": "***", "e": "AQAB"}, "jwk.n"),
    ({"kty": "RSA", "alg": "RSA1_5", "e": "AQAB"}, "lacks n"),
    ({"kty": "RSA", "alg": "RSA1_5", "n": b64u(b"\xc5" * 64), "e": "AQAB"}, "2048"),
    ("not a dict", "JSON object"),
])
def test_encrypt_rejects_bad_jwk(jwk, match):
    with pytest.raises(JweError, match=match):
        encrypt(jwk, b"x")


def test_encrypt_requires_bytes(keys):
    with pytest.raises(TypeError):
        encrypt(keys["RSA1_5"].jwk(), "text")
