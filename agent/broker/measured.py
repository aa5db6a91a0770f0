"""Measured launch, the verifier's side: replay the event log to its register, then the PAI rule.

Two steps, at two moments, as in Trustee:

1. **At /attest** (Trustee's verifier): the ``cc_eventlog`` is parsed and the register it
   claims to explain is replayed from zero with the SHA-384 digest of every event at that
   register's MR index, in log order. ``system`` evidence: index 1 against ``rtmr_register``
   (openanolis ``deps/verifier/src/system``). ``tdx`` evidence: index 4 (RTMR3 in CC-event-log
   numbering, where 1-4 are RTMR0-3) against RTMR3 of the quote. A log that does not replay,
   does not parse, or whose AAEL record's digest is not that of its data is refused:
   :class:`EvidenceMismatch`, which the broker answers as a failed attestation. So is an AAEL
   event at any other index: this broker replays only the one register, and an event it has
   not tied to a register proves nothing. The quote's signature is not checked anywhere in the
   dev broker, so on tdx this binds the log to a quote that is itself unverified.
2. **At resource release** (Trustee's rego, ``policy/pai_default.rego``, whose verdict the KBS
   resource policy enforces): every AAEL event with domain ``trustiflux.alibaba.com`` and
   operation ``pai/load-model`` must carry JSON content ``{"model-id": ID, "hash": H}`` with
   ``H`` among ``reference["measurement.model.<ID>"]`` (:func:`model_denial`). Like the stock
   rule it passes when there is no such event, unless the policy sets ``require_model_event``.
   Only events that step 1 replayed reach it.

Evidence that claims no register (``sample``; ``system`` from clients that predate the log;
``tdx`` with ``cc_eventlog`` null) has no events: nothing is replayed and the stock rule
passes, which is why a deployment that needs a measured model sets ``require_model_event``.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping

from ..attesters import eventlog
from ..b64 import b64decode
from ..measure import DIGEST_SIZE, Event, EventFormatError, aael_events

MODEL_DOMAIN = "trustiflux.alibaba.com"
MODEL_OPERATION = "pai/load-model"
MODEL_REFERENCE_PREFIX = "measurement.model."
SYSTEM_MR_INDEX = 1  # the system register, as the system verifier replays it
RTMR3_MR_INDEX = 4  # CC event log numbering: 0 MRTD, 1-4 RTMR0-3
EXCERPT = 60  # characters of an event's content quoted in a denial


class EvidenceMismatch(ValueError):
    """The event log does not parse, or does not replay to the register the evidence reports."""


def _register(value: object, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != DIGEST_SIZE:
        raise EvidenceMismatch(f"{what} is not {DIGEST_SIZE} bytes of hex")
    return raw


def _log_bytes(value: object) -> bytes:
    try:
        return b64decode(value if isinstance(value, str) else "\0")
    except (ValueError, binascii.Error):
        raise EvidenceMismatch("cc_eventlog is not standard base64") from None


def replayed_events(cc_eventlog: bytes | None, mr_index: int, register: bytes, what: str) -> list[Event]:
    """The AAEL events of ``cc_eventlog`` once it replays at ``mr_index`` to ``register``.

    ``None`` (no log) replays to zero. Every event at ``mr_index`` counts in the replay, the
    firmware's too (that is what the register holds); AAEL events elsewhere are refused.
    """
    walked: tuple = ()
    events: list[Event] = []
    if cc_eventlog is not None:
        try:
            walked = eventlog.walk(cc_eventlog).events
            events = aael_events(cc_eventlog)
        except (eventlog.EventLogError, EventFormatError) as e:
            raise EvidenceMismatch(f"cc_eventlog cannot be parsed: {e}") from None
    foreign = next((e for e in events if e.mr_index != mr_index), None)
    if foreign is not None:
        raise EvidenceMismatch(f"cc_eventlog holds an AAEL event for MR index {foreign.mr_index} "
                               f"({foreign.text[:EXCERPT]!r}); only index {mr_index} ({what}) is replayed "
                               "here, so it cannot be trusted")
    replayed = eventlog.replay(walked, mr_index)
    if replayed != register:
        raise EvidenceMismatch(f"cc_eventlog replays MR index {mr_index} to {replayed.hex()[:16]}… but "
                               f"{what} is {register.hex()[:16]}…: the log was changed, or an event in it "
                               "was never extended into the register")
    return events


def system_events(evidence: Mapping) -> list[Event]:
    """The replayed AAEL events of ``system`` evidence (``rtmr_register``, ``cc_eventlog``).

    Neither member: a client older than the measurement log, no events. A log without the
    register cannot be replayed and is refused; a register without a log must be zero.
    """
    register, log = evidence.get("rtmr_register"), evidence.get("cc_eventlog")
    if register is None and log is None:
        return []
    if register is None:
        raise EvidenceMismatch("cc_eventlog without rtmr_register: its events cannot be replayed")
    data = None if log is None else _log_bytes(log)
    return replayed_events(data, SYSTEM_MR_INDEX, _register(register, "rtmr_register"), "rtmr_register")


def tdx_events(evidence: Mapping, rtmr3: bytes) -> list[Event]:
    """The replayed AAEL events of ``tdx`` evidence; ``cc_eventlog`` null: none, nothing replayed
    (Trustee's tdx verifier skips the integrity check then, and so does this)."""
    log = evidence.get("cc_eventlog")
    if log is None:
        return []
    return replayed_events(_log_bytes(log), RTMR3_MR_INDEX, rtmr3, "the quote's RTMR3")


def is_model_event(event: Event) -> bool:
    return event.domain == MODEL_DOMAIN and event.operation == MODEL_OPERATION


def _event_denial(event: Event, n: int, reference: Mapping[str, tuple[str, ...]]) -> str | None:
    """Why load-model event ``n`` fails the rule, or None. The model-id and hash come first: a
    client quotes only the first 160 characters of a denial."""
    where = f"load-model event {n}"
    try:
        content = json.loads(event.content)
    except (ValueError, RecursionError):
        return f"{where}: its content is not JSON: {event.content[:EXCERPT]!r}"
    if not isinstance(content, dict):
        return f"{where}: its content is JSON but not an object: {event.content[:EXCERPT]!r}"
    missing = [k for k in ("model-id", "hash") if k not in content]
    if missing:
        return f"{where}: its content has no {' and no '.join(map(repr, missing))} member"
    model_id, digest = content["model-id"], content["hash"]
    if not isinstance(model_id, str) or not isinstance(digest, str):
        return f"{where}: its model-id and hash must be strings: {event.content[:EXCERPT]!r}"
    key = MODEL_REFERENCE_PREFIX + model_id
    named = f"model-id {json.dumps(model_id)} hash {json.dumps(digest)}"
    values = reference.get(key)
    if values is None:
        return f"{named}: no reference value {key} is registered ({where})"
    if digest not in values:
        return f"{named}: not among the {len(values)} reference value(s) of {key} ({where})"
    return None


def model_denial(events: list[Event] | None, reference: Mapping[str, tuple[str, ...]],
                 require_model_event: bool, tee: str) -> str | None:
    """Why the PAI model rule denies a resource, or None when it passes.

    ``events`` None: the evidence has no register at all (``sample``), so it can never show a
    model event; it passes only when none is required.
    """
    if events is None:
        if require_model_event:
            return (f"{tee} evidence carries no measurement register, so no load-model event; the "
                    "policy requires one (require_model_event)")
        return None
    models = [e for e in events if is_model_event(e)]
    if require_model_event and not models:
        return (f"no {MODEL_OPERATION} event ({MODEL_DOMAIN}) among the {len(events)} replayed AAEL "
                "event(s); the policy requires one (require_model_event)")
    for n, event in enumerate(models, 1):
        reason = _event_denial(event, n, reference)
        if reason is not None:
            return reason
    return None
