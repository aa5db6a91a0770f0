"""``python -m agent reference``: the owner's side of measured launch, without any key.

Trustee's PAI rule releases the key only when the instance's ``pai/load-model`` event carries a
hash registered for its model-id. The owner must therefore register exactly the hash the
instance will measure, and can only get it from the ciphertext (the key is in KMS, and the
instance measures before it has the key). So this command runs the very code ``agent run``
runs: the method's :meth:`~agent.run.backends.MountBackend.model_digest` for the hash, and
:mod:`agent.run.launch` for the model-id and the event text. It prints the event, its SHA-384
event digest (what the register is extended with), and the reference value as an RVPS
``sample`` extractor message, the form ``rvps-tool register`` and the trustee gateway's
``POST /api/rvps/register`` take::

    {"version":"0.1.0","type":"sample","payload":"<base64 of {"measurement.model.<id>":["<hash>"]}>"}
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from . import exitcodes
from .b64 import b64encode
from .errors import AgentError, UsageError
from .measure import Event
from .run import launch
from .run.backends import BACKENDS

__all__ = ["RVPS_MESSAGE_VERSION", "ModelReference", "add_parser", "cmd_reference", "model_reference",
           "rvps_message"]

RVPS_MESSAGE_VERSION = "0.1.0"  # the only message version the RVPS accepts
# MR index of the event shown: RTMR3 (CCMR 4), as on tdx; the event digest does not depend on it
SHOWN_MR_INDEX = 4


def rvps_message(values: dict[str, list[str]]) -> str:
    """The RVPS ``sample`` extractor message for ``values`` (name -> accepted values), compact JSON."""
    payload = json.dumps(values, separators=(",", ":")).encode("utf-8")
    return json.dumps({"version": RVPS_MESSAGE_VERSION, "type": "sample", "payload": b64encode(payload)},
                      separators=(",", ":"))


@dataclass(frozen=True)
class ModelReference:
    """One model as an instance measures it, and what the owner registers for it."""

    path: str
    method: str
    model_id: str
    digest: str

    @property
    def event(self) -> Event:
        """The load-model event an instance measures (MEASURE=auto or required, with a register)."""
        return Event(SHOWN_MR_INDEX, launch.MODEL_DOMAIN, launch.MODEL_OPERATION,
                     launch.load_model_content(self.model_id, self.digest))

    @property
    def name(self) -> str:
        """The reference value the PAI rule looks the hash up in: ``measurement.model.<model-id>``."""
        return launch.reference_name(self.model_id)

    @property
    def message(self) -> str:
        """The RVPS message registering this model's hash, and only it, under :attr:`name`."""
        return rvps_message({self.name: [self.digest]})

    def to_dict(self) -> dict:
        """What ``--json`` prints."""
        event = self.event
        return {"path": self.path, "method": self.method, "model_id": self.model_id, "hash": self.digest,
                "events": [{"domain": event.domain, "operation": event.operation, "content": event.content,
                            "text": event.text, "sha384": event.digest.hex()}],
                "reference": {self.name: [self.digest]}, "rvps_message": self.message,
                "gateway_body": {"message": self.message}}


def _method(path: str, method: str | None) -> str:
    """``--method``, else what the directory is (gocryptfs.conf or .sam/manifest.json)."""
    from .run.backends.detect import identify

    if method:
        return method
    kind = identify(path)
    if kind not in BACKENDS:
        raise UsageError(f"{path}: neither a gocryptfs directory (gocryptfs.conf) nor a Sam package "
                         f"(.sam/manifest.json); give --method {' or '.join(BACKENDS)}")
    return kind


def model_reference(path: str, method: str | None = None, model_id: str | None = None,
                    key_uri: str | None = None) -> ModelReference:
    """The reference of the encrypted model at ``path``: its digest computed as ``run`` computes it.

    The model-id is ``model_id``, else the tag of ``key_uri``, as ``run`` takes MODEL_ID, else
    the tag of DECRYPTION_KEY_URI.
    """
    from .run.config import RunConfig

    if not model_id and not key_uri:
        raise UsageError("give --model-id ID (the instance's MODEL_ID) or --key-uri kbs:///REPO/TYPE/TAG "
                         "(its DECRYPTION_KEY_URI, whose tag is the default model-id)")
    try:
        model_id = launch.check_model_id(model_id, "--model-id") if model_id else \
            launch.default_model_id(key_uri)
    except AgentError as e:
        raise UsageError(str(e)) from None
    method = _method(path, method)
    try:
        digest = BACKENDS[method](RunConfig(True, cipher_dir=path, method=method)).model_digest()
    except AgentError as e:  # run's own codes (112, 123) mean nothing to an owner's script
        raise AgentError(str(e)) from None
    return ModelReference(path, method, model_id, digest)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``reference``'s options: the instance's settings that decide the event (method, model-id)."""
    p = sub.add_parser("reference", help="print the events an instance will measure for a model, and the "
                                         "reference value to register in Trustee's RVPS (no key needed)",
                       description="Computes the model's hash from the ciphertext as agent run does, and "
                                   "prints the pai/load-model event and the RVPS 'sample' message.")
    p.add_argument("path", metavar="ENCRYPTED_MODEL_DIR",
                   help="the gocryptfs directory or Sam package, as the instance's ENCRYPTED_MODEL_PATH")
    p.add_argument("--method", choices=tuple(BACKENDS),
                   help="the instance's ENCRYPTION_METHOD (default: told from the directory)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--model-id", metavar="ID", help="the instance's MODEL_ID")
    who.add_argument("--key-uri", metavar="kbs:///REPO/TYPE/TAG",
                     help="the instance's DECRYPTION_KEY_URI: its tag is the model-id (run's default)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", metavar="FILE", help="also write the RVPS message to FILE (for rvps-tool "
                                                "register --path FILE)")


def cmd_reference(args: argparse.Namespace) -> int:
    """Print the reference (text or ``--json``); ``--out`` writes the RVPS message alone."""
    ref = model_reference(args.path, args.method, args.model_id, args.key_uri)
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(ref.message + "\n")
        except OSError as e:
            raise AgentError(f"--out {args.out}: {e.strerror or e}") from None
    if args.json:
        print(json.dumps(ref.to_dict()))
        return exitcodes.OK
    event = ref.event
    print(f"model:    {ref.path} ({ref.method})\nmodel-id: {ref.model_id}\nhash:     {ref.digest}\n")
    print("An instance (agent run, MEASURE=auto or required) measures, before it asks for the key:")
    print(f"  event:   {event.text}\n  SHA-384: {event.digest.hex()}")
    print(f"and an event of its own, {launch.AGENT_DOMAIN} {launch.COMMAND_OPERATION}, that names the "
          "command (not a reference value).\n")
    print(f"Reference value {ref.name} for Trustee's RVPS (sample extractor message):")
    print(ref.message)
    print(f"\nRegister it: rvps-tool register --path FILE{' (' + args.out + ')' if args.out else ''}, or "
          "POST /api/rvps/register on the trustee gateway with the body {\"message\": \"<the message above, "
          "as a JSON string>\"}.")
    return exitcodes.OK
