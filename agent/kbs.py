"""Trustee KBS client: auth -> attest -> resource, in the wire dialects found in the field.

Dialect 0.4.0 (upstream trustee >= v0.14, openanolis >= v1.6) and 0.1.0 (openanolis <= v1.5.2,
Alibaba's chart 1.0.0) are probed in that order, then 0.2.0 and 0.1.1 (``agent.protocol.DIALECTS``):
the Trustee KBS attestation protocol has no version discovery, so a client that must talk to both
generations asks in each until one answers. Retries follow guest-components: the
handshake up to 5 times 1 s apart, the resource GET up to 3 attempts with one fresh handshake
on 401. The TEE key pair lives in memory only; the session cookie and the token never reach a
log. Errors are classified by the body's ``type`` (0.4.0 answers 401 for a denial and for a
missing resource alike), not only by the status; a 404 on ``/auth`` in every dialect is "no KBS
at this URL" (:class:`~agent.errors.NoKbs`), not a refusal. :meth:`KbsClient.probe` says which
dialect a broker speaks without attesting or fetching anything (``agent check``).

The network may be hostile: the transport (:mod:`agent.transport`) gives the client one
deadline, caps each reply's size and follows no redirect; everything quoted from a reply is
escaped (:func:`~agent.errors.untrusted`) and a reply that exhausts the stack or memory is a
protocol error, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time

from cryptfs.core.version import VERSION

from . import binding
from .errors import (
    BrokerUnreachable,
    EvidenceRefused,
    KbsProtocolError,
    NoKbs,
    PolicyDenied,
    ResourceNotFound,
    UsageError,
    VersionMismatch,
    untrusted,
)
from .jwe import JweError, TeeKeyPair
from .protocol import DEFAULT_KEY_ALG, DIALECTS, LATEST, LEGACY_DIALECTS, LEGACY_KEY_ALG
from .transport import MIB, Reply, Transport

__all__ = ["KbsClient", "Reply", "error_info", "instance_info_header"]

log = logging.getLogger("agent.kbs")

ERROR_TYPE_PREFIX = "https://github.com/confidential-containers/kbs/errors/"
USER_AGENT = f"cryptfs-agent-kbs-client/{VERSION}"
HANDSHAKE_ATTEMPTS = 5
HANDSHAKE_DELAY = 1.0
GET_ATTEMPTS = 3
TIMEOUT = 60.0  # seconds: ONE deadline for everything a client sends (TRUSTEE_TIMEOUT, --timeout)
HANDSHAKE_CAP = MIB  # a challenge or a token is a few KB
RESOURCE_CAP = 16 * MIB  # a JWE around a key is a few hundred bytes; a large secret still fits


def error_info(reply: Reply) -> tuple[str, str]:
    """(variant, detail) of a Trustee ErrorInformation body, both escaped and cut; ("", a
    description of the body) otherwise (:meth:`Reply.describe`: never an HTML page)."""
    obj = reply.json()
    if isinstance(obj, dict) and isinstance(obj.get("type"), str):
        detail = obj.get("detail", "")
        if not isinstance(detail, (str, int, float)):  # Trustee's is a string; never repr a deep tree
            detail = f"(a JSON {type(detail).__name__})"
        return untrusted(obj["type"].rsplit("/", 1)[-1], 60), untrusted(str(detail))
    return "", reply.describe()


def instance_info_header(environ=os.environ) -> str | None:
    """The EAS identity header ``AAInstanceInfo``: AA_INSTANCE_INFO as-is, else built from EAS vars."""
    if environ.get("AA_INSTANCE_INFO"):
        return environ["AA_INSTANCE_INFO"]
    fields = {"eas_model_id": "EAS_MODEL_ID", "eas_instance_id": "EAS_INSTANCE_ID",
              "eas_pod_name": "POD_NAME"}
    info = {k: environ[v] for k, v in fields.items() if environ.get(v)}
    return json.dumps(info, separators=(",", ":")) if info else None


@contextlib.contextmanager
def _no_tracebacks():
    """A reply that exhausts the stack or memory (deeply nested JSON, a huge structure) is a
    protocol error like any other bad reply, never a traceback."""
    try:
        yield
    except RecursionError:
        raise KbsProtocolError("the broker's reply is nested too deeply to handle") from None
    except MemoryError:
        raise KbsProtocolError("the broker's reply is too large to handle") from None


class KbsClient:
    """One broker, one attester: the handshake (auth + attest) and resource requests.

    The dialect is probed on the first handshake unless given; the TEE key pair of each key
    algorithm is made once and kept in memory, so a resource fetched after a re-handshake
    still decrypts. ``timeout`` is one deadline for everything the client sends, from its first
    request on (handshake retries and resource requests included), not a per-read timeout: a
    broker, or a network, that answers one byte at a time cannot stretch it
    (:mod:`agent.transport`).
    """

    def __init__(self, base_url: str, attester, *, dialect: str | None = None, key_alg: str | None = None,
                 ca_bundle: str | None = None, timeout: float | None = TIMEOUT,
                 instance_info: str | None = None, sleep=time.sleep,
                 handshake_attempts: int = HANDSHAKE_ATTEMPTS, handshake_delay: float = HANDSHAKE_DELAY):
        if not base_url.startswith(("http://", "https://")):
            raise UsageError(f"broker URL {untrusted(base_url)!r} must start with http:// or https://")
        if dialect is not None and dialect not in DIALECTS:
            raise UsageError(f"unknown KBS protocol version {dialect!r} (known: {', '.join(DIALECTS)})")
        timeout = TIMEOUT if timeout is None else timeout
        if not timeout > 0:
            raise UsageError(f"the broker timeout must be a positive number of seconds, not {timeout!r}")
        self.base = base_url.rstrip("/") + "/kbs/v0"
        self.attester = attester
        self.dialect = dialect
        self.key_alg = key_alg
        self.timeout = timeout
        self.instance_info = instance_info
        self._sleep = sleep
        self._attempts = handshake_attempts
        self._delay = handshake_delay
        self._keys: dict[str, TeeKeyPair] = {}
        self._transport = Transport(self.base, timeout, ca_bundle)
        self.attested = False

    # transport --------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict | None = None,
                 headers: dict | None = None, cap: int = HANDSHAKE_CAP) -> Reply:
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        all_headers = {"User-Agent": USER_AGENT, **(headers or {})}
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        return self._transport.request(method, self.base + path, data, all_headers, cap)

    # handshake ---------------------------------------------------------------
    def _key(self, dialect: str) -> TeeKeyPair:
        alg = LEGACY_KEY_ALG if dialect in LEGACY_DIALECTS else (self.key_alg or DEFAULT_KEY_ALG)
        if dialect in LEGACY_DIALECTS and self.key_alg not in (None, LEGACY_KEY_ALG):
            raise UsageError(f"protocol {dialect} supports only {LEGACY_KEY_ALG} keys, not {self.key_alg}")
        if alg not in self._keys:
            self._keys[alg] = TeeKeyPair.generate(alg)
        return self._keys[alg]

    def _auth(self, version: str) -> Reply:
        body = {"version": version, "tee": self.attester.tee, "extra-params": ""}
        return self._request("POST", "/auth", body)

    def _negotiate(self) -> tuple[str, dict]:
        """POST /auth in each dialect until one answers 200; returns (dialect, challenge).

        404 in every dialect means no KBS at this URL (a forgotten path prefix, most often), not
        a refusal of the evidence: :class:`NoKbs`, with the status only (no HTML page).
        """
        versions = [self.dialect] if self.dialect else list(DIALECTS)
        seen, statuses = [], []
        for version in versions:
            reply = self._auth(version)
            statuses.append(reply.status)
            if reply.status == 200:
                return version, self._challenge(version, reply)
            if reply.status == 404:
                seen.append(f"{version}: HTTP 404")
                continue
            variant, detail = error_info(reply)
            seen.append(f"{version}: HTTP {reply.status} {variant} {detail}".strip())
            if "version mismatch" not in detail.lower() and variant != "ProtocolVersion":
                if reply.status == 400 and version == versions[0] and len(versions) > 1:
                    continue  # an old actix server refusing the body shape: try the next dialect
                raise EvidenceRefused(f"/auth refused (HTTP {reply.status}): {variant} {detail}".strip())
        if all(status == 404 for status in statuses):
            tried = "every protocol version tried" if len(versions) > 1 else f"protocol {versions[0]}"
            raise NoKbs(f"no KBS at {untrusted(self.base[:-len('/kbs/v0')])}: POST /kbs/v0/auth answered "
                        f"HTTP 404 in {tried}; check the path part of TRUSTEE_URL (e.g. http://host/trustee "
                        "behind an ingress)")
        raise VersionMismatch("the broker speaks none of the KBS protocol versions this agent knows "
                              f"({', '.join(versions)}): " + "; ".join(seen))

    def _challenge(self, version: str, reply: Reply) -> dict:
        challenge = reply.json()
        if not isinstance(challenge, dict) or not isinstance(challenge.get("nonce"), str):
            what = reply.json_problem() or "JSON without a nonce"
            raise KbsProtocolError(f"/auth answered 200 without a nonce ({what}: {reply.describe()}); "
                                   "is TRUSTEE_URL the KBS?")
        if self.dialect is None:
            log.info("broker speaks KBS protocol %s", version)
        self.dialect = version
        return challenge

    def probe(self) -> str:
        """The KBS protocol version the broker speaks: one ``/auth`` per dialect, nothing fetched.

        For ``agent check``: it shows that the broker is reachable and compatible without
        collecting evidence, attesting or releasing the key. No retries (a check reports what
        it sees); the errors are those of the handshake (unreachable, version mismatch, refusal).
        The ``/auth`` opens a new session, so a later :meth:`get_resource` attests afresh.
        """
        with _no_tracebacks():
            self._transport.cookies.clear()
            self.attested = False
            dialect, _ = self._negotiate()
            return dialect

    def _attest_body(self, dialect: str, nonce: str, jwk: dict, evidence: dict) -> dict:
        if dialect == "0.1.0":
            return {"tee-pubkey": jwk, "tee-evidence": json.dumps(evidence, separators=(",", ":"))}
        if dialect in ("0.1.1", "0.2.0"):
            return {"tee-pubkey": jwk, "tee-evidence": evidence}
        return {"init-data": None, "runtime-data": {"nonce": nonce, "tee-pubkey": jwk},
                "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""}}

    def _handshake_once(self) -> None:
        self._transport.cookies.clear()
        dialect, challenge = self._negotiate()
        params = challenge.get("extra-params")
        hash_alg = params.get("selected-hash-algorithm", "sha384") if isinstance(params, dict) else "sha384"
        if not isinstance(hash_alg, str):
            raise KbsProtocolError("the broker's challenge names its hash algorithm with a JSON "
                                   f"{type(hash_alg).__name__}, not a string")
        key = self._key(dialect)
        jwk = key.jwk()
        try:
            digest = binding.runtime_data_digest(dialect, challenge["nonce"], jwk, "", hash_alg)
        except ValueError as e:
            raise KbsProtocolError(f"the broker's challenge cannot be answered: {untrusted(str(e))}") \
                from None
        evidence = self.attester.evidence(digest, dialect)
        headers = {"AAInstanceInfo": self.instance_info} if self.instance_info else None
        body = self._attest_body(dialect, challenge["nonce"], jwk, evidence)
        reply = self._request("POST", "/attest", body, headers)
        if reply.status != 200:
            variant, detail = error_info(reply)
            raise EvidenceRefused(f"the broker refused the {self.attester.tee} evidence (HTTP {reply.status} "
                                  f"{variant}): {detail or 'no detail'}; check the attestation policy and "
                                  "reference values")
        token = reply.json()
        if not isinstance(token, dict) or "token" not in token:
            raise KbsProtocolError(f"/attest answered 200 without a token ({reply.json_problem() or 'JSON'}: "
                                   f"{reply.describe()})")
        self.attested = True

    def handshake(self) -> None:
        """auth + attest, retried like guest-components (broker down or flaky); refusals are final.

        The retries share the client's one deadline: an attempt that would start after it is
        not made, and the last failure is the one reported.
        """
        with _no_tracebacks():
            for attempt in range(1, self._attempts + 1):
                try:
                    self._handshake_once()
                    return
                except (BrokerUnreachable, KbsProtocolError) as e:
                    if attempt == self._attempts or self._transport.deadline.left() <= self._delay:
                        raise
                    log.warning("handshake attempt %d/%d failed: %s; retrying", attempt, self._attempts, e)
                    self._sleep(self._delay)

    # resources ----------------------------------------------------------------
    def get_resource(self, uri: str) -> bytearray:
        """The bytes of ``kbs:///repo/type/tag`` (or ``repo/type/tag``) in a buffer the caller wipes.

        A bytearray, not bytes: the caller can overwrite it once the key is handed on
        (``key[:] = bytes(len(key))``); see :meth:`agent.jwe.TeeKeyPair.decrypt` for the copies
        the libraries keep.
        """
        try:
            path = binding.kbs_resource_path(uri if uri.startswith("kbs") else "kbs:///" + uri)
        except ValueError as e:
            raise UsageError(untrusted(str(e), None)) from None
        with _no_tracebacks():
            if not self.attested:
                self.handshake()
            rehandshaken = False
            last = None
            for _ in range(GET_ATTEMPTS):
                reply = self._request("GET", "/resource/" + path, cap=RESOURCE_CAP)
                if reply.status == 200:
                    return self._decrypt(reply)
                last = self._classify(reply, path)
                if reply.status == 401 and not rehandshaken:
                    log.info("resource request answered 401 (%s); fresh handshake",
                             error_info(reply)[0] or "no type")
                    rehandshaken = True
                    self.attested = False
                    self.handshake()
                    continue
                raise last
            raise last

    def _decrypt(self, reply: Reply) -> bytearray:
        body = reply.json()
        if not isinstance(body, dict):
            problem = reply.json_problem() or "JSON"
            raise KbsProtocolError(f"the resource reply is not a JWE JSON object ({problem}: "
                                   f"{reply.describe()})")
        try:
            return self._keys_for(self.dialect).decrypt(body)
        except JweError as e:
            raise KbsProtocolError(f"the resource reply cannot be decrypted: {untrusted(str(e))}") from None

    def _keys_for(self, dialect: str | None) -> TeeKeyPair:
        return self._key(dialect or LATEST)

    def _classify(self, reply: Reply, path: str):
        variant, detail = error_info(reply)
        text = f"{variant}: {detail}" if variant else detail
        low = detail.lower()
        path = untrusted(path)
        if variant == "PolicyDeny" or "policy" in low and "deny" in low:
            return PolicyDenied(f"the broker's policy denies {path} to this environment ({text}); "
                                "check the resource policy and the evidence it sees")
        missing = ("not found", "notfound", "no such", "does not exist", "readsecretfailed")
        if reply.status == 404 or variant in ("ResourceNotFound", "ReadSecretFailed") or \
                any(m in low for m in missing):
            return ResourceNotFound(f"the broker has no resource {path} ({text}); check "
                                    "DECRYPTION_KEY_URI and that the secret exists")
        return KbsProtocolError(f"the broker answered HTTP {reply.status} for {path}: {text or 'no detail'}")
