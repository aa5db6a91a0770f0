"""The dev broker's policy: which TEEs and resources, tdx/system checks, and reference values.

One JSON file (``--policy FILE``), every member optional::

    {"allow_tees": ["sample", "system", "tdx"],
     "allow_resources": ["*"], "deny_resources": ["default/private/*"],
     "tdx": {"allow_debug": false, "mr_td": ["<hex>"], "rtmr0": ["<hex>"], ...},
     "system": {"environment": {"eas-test": "123"}},
     "reference": {"measurement.model.<model-id>": ["<hash>", ...]},
     "require_model_event": false}

``reference`` is what Trustee's RVPS hands its policy as ``data.reference``: a name, a list of
accepted values. An owner registers model hashes in the RVPS with a "sample" extractor message;
``--reference FILE`` takes that same message, so what is tested here is byte for byte what is
registered there (:func:`load_reference_message`). Registering a name twice adds its values
(openanolis RVPS merges hash lists), and so does every file here: the policy file's values, then
each message's, are united per name.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..b64 import b64decode
from ..errors import UsageError

TEES = ("sample", "system", "tdx")
MEMBERS = ("allow_tees", "allow_resources", "deny_resources", "tdx", "system", "reference",
           "require_model_event")
RVPS_MESSAGE_VERSION = "0.1.0"  # the only Message version the RVPS accepts (rvps/src/lib.rs)

Reference = dict[str, tuple[str, ...]]


def check_reference(obj: object, where: str) -> Reference:
    """``{name: [value, ...]}`` as a dict of tuples; a :class:`UsageError` naming ``where`` otherwise.

    Values must be strings, as the RVPS stores them (its sample extractor reads ``Vec<String>``):
    a number in the file would never equal the string hash an event carries, so it is refused
    here rather than silently never matching.
    """
    if not isinstance(obj, Mapping):
        raise UsageError(f"{where}: expected a JSON object of name -> list of strings, not "
                         f"{type(obj).__name__}")
    out: Reference = {}
    for name, values in obj.items():
        if not isinstance(name, str) or not isinstance(values, (list, tuple)):
            raise UsageError(f"{where}: {name!r} must map to a list of strings")
        bad = next((v for v in values if not isinstance(v, str)), None)
        if bad is not None:
            raise UsageError(f"{where}: {name!r} holds {bad!r}, not a string")
        out[name] = tuple(dict.fromkeys(values))
    return out


def merge_reference(old: Mapping[str, tuple[str, ...]], new: Mapping[str, tuple[str, ...]]) -> Reference:
    """``old`` with ``new``'s values added per name, duplicates dropped, order kept (the RVPS's merge)."""
    out = dict(old)
    for name, values in new.items():
        out[name] = tuple(dict.fromkeys(out.get(name, ()) + tuple(values)))
    return out


def _read_json(path: str, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise UsageError(f"{what} {path}: {e}") from None


def load_reference_message(path: str) -> Reference:
    """The reference values of an RVPS message file, as ``rvps-tool register`` would take it.

    ``{"version": "0.1.0", "type": "sample", "payload": "<base64 of {name: [values]}>"}``
    (``version`` defaults to 0.1.0, as in the RVPS). The gateway's body form
    ``{"message": "<that JSON as a string>"}`` is accepted too. Only the ``sample`` extractor is
    understood: the others verify provenance (in-toto, SLSA) that a dev broker cannot.
    """
    what = f"--reference {path}"
    obj = _read_json(path, "--reference")
    if isinstance(obj, dict) and set(obj) == {"message"} and isinstance(obj["message"], str):
        try:
            obj = json.loads(obj["message"])
        except (ValueError, RecursionError) as e:
            raise UsageError(f"{what}: its message is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{what}: expected an RVPS message, a JSON object")
    version = obj.get("version", RVPS_MESSAGE_VERSION)
    if version != RVPS_MESSAGE_VERSION:
        raise UsageError(f"{what}: message version {version!r}; the RVPS accepts only "
                         f"{RVPS_MESSAGE_VERSION!r}")
    if obj.get("type") != "sample":
        raise UsageError(f"{what}: message type {obj.get('type')!r}; the dev broker understands only the "
                         "'sample' extractor (a base64 JSON map of name -> values)")
    payload = obj.get("payload")
    try:
        decoded = json.loads(b64decode(payload if isinstance(payload, str) else ""))
    except (ValueError, RecursionError) as e:
        raise UsageError(f"{what}: payload is not the base64 of a JSON object: {e}") from None
    return check_reference(decoded, f"{what} payload")


@dataclass
class Policy:
    """What the dev broker accepts; Python callers build it directly, the CLI with :meth:`load`.

    ``reference`` and ``require_model_event`` drive Trustee's PAI model rule
    (:mod:`agent.broker.measured`); they are checked on construction so that a typo fails at
    start, not as a confusing denial later.
    """

    allow_tees: tuple[str, ...] = TEES
    allow_resources: tuple[str, ...] = ("*",)
    deny_resources: tuple[str, ...] = ()
    tdx: dict = field(default_factory=dict)
    system: dict = field(default_factory=dict)
    reference: Mapping[str, Iterable[str]] = field(default_factory=dict)
    require_model_event: bool = False

    def __post_init__(self) -> None:
        self.reference = check_reference(self.reference, "policy reference")
        if not isinstance(self.require_model_event, bool):
            raise UsageError(f"policy require_model_event must be true or false, not "
                             f"{self.require_model_event!r}")

    @classmethod
    def load(cls, path: str | None = None, references: Iterable[str] = (),
             require_model_event: bool = False) -> Policy:
        """The policy file (or the defaults), then each RVPS message file's values added, then
        ``require_model_event`` switched on if asked (the CLI flag can only make it stricter)."""
        obj = {}
        if path:
            obj = _read_json(path, "policy file")
            if not isinstance(obj, dict):
                raise UsageError(f"policy file {path}: expected a JSON object")
            unknown = set(obj) - set(MEMBERS)
            if unknown:
                raise UsageError(f"policy file {path}: unknown members {sorted(unknown)}")
        try:
            policy = cls(tuple(obj.get("allow_tees", TEES)), tuple(obj.get("allow_resources", ("*",))),
                         tuple(obj.get("deny_resources", ())), dict(obj.get("tdx", {})),
                         dict(obj.get("system", {})), obj.get("reference", {}),
                         obj.get("require_model_event", False))
        except UsageError as e:
            raise UsageError(f"policy file {path}: {e}") from None
        for ref in references:
            policy.reference = merge_reference(policy.reference, load_reference_message(ref))
        policy.require_model_event = policy.require_model_event or bool(require_model_event)
        return policy

    def resource_allowed(self, path: str) -> bool:
        if any(fnmatch.fnmatchcase(path, p) for p in self.deny_resources):
            return False
        return any(fnmatch.fnmatchcase(path, p) for p in self.allow_resources)

    def describe(self) -> str:
        """One line for the start-up log: what the model rule will enforce."""
        models = sum(1 for name in self.reference if name.startswith("measurement.model."))
        return (f"{len(self.reference)} reference value name(s), {models} model(s); a load-model event "
                f"is {'required' if self.require_model_event else 'not required'}")
