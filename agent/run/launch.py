"""Measured launch, the instance's side: what ``agent run`` records before it asks for the key.

A verifier (Trustee's PAI model rule) can hold the key back from an instance that is about to
serve another model only if the instance's event log says which model it serves, and says it
before the key is released. So once the model is found and its digest known, and before any
request to the broker, ``run`` measures two AAEL events (:mod:`agent.measure`), with the
attester that will then attest, so that they land in the register its evidence reports:

1. ``trustiflux.alibaba.com pai/load-model {"model-id":"<MODEL_ID>","hash":"<digest>"}``: the
   event Trustee's rule reads (compact JSON, that key order). ``hash`` is the model's identity
   (:meth:`~agent.run.backends.MountBackend.model_digest`: the gocryptfs tree digest or the Sam
   package digest), the one the mount is then pinned to; ``model-id`` is MODEL_ID, by default
   the tag of DECRYPTION_KEY_URI. The rule looks ``hash`` up in the reference values named
   ``measurement.model.<model-id>``, which the owner registers (``agent reference``).
2. ``cryptfs.agent run/command {"argv":[...],"mount":"...","method":"...","mode":"..."}``: what
   is started on the model and how it is served; our own domain (no one else's rule reads it),
   never a secret or the environment.

MEASURE picks what happens where there is no register to extend: ``auto`` (default) measures
where one exists and warns where not (``sample``; ``tdx`` on a kernel without RTMR extension),
``required`` refuses to go on (113, before any request to the broker), ``off`` measures nothing.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence

from .. import binding
from ..errors import ConfigurationError, MeasurementUnavailable
from ..measure import Availability, Event, measure, register_for

__all__ = ["AGENT_DOMAIN", "COMMAND_OPERATION", "MEASURE_MODES", "MODEL_DOMAIN", "MODEL_ID_RE",
           "MODEL_OPERATION", "REFERENCE_PREFIX", "availability", "check_model_id", "command_content",
           "default_model_id", "load_model_content", "measure_launch", "reference_name"]

log = logging.getLogger("agent.run")

MODEL_DOMAIN = "trustiflux.alibaba.com"  # Trustee's PAI rule (policy/pai_default.rego) reads these
MODEL_OPERATION = "pai/load-model"
REFERENCE_PREFIX = "measurement.model."  # the rule's reference-value name: this and the model-id
AGENT_DOMAIN = "cryptfs.agent"  # ours: no verifier rule of anyone else's reads it
COMMAND_OPERATION = "run/command"
MEASURE_MODES = ("auto", "required", "off")  # MEASURE's values, the default first
# A model-id is a word of a reference-value name and a log field: a KBS tag's characters, plus
# the ':', '@', '/' and '+' of registry and Hugging Face names; at most 128 characters.
MODEL_ID_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.:@/+-]{0,127}")
_COMPACT = {"separators": (",", ":"), "ensure_ascii": False}  # as serde_json writes it


def check_model_id(value: str, what: str = "MODEL_ID") -> str:
    """``value`` if it can name a model in a reference value; a ConfigurationError naming ``what``."""
    if not MODEL_ID_RE.fullmatch(value):
        raise ConfigurationError(f"{what}={value!r}: a model ID is 1 to 128 characters from A-Z a-z 0-9 and "
                                 "_ . : @ / + - (not starting with . : @ / +), e.g. qwen2.5-7b")
    return value


def default_model_id(key_uri: str) -> str:
    """The tag of ``kbs:///repo/type/tag``: the owner names the key after the model it opens."""
    from .config import check_key_uri  # here: config imports this module

    check_key_uri(key_uri)
    path = binding.kbs_resource_path(key_uri)
    return check_model_id(path.split("?", 1)[0].rsplit("/", 1)[-1], "the tag of DECRYPTION_KEY_URI")


def reference_name(model_id: str) -> str:
    """The reference value Trustee's rule looks the hash up in."""
    return REFERENCE_PREFIX + model_id


def load_model_content(model_id: str, digest: str) -> str:
    """``{"model-id":"<id>","hash":"<digest>"}``: compact, that key order."""
    return json.dumps({"model-id": model_id, "hash": digest}, **_COMPACT)


def _utf8(arg: str) -> str:
    """An argument as UTF-8 text: bytes that are not UTF-8 (surrogate-escaped by Python) as \\xNN."""
    try:
        arg.encode("utf-8")
        return arg
    except UnicodeEncodeError:
        return os.fsencode(arg).decode("utf-8", "backslashreplace")


def command_content(argv: Sequence[str], mount_path: str, method: str, mode: str) -> str:
    """``{"argv":[...],"mount":"...","method":"...","mode":"..."}``: compact; no environment, no key."""
    return json.dumps({"argv": [_utf8(a) for a in argv], "mount": _utf8(mount_path), "method": method,
                       "mode": mode}, **_COMPACT)


def availability(attester_name: str, environ: Mapping[str, str] = os.environ) -> Availability:
    """Whether ``attester_name`` has a register to measure into here, and what was found."""
    register = register_for(attester_name, environ)
    if register is None:
        return Availability(False, f"attester {attester_name!r} has no measurement register (no TEE)")
    return register.available()


def measure_launch(measure_mode: str, attester_name: str, events: Sequence[tuple[str, str, str]],
                   environ: Mapping[str, str] = os.environ) -> list[Event]:
    """Measure ``events`` (domain, operation, content) in order; the events measured (none: not measured).

    Where there is no register: MEASURE=required raises :class:`MeasurementUnavailable` (113)
    before anything is measured, so that no request reaches the broker; auto warns once. A
    register that exists but cannot be written fails either way (:class:`MeasurementError`).
    """
    if measure_mode == "off":
        log.warning("MEASURE=off: the model and the command are NOT measured; a verifier that checks the "
                    "model (Trustee's PAI rule with require_model_event) will refuse the key")
        return []
    found = availability(attester_name, environ)
    if not found:
        if measure_mode == "required":
            raise MeasurementUnavailable(
                f"MEASURE=required, but the model cannot be measured: {found.reason}. Nothing was "
                "sent to the broker and nothing was mounted. Use an attester with a register (tdx on Linux "
                ">= 6.16 exposes RTMR3; system keeps a software register), or set MEASURE=auto")
        log.warning("the model and the command are NOT measured: %s; a verifier will not see which model "
                    "this instance serves (MEASURE=required refuses to run like this)", found.reason)
        return []
    return [measure(domain, operation, content, attester_name, environ, required=measure_mode == "required",
                    log=log) for domain, operation, content in events]
