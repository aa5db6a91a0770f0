"""Report-data binding and the kbs:// resource URI mapping, as the Trustee KBS protocol defines them.

The KBS rebuilds the runtime-data JSON from the session nonce and its own re-serialisation of the
tee-pubkey, hashes its canonical form and requires the evidence to carry that hash. Every byte
here therefore has to match what the server computes, or attestation fails with no useful detail.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from .b64 import b64encode
from .protocol import DIALECTS, LATEST

__all__ = ["DIALECTS", "HASH_ALGORITHMS", "canon", "kbs_resource_path", "runtime_data_digest",
           "sample_report_data", "tdx_report_data"]

HASH_ALGORITHMS = ("sha256", "sha384", "sha512")
TDX_REPORT_DATA_LEN = 64

# The members the server's typed TeePubKey re-serialises; anything else breaks the hash.
_JWK_MEMBERS = {
    "RSA": {"kty", "alg", "n", "e"},
    "EC": {"kty", "crv", "alg", "x", "y"},
}


def canon(obj: Any) -> bytes:
    """Canonical JSON: keys sorted at every level, no whitespace, UTF-8 (non-ASCII unescaped).

    Same bytes as the canon-json crate and, for ASCII keys and strings and integer numbers,
    RFC 8785 JCS (serde_json_canonicalizer) and sorted compact serde_json.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _check_jwk(jwk: Any) -> None:
    if not isinstance(jwk, dict):
        raise ValueError(f"tee-pubkey must be a JWK object, got {type(jwk).__name__}")
    kty = jwk.get("kty")
    expected = _JWK_MEMBERS.get(kty)
    if expected is None:
        raise ValueError(f"tee-pubkey kty must be RSA or EC, got {kty!r}")
    if set(jwk) != expected:
        extra, missing = sorted(set(jwk) - expected), sorted(expected - set(jwk))
        raise ValueError(f"tee-pubkey ({kty}) must have exactly the members {sorted(expected)}; "
                         f"extra {extra}, missing {missing}: the server re-serialises the key, "
                         "so other members would break the report-data binding")


def runtime_data_digest(dialect: str, nonce: str, tee_pubkey: dict, additional_evidence: str = "",
                        hash_alg: str = "sha384") -> bytes:
    """The hash the evidence must carry as report data for this dialect.

    0.4.0 hashes ``{"additional-evidence", "nonce", "tee-pubkey"}``; the older dialects hash
    ``{"nonce", "tee-pubkey"}`` and cannot bind additional evidence. ``hash_alg`` is SHA-384 unless
    the challenge's ``selected-hash-algorithm`` says otherwise.
    """
    if dialect not in DIALECTS:
        raise ValueError(f"unknown protocol dialect {dialect!r}; expected one of {', '.join(DIALECTS)}")
    if not isinstance(nonce, str):
        raise ValueError("nonce must be the challenge's nonce string, verbatim")
    if not isinstance(additional_evidence, str):
        raise ValueError("additional_evidence must be a JSON string (\"\" when there are no devices)")
    _check_jwk(tee_pubkey)
    algo = hash_alg.lower() if isinstance(hash_alg, str) else hash_alg
    if algo not in HASH_ALGORITHMS:
        raise ValueError(f"unsupported hash algorithm {hash_alg!r}; "
                         f"expected one of {', '.join(HASH_ALGORITHMS)}")
    if dialect == LATEST:
        runtime = {"additional-evidence": additional_evidence, "nonce": nonce, "tee-pubkey": tee_pubkey}
    else:
        if additional_evidence:
            raise ValueError(f"dialect {dialect} has no additional evidence in its report-data binding")
        runtime = {"nonce": nonce, "tee-pubkey": tee_pubkey}
    return hashlib.new(algo, canon(runtime)).digest()


def tdx_report_data(digest: bytes) -> bytes:
    """The 64-byte TDX REPORTDATA: the digest zero-padded (or truncated) like the verifier does."""
    if not isinstance(digest, (bytes, bytearray)):
        raise TypeError("digest must be bytes")
    return bytes(digest[:TDX_REPORT_DATA_LEN]).ljust(TDX_REPORT_DATA_LEN, b"\0")


def sample_report_data(digest: bytes) -> str:
    """``report_data`` of sample/system evidence: standard base64 with padding.

    The verifier decodes with the padded STANDARD engine; a 48-byte digest needs no padding
    anyway, a 32-byte (SHA-256) one does.
    """
    if not isinstance(digest, (bytes, bytearray)):
        raise TypeError("digest must be bytes")
    return b64encode(digest)


_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
_URI_FORM = "kbs:///<repository>/<type>/<tag>[?query] or kbs://<host:port>/<repository>/<type>/<tag>"


def kbs_resource_path(uri: str) -> str:
    """``kbs:///repo/type/tag[?q]`` (or with a host, which is ignored) -> ``repo/type/tag[?q]``.

    The result goes after ``{base}/kbs/v0/resource/``; the configured KBS URL always wins over a
    host in the URI, as in the upstream client.
    """
    if not isinstance(uri, str):
        raise ValueError(f"resource URI must be a string of the form {_URI_FORM}")
    if not uri.startswith("kbs://"):
        raise ValueError(f"unsupported resource URI {uri!r}: expected {_URI_FORM}")
    rest = uri[len("kbs://"):]
    if "#" in rest:
        raise ValueError(f"resource URI {uri!r} must not have a fragment: expected {_URI_FORM}")
    rest, sep, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    if not slash or any(c.isspace() for c in authority):
        raise ValueError(f"bad resource URI {uri!r}: expected {_URI_FORM}")
    segments = path.split("/")
    if len(segments) != 3 or not all(_SEGMENT_RE.fullmatch(s) for s in segments):
        raise ValueError(f"bad resource URI {uri!r}: expected {_URI_FORM}, each path segment matching "
                         "[A-Za-z0-9_-][A-Za-z0-9_.-]*")
    if query and any(c.isspace() for c in query):
        raise ValueError(f"bad resource URI {uri!r}: whitespace in the query")
    return "/".join(segments) + (f"?{query}" if query else "")
