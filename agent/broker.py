"""A local Trustee-compatible key broker for laptops and tests (never for production).

It speaks KBS protocol 0.1.0 or 0.4.0 on loopback, verifies ``sample``, ``system`` and ``tdx``
evidence (for tdx: the quote is parsed, the report-data binding checked, debug TDs refused
unless the policy allows them, optional MRTD/RTMR allow-lists; quote signatures are not
checked, there is no collateral here), answers errors in Trustee's JSON form with Trustee's
status codes, and logs each attestation and release without secrets.

Policy file (JSON, every member optional):

    {"allow_tees": ["sample", "system", "tdx"],
     "allow_resources": ["*"], "deny_resources": ["default/private/*"],
     "tdx": {"allow_debug": false, "mr_td": ["<hex>"], "rtmr0": ["<hex>"], ...},
     "system": {"environment": {"eas-test": "123"}}}
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import binding, jwe
from .b64 import b64decode, b64encode, b64url_encode
from .errors import QuoteError, UsageError
from .protocol import BROKER_DIALECTS, LATEST, LEGACY_DIALECTS

log = logging.getLogger("agent.broker")

TEES = ("sample", "system", "tdx")
SESSION_SECONDS = 300
ERROR_TYPE = "https://github.com/confidential-containers/kbs/errors/"
MAX_BODY = 1 << 20  # a request (evidence with its event log) is a few KB; a test server must not grow
RTMR_KEYS = ("rtmr0", "rtmr1", "rtmr2", "rtmr3")


class Refusal(Exception):
    """An answer in Trustee's ErrorInformation form."""

    def __init__(self, status: int, variant: str, detail: str):
        super().__init__(detail)
        self.status, self.variant, self.detail = status, variant, detail


@dataclass
class Policy:
    allow_tees: tuple[str, ...] = TEES
    allow_resources: tuple[str, ...] = ("*",)
    deny_resources: tuple[str, ...] = ()
    tdx: dict = field(default_factory=dict)
    system: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | None) -> Policy:
        if not path:
            return cls()
        try:
            with open(path, encoding="utf-8") as f:
                obj = json.load(f)
        except (OSError, ValueError) as e:
            raise UsageError(f"policy file {path}: {e}") from None
        if not isinstance(obj, dict):
            raise UsageError(f"policy file {path}: expected a JSON object")
        unknown = set(obj) - {"allow_tees", "allow_resources", "deny_resources", "tdx", "system"}
        if unknown:
            raise UsageError(f"policy file {path}: unknown members {sorted(unknown)}")
        return cls(tuple(obj.get("allow_tees", TEES)), tuple(obj.get("allow_resources", ("*",))),
                   tuple(obj.get("deny_resources", ())), dict(obj.get("tdx", {})),
                   dict(obj.get("system", {})))

    def resource_allowed(self, path: str) -> bool:
        if any(fnmatch.fnmatchcase(path, p) for p in self.deny_resources):
            return False
        return any(fnmatch.fnmatchcase(path, p) for p in self.allow_resources)


@dataclass
class Session:
    nonce: str
    tee: str
    expires: float
    jwk: dict | None = None
    attested: bool = False


def typed_jwk(jwk) -> dict:
    """The tee-pubkey as the server's typed struct re-serialises it (extra members dropped)."""
    if not isinstance(jwk, dict):
        raise Refusal(401, "AttestationFailed", "tee-pubkey is not a JSON object")
    members = {"RSA": ("kty", "alg", "n", "e"), "EC": ("kty", "crv", "alg", "x", "y")}.get(jwk.get("kty"))
    if members is None or any(not isinstance(jwk.get(m), str) for m in members):
        raise Refusal(401, "AttestationFailed", "tee-pubkey is not an RSA or EC JWK")
    return {m: jwk[m] for m in members}


