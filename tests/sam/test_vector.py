"""The sam-open version 1 test vector (tests/data/sam-vector, docs/sam-format.md §12).

(a) our reader decrypts it to exactly plain/ and reports the recorded digest;
(b) an independent decoder, written from docs/sam-format.md alone with hashlib, hmac and
    cryptography (no ``sam`` import), does the same (scrypt, key check, unwrapping of the
    random master key, content and MAC keys from it) and reproduces every recorded
    intermediate value, so our encoder is never the only check of our decoder;
(c) the manifest bytes are canonical by the documented rule (§5.3).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.support import DATA, run_cli

VECTOR = DATA / "sam-vector"
PACKAGE = VECTOR / "vector-key-0001"
PLAIN = VECTOR / "plain"
KEY = b"open-sesame"
KEY_ID = "vector-key-0001"
DIGEST = "sha256:cce1f738694437519d80db108f2405f53cd8bfd115bf42b59f8fa044878130e3"
PLAIN_SHA256 = {
    "config.json": "73813002bc50aec8ad4708e8cda7b496fe3ece84bfc4de89a6945a860b2fae98",
    "empty": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "tokenizer.json": "b5b5861eb66b8736a6fcdfa9c3b55d2309ce24359873adec14d0a9ffd42fecf8",
    "tokenizer/größe.txt": "e88f72f8e0e9962d36a5686d835261ee6b2b7fc89e2cbf54505290a6319fc0eb",
    "weights.bin": "237356e18b503616912abb8ffaed3a72591e397d4ac294c4637917d48a3f529d",
}
PACKAGE_ID = "aa8418abe7b283341264bf14fa36bb78"
# Intermediate values, as recorded in tests/data/sam-vector/README.md.
SEED = "103f5d6afaeba2f735508226fad0b4a723d9a05cec0956219615124f4863081d"
KEY_WRAP_KEY = "27a4842d82a1e9a56a3037b844f0b7e0bdbe27dde90f0c2ace5037ed3236c66f"
KEY_CHECK = "29ce63ac043ba71eaeecdd50fad05065eaacd57d1fc90c908c04237c3a6af9c6"
WRAP_AAD = ("73616d2d6f70656e2f31206d6173746572206b657900" "766563746f722d6b65792d30303031" "00"
            + PACKAGE_ID)
MASTER_KEY = "5a17df4dfb7f9051618268edd1c7ee272720e7a9508daad5a88ce4d2f393f46b"
CONTENT_KEY = "3a5919468cc6e45044d2fb625035fd45408f93e29422082395e2bcf33cf49b89"
MAC_KEY = "abd921dab184ebb63c8fe3d4ca3a42eabb9c42b94e65c64ef18c986f031fc772"
MAC = "6d949dcd42e950d1081c02c3d69072b737362d73d8e1d7ce5e14a5e8d745da21"
WEIGHTS_FILE_ID = "51c0d624a163bfef4dccb07678bbf0c6"
CHUNK_AAD = PACKAGE_ID + "0000000000000001" + WEIGHTS_FILE_ID + "01"  # weights.bin, chunk 1 (the last)
README_VALUES = [SEED, KEY_WRAP_KEY, KEY_CHECK, MASTER_KEY, CONTENT_KEY, MAC_KEY, MAC, PACKAGE_ID,
                 WEIGHTS_FILE_ID]


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` by its "/"-separated relative path (no symlinks, no specials)."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            assert stat.S_ISREG(path.lstat().st_mode), path
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def test_plain_is_the_recorded_plaintext():
    files = tree(PLAIN)
    assert {p: hashlib.sha256(d).hexdigest() for p, d in files.items()} == PLAIN_SHA256
    assert files["weights.bin"] == bytes(i % 251 for i in range(65537))
    readme = (VECTOR / "README.md").read_text(encoding="utf-8")
    for value in [DIGEST, KEY.decode(), KEY_ID, *README_VALUES, *PLAIN_SHA256.values()]:
        assert value in readme
    squeezed = readme.replace("` `", "")  # the README splits long values into `groups`
    assert WRAP_AAD in squeezed and CHUNK_AAD in squeezed


# (a) our reader ---------------------------------------------------------------------------------


@pytest.mark.parametrize("block_path", ["auto", "python"])
def test_our_reader_decrypts_the_vector(tmp_path, block_path):
    from sam.package import Package
    from sam.unpack import unpack

    pkg = Package.open(str(PACKAGE))
    assert pkg.digest == DIGEST
    assert pkg.manifest.key_id == KEY_ID
    unlocked = pkg.unlock(KEY, block_path)
    problems: list[str] = []
    assert unlocked.verify(problems.append) == [] and problems == []
    plain = tree(PLAIN)
    assert sorted(f.path for f in pkg.manifest.files) == sorted(plain)
    for entry in pkg.manifest.files:
        with unlocked.open(entry.path) as f:
            assert f.read(0, entry.size + 10) == plain[entry.path]
            assert f.read(65535, 3) == plain[entry.path][65535:65538]  # across the chunk edge

    out = tmp_path / "out"
    unpack(unlocked, str(out), progress=False)
    assert tree(out) == plain
    for entry in pkg.manifest.files:
        assert entry.mode == 0o644
        assert stat.S_IMODE((out / entry.path).stat().st_mode) == entry.mode


def test_info_json_reports_the_recorded_digest():
    r = run_cli("info", "--json", PACKAGE, module="sam")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["digest"] == DIGEST and info["key_id"] == KEY_ID and info["version"] == 1


# (b) an independent decoder, from docs/sam-format.md only ------------------------------------------


class DecodeError(Exception):
    pass


def hkdf_sha256(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 with no salt (an empty HMAC key; the same PRK as 32 zero bytes)."""
    prk = hmac.new(b"", ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def subkey(secret: bytes, purpose: str, manifest: dict) -> bytes:
    """§4.2: HKDF-SHA256 with info "sam-open/1 " || purpose || NUL || key ID."""
    info = b"sam-open/1 " + purpose.encode() + b"\x00" + manifest["key_id"].encode("ascii")
    return hkdf_sha256(secret, info)


def derive(key: bytes, manifest: dict) -> dict[str, bytes]:
    """§4.1-4.2: scrypt with the stored parameters, then the key-wrap key and the key check value."""
    kdf = manifest["kdf"]
    if kdf["name"] != "scrypt":
        raise DecodeError("kdf")
    n = 2 ** kdf["log_n"]
    seed = hashlib.scrypt(key, salt=bytes.fromhex(kdf["salt"]), n=n, r=kdf["r"], p=kdf["p"], dklen=32,
                          maxmem=256 * kdf["r"] * (n + kdf["p"] + 2))
    return {"seed": seed, "key wrap": subkey(seed, "key wrap", manifest),
            "key check": subkey(seed, "key check", manifest)}


def wrap_aad(manifest: dict) -> bytes:
    """§4.3: "sam-open/1 master key" || NUL || key ID || NUL || package ID (16 raw bytes)."""
    return (b"sam-open/1 master key\x00" + manifest["key_id"].encode("ascii") + b"\x00"
            + bytes.fromhex(manifest["package_id"]))


def unwrap_master_key(wrap_key: bytes, manifest: dict) -> bytes:
    """§4.3: wrapped_key is nonce (12) | ciphertext (32) | tag (16), AES-256-GCM under the key-wrap key."""
    wrapped = bytes.fromhex(manifest["wrapped_key"])
    if len(wrapped) != 60:
        raise DecodeError("wrapped key length")
    try:
        return AESGCM(wrap_key).decrypt(wrapped[:12], wrapped[12:], wrap_aad(manifest))
    except InvalidTag:
        raise DecodeError("wrapped key does not open") from None


def package_keys(master: bytes, manifest: dict) -> dict[str, bytes]:
    """§4.2: the content key and the MAC key come from the master key, not from the plaintext key."""
    return {purpose: subkey(master, purpose, manifest) for purpose in ("content", "manifest mac")}


def unlock(key: bytes, manifest: dict) -> dict[str, bytes]:
    """§9 steps 7-8: key check first (a wrong key), then the master key (a tampered manifest)."""
    keys = derive(key, manifest)
    if not hmac.compare_digest(keys["key check"], bytes.fromhex(manifest["key_check"])):
        raise DecodeError("wrong key")
    keys["master"] = unwrap_master_key(keys["key wrap"], manifest)
    keys.update(package_keys(keys["master"], manifest))
    return keys


def aad(package_id: bytes, index: int, file_id: bytes, last: bool) -> bytes:
    """§8: package ID (16) | be64 chunk index (8) | file ID (16) | last flag (1)."""
    return package_id + index.to_bytes(8, "big") + file_id + (b"\x01" if last else b"\x00")


def independent_decode(package: Path, key: bytes) -> tuple[str, dict[str, bytes]]:
    """Return (digest, {path: plaintext}); raise DecodeError on any failed check."""
    raw = (package / ".sam" / "manifest.json").read_bytes()
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    manifest = json.loads(raw.decode("utf-8"))
    if manifest["format"] != "sam-open" or type(manifest["version"]) is not int or manifest["version"] != 1:
        raise DecodeError("not sam-open version 1")
    keys = unlock(key, manifest)
    mac = hmac.new(keys["manifest mac"], raw, hashlib.sha256).hexdigest().encode() + b"\n"
    if not hmac.compare_digest(mac, (package / ".sam" / "manifest.mac").read_bytes()):
        raise DecodeError("manifest MAC")
    cipher = manifest["cipher"]
    if (cipher["name"], cipher["nonce_len"], cipher["tag_len"], cipher["header_len"]) != \
            ("AES-256-GCM", 12, 16, 24):
        raise DecodeError("cipher")
    chunk = cipher["chunk_size"]
    on_disk = set(tree(package)) - {".sam/manifest.json", ".sam/manifest.mac"}
    if on_disk != {f["path"] for f in manifest["files"]}:
        raise DecodeError(f"file set {sorted(on_disk)}")
    gcm = AESGCM(keys["content"])
    package_id = bytes.fromhex(manifest["package_id"])
    out = {}
    for entry in manifest["files"]:
        data = (package / entry["path"]).read_bytes()
        file_id = bytes.fromhex(entry["id"])
        n = -(-entry["size"] // chunk)
        if len(data) != 24 + entry["size"] + 28 * n:
            raise DecodeError(f"{entry['path']}: size")
        if data[:8] != b"samopen1" or data[8:24] != file_id:
            raise DecodeError(f"{entry['path']}: header")
        plain = bytearray()
        for i in range(n):
            sealed = data[24 + i * (chunk + 28) : 24 + (i + 1) * (chunk + 28)]
            if not any(sealed[:12]) or (len(sealed) == chunk + 28 and not any(sealed)):
                raise DecodeError(f"{entry['path']}: zero nonce or hole")
            try:
                plain += gcm.decrypt(sealed[:12], sealed[12:], aad(package_id, i, file_id, i == n - 1))
            except InvalidTag:
                raise DecodeError(f"{entry['path']}: chunk {i}") from None
        out[entry["path"]] = bytes(plain)
    return digest, out


def test_independent_decoder_decrypts_the_vector():
    digest, files = independent_decode(PACKAGE, KEY)
    assert digest == DIGEST
    assert files == tree(PLAIN)


def test_independent_decoder_intermediate_values():
    raw = (PACKAGE / ".sam" / "manifest.json").read_bytes()
    manifest = json.loads(raw)
    assert manifest["package_id"] == PACKAGE_ID and manifest["key_check"] == KEY_CHECK
    keys = derive(KEY, manifest)
    assert keys["seed"].hex() == SEED
    assert keys["key wrap"].hex() == KEY_WRAP_KEY
    assert keys["key check"].hex() == KEY_CHECK
    assert wrap_aad(manifest).hex() == WRAP_AAD and len(wrap_aad(manifest)) == 54
    master = unwrap_master_key(keys["key wrap"], manifest)
    assert master.hex() == MASTER_KEY
    keys = package_keys(master, manifest)
    assert keys["content"].hex() == CONTENT_KEY
    assert keys["manifest mac"].hex() == MAC_KEY
    assert hmac.new(keys["manifest mac"], raw, hashlib.sha256).hexdigest() == MAC
    assert (PACKAGE / ".sam" / "manifest.mac").read_bytes() == MAC.encode() + b"\n"
    entry = next(f for f in manifest["files"] if f["path"] == "weights.bin")
    assert entry["id"] == WEIGHTS_FILE_ID
    assert aad(bytes.fromhex(PACKAGE_ID), 1, bytes.fromhex(WEIGHTS_FILE_ID), True).hex() == CHUNK_AAD


def test_content_keys_do_not_come_from_the_plaintext_key():
    """§4.2: HKDF of the scrypt seed with the content or MAC purpose is not what seals the vector."""
    manifest = json.loads((PACKAGE / ".sam" / "manifest.json").read_bytes())
    seed = derive(KEY, manifest)["seed"]
    assert subkey(seed, "content", manifest).hex() != CONTENT_KEY
    assert subkey(seed, "manifest mac", manifest).hex() != MAC_KEY


def test_independent_decoder_refuses_a_wrong_key():
    with pytest.raises(DecodeError, match="wrong key"):
        independent_decode(PACKAGE, b"open-sesamE")


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _substitute(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))


def _flip_hex_digit(field: str):
    """Change the first hex digit of a top-level manifest string (0 <-> 1, ...): still valid hex."""
    def tamper(package: Path) -> None:
        path = package / ".sam" / "manifest.json"
        value = json.loads(path.read_bytes())[field]
        _substitute(path, f'"{field}":"{value}"'.encode(),
                    f'"{field}":"{int(value[0], 16) ^ 1:x}{value[1:]}"'.encode())
    return tamper


@pytest.mark.parametrize("tamper, message", [
    (lambda p: _flip(p / "weights.bin", 24 + 65564 + 12), "weights.bin: chunk 1"),
    (lambda p: _flip(p / "config.json", 9), "config.json: header"),
    (lambda p: _flip(p / ".sam" / "manifest.json", 20), "manifest MAC"),
    (_flip_hex_digit("wrapped_key"), "wrapped key does not open"),
    (_flip_hex_digit("package_id"), "wrapped key does not open"),
    (_flip_hex_digit("key_check"), "wrong key"),
    (_flip_hex_digit("created"), "manifest MAC"),
    (lambda p: (p / "added").write_bytes(b"x"), "file set"),
    (lambda p: os.truncate(p / "weights.bin", 24 + 65564), "weights.bin: size"),
])
def test_independent_decoder_is_a_real_check(tmp_path, tamper, message):
    copy = tmp_path / KEY_ID
    shutil.copytree(PACKAGE, copy)
    tamper(copy)
    with pytest.raises(DecodeError, match=message):
        independent_decode(copy, KEY)


def test_every_aad_field_is_bound():
    """The AAD is exactly as documented: changing any field (or the last flag) fails the tag."""
    manifest = json.loads((PACKAGE / ".sam" / "manifest.json").read_bytes())
    gcm = AESGCM(unlock(KEY, manifest)["content"])
    entry = next(f for f in manifest["files"] if f["path"] == "weights.bin")
    package_id, file_id = bytes.fromhex(manifest["package_id"]), bytes.fromhex(entry["id"])
    data = (PACKAGE / "weights.bin").read_bytes()
    last = data[24 + 65564 :]  # chunk 1: nonce, one byte of ciphertext, tag
    assert len(last) == 12 + 1 + 16
    assert gcm.decrypt(last[:12], last[12:], aad(package_id, 1, file_id, True)) == bytes([65536 % 251])
    other = bytes(15) + b"\x01"
    for wrong in (aad(package_id, 1, file_id, False), aad(package_id, 0, file_id, True),
                  aad(other, 1, file_id, True), aad(package_id, 1, other, True),
                  aad(package_id, 1, file_id, True)[:-1]):
        with pytest.raises(InvalidTag):
            gcm.decrypt(last[:12], last[12:], wrong)


def test_every_field_of_the_master_key_aad_is_bound():
    """§4.3: the wrapped key opens only with the key ID and the package ID it was sealed with."""
    manifest = json.loads((PACKAGE / ".sam" / "manifest.json").read_bytes())
    wrap_key = derive(KEY, manifest)["key wrap"]
    wrapped = bytes.fromhex(manifest["wrapped_key"])
    gcm = AESGCM(wrap_key)
    good = wrap_aad(manifest)
    assert gcm.decrypt(wrapped[:12], wrapped[12:], good).hex() == MASTER_KEY
    for wrong in (wrap_aad(dict(manifest, package_id="00" * 15 + "01")),
                  wrap_aad(dict(manifest, key_id="vector-key-0002")),
                  good[:-1], good + b"\x00", good.replace(b"master key", b"master kez"),
                  good.replace(b"\x00vector", b"vector")):
        with pytest.raises(InvalidTag):
            gcm.decrypt(wrapped[:12], wrapped[12:], wrong)


# (c) canonical manifest bytes --------------------------------------------------------------------

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _string(s: str) -> str:
    return '"' + "".join(_SHORT_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 else c)
                         for c in s) + '"'


