"""The dev broker's protocol side: sessions, evidence checks, tokens, resource release.

What each TEE's evidence must show at /attest: ``sample``: the report-data binding only;
``system``: the binding, the policy's environment values, and an event log that replays to
``rtmr_register``; ``tdx``: the quote parsed, its REPORTDATA binding checked, no debug TD unless
allowed, optional MRTD/RTMR allow-lists, and the event log replayed to RTMR3. The quote's
signatures are NOT checked (no collateral here; ``python -m agent quote --verify`` checks them
offline). The replayed model events are judged at resource release (:mod:`.measured`), where
Trustee's rego verdict takes effect: a denial is a ``PolicyDeny``, never a failed attestation.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
import uuid
from dataclasses import dataclass

from .. import binding, jwe
from ..b64 import b64decode, b64encode, b64url_encode
from ..errors import QuoteError, UsageError
from ..measure import Event
from ..protocol import BROKER_DIALECTS, LATEST, LEGACY_DIALECTS
from . import measured
from .policy import TEES, Policy

log = logging.getLogger("agent.broker")

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
class Session:
    nonce: str
    tee: str
    expires: float
    jwk: dict | None = None
    attested: bool = False
    events: list[Event] | None = None  # the replayed AAEL events; None: the evidence has no register


def typed_jwk(jwk) -> dict:
    """The tee-pubkey as the server's typed struct re-serialises it (extra members dropped)."""
    if not isinstance(jwk, dict):
        raise Refusal(401, "AttestationFailed", "tee-pubkey is not a JSON object")
    members = {"RSA": ("kty", "alg", "n", "e"), "EC": ("kty", "crv", "alg", "x", "y")}.get(jwk.get("kty"))
    if members is None or any(not isinstance(jwk.get(m), str) for m in members):
        raise Refusal(401, "AttestationFailed", "tee-pubkey is not an RSA or EC JWK")
    return {m: jwk[m] for m in members}


class Broker:
    """The broker's state and its three endpoints; the HTTP side is :mod:`.server`."""

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
        claims, events = {"sample": self._verify_sample, "system": self._verify_system,
                          "tdx": self._verify_tdx}[session.tee](evidence, digest)
        if events is not None:
            models = sum(1 for e in events if measured.is_model_event(e))
            claims += f", event log replayed ({len(events)} AAEL event(s), {models} load-model)"
        session.jwk, session.attested, session.events = jwk, True, events
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
        reason = measured.model_denial(session.events, self.policy.reference, self.policy.require_model_event,
                                       session.tee)
        if reason is not None:
            log.info("release denied by the model rule: %s to tee=%s: %s", path, session.tee, reason)
            raise Refusal(401, "PolicyDeny", reason)
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

    # Each verifier returns (claims for the log and token, the replayed AAEL events or None when
    # the evidence has no register at all).
    def _verify_sample(self, evidence: dict, digest: bytes) -> tuple[str, list[Event] | None]:
        _check_b64_report_data(evidence, digest)
        return "report_data ok", None

    def _verify_system(self, evidence: dict, digest: bytes) -> tuple[str, list[Event] | None]:
        _check_b64_report_data(evidence, digest)
        env = evidence.get("environment")
        for name, want in self.policy.system.get("environment", {}).items():
            if not isinstance(env, dict) or env.get(name) != want:
                raise Refusal(401, "AttestationFailed", f"environment {name!r} does not match the policy")
        try:
            events = measured.system_events(evidence)
        except measured.EvidenceMismatch as e:
            raise Refusal(401, "AttestationFailed", f"system evidence refused: {e}") from None
        return "report_data ok, environment ok", events

    def _verify_tdx(self, evidence: dict, digest: bytes) -> tuple[str, list[Event] | None]:
        from ..tdx import check_quote

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
        try:
            events = measured.tdx_events(evidence, quote.body.rtmrs[3])
        except measured.EvidenceMismatch as e:
            raise Refusal(401, "AttestationFailed", f"tdx evidence refused: {e}") from None
        return f"mr_td={quote.body.mr_td.hex()[:16]}…", events

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