class Broker:
    def __init__(self, resources: dict[str, bytes], dialect: str = LATEST, policy: Policy | None = None):
        if dialect not in BROKER_DIALECTS:
            raise UsageError(f"--dialect must be one of {', '.join(BROKER_DIALECTS)}")
        self.resources = resources
        self.dialect = dialect
        self.policy = policy or Policy()
        self.sessions: dict[str, Session] = {}
        self.lock = threading.Lock()
        self._token_key = secrets.token_bytes(32)

    # protocol -----------------------------------------------------------------
    def auth(self, body) -> tuple[dict, str]:
        if not isinstance(body, dict):
            raise Refusal(400, "", "Json deserialize error: expected a JSON object")
        if self.dialect == "0.1.0" and not isinstance(body.get("extra-params", ""), str):
            raise Refusal(400, "", "Json deserialize error: invalid type: map, expected a string")
        version = body.get("version")
        if version != self.dialect:
            raise Refusal(401, "ProtocolVersion", "KBS Client Protocol Version Mismatch: "
                                                  f"expect ={self.dialect} while the request is {version}")
        tee = body.get("tee")
        if tee not in TEES:
            raise Refusal(401, "UnsupportedTee", f"unsupported tee {tee!r}")
        nonce = b64encode(secrets.token_bytes(32))
        sid = uuid.uuid4().hex
        with self.lock:
            self._expire()
            self.sessions[sid] = Session(nonce, tee, time.time() + SESSION_SECONDS)
        return {"nonce": nonce, "extra-params": ""}, sid

    def attest(self, sid: str | None, body, instance_info: str | None) -> dict:
        session = self._session(sid)
        if not isinstance(body, dict):
            raise Refusal(400, "", "Json deserialize error: expected a JSON object")
        jwk, evidence, additional = self._parse_attest(session, body)
        digest = binding.runtime_data_digest(self.dialect, session.nonce, jwk, additional)
        if session.tee not in self.policy.allow_tees:
            raise Refusal(401, "PolicyDeny", f"the attestation policy does not accept tee {session.tee!r}")
        claims = {"sample": self._verify_sample, "system": self._verify_system,
                  "tdx": self._verify_tdx}[session.tee](evidence, digest)
        session.jwk, session.attested = jwk, True
        log.info("attest ok: tee=%s session=%s instance=%s %s", session.tee, _short(sid),
                 instance_info or "-", claims)
        return {"token": self._token(session, claims)}

    def resource(self, sid: str | None, path: str) -> dict:
        session = self._session(sid)
        if not session.attested:
            raise Refusal(401, "TokenNotFound", "the session is not attested")
        if not self.policy.resource_allowed(path):
            log.info("release denied by policy: %s to tee=%s", path, session.tee)
            raise Refusal(401, "PolicyDeny", "Access denied by policy")
        data = self.resources.get(path)
        if data is None:
            log.info("release failed, no such resource: %s", path)
            if self.dialect == "0.1.0":
                raise Refusal(404, "ReadSecretFailed", f"Read secret failed: resource {path} not found")
            raise Refusal(401, "PluginInternalError", f"Plugin internal error: resource {path} not found")
        log.info("release: %s (%d bytes) to tee=%s session=%s", path, len(data), session.tee, _short(sid))
        return jwe.encrypt(session.jwk, data, legacy=self.dialect in LEGACY_DIALECTS)

    # helpers ------------------------------------------------------------------
    def _expire(self) -> None:
        now = time.time()
        for k in [k for k, s in self.sessions.items() if s.expires < now]:
            del self.sessions[k]

    def _session(self, sid: str | None) -> Session:
        with self.lock:
            session = self.sessions.get(sid or "")
            if session is None or session.expires < time.time():
                raise Refusal(401, "TokenNotFound", "no valid kbs-session-id cookie")
            return session

    def _parse_attest(self, session: Session, body: dict) -> tuple[dict, dict, str]:
        if self.dialect == "0.1.0":
            jwk = typed_jwk(body.get("tee-pubkey"))
            if jwk["kty"] != "RSA" or jwk["alg"] != "RSA1_5":
                raise Refusal(401, "AttestationFailed", "protocol 0.1.0 accepts only RSA1_5 keys")
            raw = body.get("tee-evidence")
            if not isinstance(raw, str):
                raise Refusal(400, "", "Json deserialize error: tee-evidence must be a string")
            try:
                evidence = _json(raw, "tee-evidence")
            except Refusal:
                raise Refusal(401, "AttestationFailed", "tee-evidence is not JSON") from None
            return jwk, _object(evidence), ""
        runtime = body.get("runtime-data")
        if not isinstance(runtime, dict) or runtime.get("nonce") != session.nonce:
            raise Refusal(401, "AttestationFailed", "the nonce in the handshake session is different from "
                                                    "the one in runtime-data")
        jwk = typed_jwk(runtime.get("tee-pubkey"))
        tee_evidence = body.get("tee-evidence")
        if not isinstance(tee_evidence, dict):
            raise Refusal(401, "AttestationFailed", "tee-evidence must be an object")
        additional = tee_evidence.get("additional_evidence", "")
        if not isinstance(additional, str):
            raise Refusal(401, "AttestationFailed", "additional_evidence must be a string")
        return jwk, _object(tee_evidence.get("primary_evidence")), additional

    def _verify_sample(self, evidence: dict, digest: bytes) -> str:
        _check_b64_report_data(evidence, digest)
        return "report_data ok"

    def _verify_system(self, evidence: dict, digest: bytes) -> str:
        _check_b64_report_data(evidence, digest)
        env = evidence.get("environment")
        for name, want in self.policy.system.get("environment", {}).items():
            if not isinstance(env, dict) or env.get(name) != want:
                raise Refusal(401, "AttestationFailed", f"environment {name!r} does not match the policy")
        return "report_data ok, environment ok"

    def _verify_tdx(self, evidence: dict, digest: bytes) -> str:
        from .tdx import check_quote

        try:
            raw = b64decode(evidence.get("quote") or "")
            allow_debug = bool(self.policy.tdx.get("allow_debug"))
            quote = check_quote(raw, binding.tdx_report_data(digest), allow_debug)
        except (ValueError, QuoteError) as e:
            raise Refusal(401, "AttestationFailed", f"tdx evidence refused: {e}") from None
        values = {"mr_td": quote.body.mr_td, **dict(zip(RTMR_KEYS, quote.body.rtmrs, strict=True))}
        for key, value in values.items():
            allowed = self.policy.tdx.get(key)
            if allowed is not None and value.hex() not in [a.lower() for a in allowed]:
                raise Refusal(401, "AttestationFailed",
                              f"{key} {value.hex()[:16]}… is not in the policy's list")
        return f"mr_td={quote.body.mr_td.hex()[:16]}…"

    def _token(self, session: Session, claims: str) -> str:
        """An HS256 token (clients do not verify it; the cookie is what authorises)."""
        now = int(time.time())
        head = b64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = b64url_encode(json.dumps({"iss": "cryptfs-dev-broker", "iat": now, "nbf": now,
                               "exp": now + SESSION_SECONDS, "tee": session.tee, "tee-pubkey": session.jwk,
                               "claims": claims}).encode())
        sig = hmac.new(self._token_key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{b64url_encode(sig)}"


def _json(raw: bytes | str, what: str):
    """JSON from a client; a 400 for anything else, nesting too deep for the parser included."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise Refusal(400, "", f"Json deserialize error: {what} is nested too deeply") from None
    except ValueError:
        raise Refusal(400, "", f"Json deserialize error: {what} is not JSON") from None


def _object(value) -> dict:
    if not isinstance(value, dict):
        raise Refusal(401, "AttestationFailed", "the evidence is not a JSON object")
    return value


def _check_b64_report_data(evidence: dict, digest: bytes) -> None:
    try:
        got = b64decode(evidence.get("report_data") or "")
    except ValueError:
        raise Refusal(401, "AttestationFailed", "report_data is not base64") from None
    if not hmac.compare_digest(got, digest):
        raise Refusal(401, "AttestationFailed", "report_data does not bind the nonce and the tee-pubkey")


def _short(sid: str | None) -> str:
    """Sessions are bearer credentials: log a hash, never the id."""
    return hashlib.sha256((sid or "").encode()).hexdigest()[:8]


def make_handler(broker: Broker):
    class Handler(BaseHTTPRequestHandler):
        server_version = "cryptfs-dev-broker"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # access log without cookies or bodies
            log.debug("%s %s", self.address_string(), fmt % args)

        def _cookie(self) -> str | None:
            for part in (self.headers.get("Cookie") or "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == "kbs-session-id":
                    return value
            return None

        def _body(self):
            """The request's JSON: at most MAX_BODY bytes, refused unread beyond (the connection is
            then closed, its rest never read); nesting too deep for the parser is a 400 too."""
            length = (self.headers.get("Content-Length") or "0").strip()
            if not length.isdigit():
                self.close_connection = True
                raise Refusal(400, "", "Content-Length is not a number")
            if int(length) > MAX_BODY:
                self.close_connection = True
                raise Refusal(413, "", f"request body larger than {MAX_BODY} bytes")
            raw = self.rfile.read(int(length)) if int(length) else b""
            return _json(raw, "body")

        def _send(self, status: int, obj, sid: str | None = None) -> None:
            data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
            self.send_response(status)
            ctype = "text/plain" if isinstance(obj, bytes) else "application/json"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            if sid:
                expires = formatdate(time.time() + SESSION_SECONDS, usegmt=True)
                self.send_header("Set-Cookie", f"kbs-session-id={sid}; Expires={expires}")
            self.end_headers()
            self.wfile.write(data)

        def _dispatch(self, method: str) -> None:
            path = self.path.split("?", 1)[0]
            sid = self._cookie()
            try:
                if method == "POST" and path.endswith("/kbs/v0/auth"):
                    challenge, new_sid = broker.auth(self._body())
                    return self._send(200, challenge, new_sid)
                if method == "POST" and path.endswith("/kbs/v0/attest"):
                    token = broker.attest(sid, self._body(), self.headers.get("AAInstanceInfo"))
                    return self._send(200, token, sid)
                marker = "/kbs/v0/resource/"
                if method == "GET" and marker in path:
                    rpath = path.split(marker, 1)[1]
                    if rpath.count("/") != 2:
                        raise Refusal(404, "InvalidRequestPath", f"invalid resource path {rpath!r}")
                    return self._send(200, broker.resource(sid, rpath), sid)
                raise Refusal(404, "InvalidRequestPath", f"no such endpoint {method} {path}")
            except Refusal as r:
                if r.status in (400, 413):
                    return self._send(r.status, r.detail.encode())
                log.info("refused %s %s: %s %s", method, path, r.variant, r.detail)
                return self._send(r.status, {"type": ERROR_TYPE + r.variant, "detail": r.detail})

        def do_POST(self):  # noqa: N802 (http.server naming)
            self._dispatch("POST")

        def do_GET(self):  # noqa: N802
            self._dispatch("GET")

    return Handler


def serve(broker: Broker, host: str = "127.0.0.1", port: int = 8080) -> ThreadingHTTPServer:
    """Bind and return the server (call serve_forever); loopback unless asked otherwise."""
    server = ThreadingHTTPServer((host, port), make_handler(broker))
    server.daemon_threads = True
    return server


def load_resources(specs: list[str]) -> dict[str, bytes]:
    """``repo/type/tag=@FILE`` (the file's bytes) for each --resource."""
    out = {}
    for spec in specs:
        path, eq, source = spec.partition("=")
        if not eq or not source.startswith("@"):
            raise UsageError(f"--resource {spec!r}: expected repo/type/tag=@FILE (a value on the command "
                             "line would be visible to other users)")
        try:
            binding.kbs_resource_path("kbs:///" + path)
        except ValueError as e:
            raise UsageError(f"--resource {path!r}: {e}") from None
        try:
            with open(os.path.expanduser(source[1:]), "rb") as f:
                out[path] = f.read()
        except OSError as e:
            raise UsageError(f"--resource {path}: cannot read {source[1:]}: {e.strerror}") from None
    return out