def canonical_json(value) -> str:
    """§5.3 rules 1-4, written out (not json.dumps): sorted keys, no whitespace, UTF-8 strings."""
    if isinstance(value, dict):
        members = sorted(value.items(), key=lambda kv: kv[0].encode("utf-8"))
        return "{" + ",".join(f"{_string(k)}:{canonical_json(v)}" for k, v in members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(canonical_json(v) for v in value) + "]"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise AssertionError(f"not allowed in a sam-open manifest: {value!r}")


def canonical_manifest(manifest: dict) -> bytes:
    """§5.3 rules 5-6 on top: files by the UTF-8 bytes of their path, one trailing newline."""
    manifest = dict(manifest, files=sorted(manifest["files"], key=lambda f: f["path"].encode("utf-8")))
    return canonical_json(manifest).encode("utf-8") + b"\n"


def test_vector_manifest_is_canonical():
    raw = (PACKAGE / ".sam" / "manifest.json").read_bytes()
    manifest = json.loads(raw)
    assert canonical_manifest(manifest) == raw
    assert raw.endswith(b"}\n") and raw.count(b"\n") == 1
    assert "größe".encode() in raw and b"\\u" not in raw  # UTF-8, not ASCII-escaped
    paths = [f["path"] for f in manifest["files"]]
    assert paths == ["config.json", "empty", "tokenizer.json", "tokenizer/größe.txt", "weights.bin"]
    assert set(manifest) == {"cipher", "created", "files", "format", "kdf", "key_check", "key_id",
                             "package_id", "packer", "version", "wrapped_key"}
    assert list(manifest)[-2:] == ["version", "wrapped_key"]  # sorted: "v" < "w"
    assert len(manifest["wrapped_key"]) == 120
    assert manifest["cipher"] == {"chunk_size": 65536, "header_len": 24, "name": "AES-256-GCM",
                                  "nonce_len": 12, "tag_len": 16}


def test_documented_rule_is_the_packers_encoding():
    """The written-out rule gives our packer's bytes also for names the vector does not have."""
    from sam.keys import KdfParams
    from sam.manifest import FileEntry, Manifest

    names = ["z", "A", "a.b", "a/b", "a-b", 'quo"te', "back\\slash", "tab\there", "nl\nx", "ctl\x01\x1f",
             "del\x7f", "é", "日本/語", "emoji😀", "line\u2028sep", "slash/ok", "ｚ"]
    m = Manifest(key_id=KEY_ID, package_id=bytes(range(16)), kdf=KdfParams(10, 8, 1, bytes(32)),
                 key_check=bytes(32), wrapped_key=bytes(range(60)), created="2026-01-01T00:00:00Z",
                 packer="sam test",
                 files=[FileEntry(n, i, 0o644, bytes([i + 1]) * 16) for i, n in enumerate(names)])
    raw = m.to_bytes()
    assert canonical_manifest(json.loads(raw)) == raw
    assert [f["path"] for f in json.loads(raw)["files"]] == sorted(names, key=lambda n: n.encode())


@pytest.mark.parametrize("old, new", [
    (b'"version":1,', b'"version":1.0,'),  # §11: the integer 1 only
    (b'"version":1,', b'"version":true,'),
    (b'"path":"empty"', b'"path":"\\ud800"'),  # §5.1: no lone surrogates (sam info used to crash)
    (b'"created":"', b'"created":"\\udc80'),
    (b'"package_id":"aa84', b'"package_id":"aa  '),  # §5.1: exactly [0-9a-f] (fromhex takes spaces)
    (b'"package_id":"aa84', b'"package_id":"AA84'),
    (b'"wrapped_key":"d538', b'"wrapped_key":"D538'),  # §5.1, §4.3: 120 lowercase hex digits
    (b'"wrapped_key":"d538', b'"wrapped_key":"'),  # 118 digits: 59 bytes
    (b'"wrapped_key":"d538', b'"wrapped_key":"d538d538'),  # 124 digits: 62 bytes
    (b',"wrapped_key":"d538', b',"wrapped_kez":"d538'),  # missing
])
def test_reader_refuses_what_the_document_refuses(old, new):
    from sam.errors import ManifestError
    from sam.manifest import Manifest

    raw = (PACKAGE / ".sam" / "manifest.json").read_bytes()
    assert raw.count(old) == 1
    Manifest.from_bytes(raw)
    with pytest.raises(ManifestError):
        Manifest.from_bytes(raw.replace(old, new))
