"""A local Trustee-compatible key broker for laptops and tests (never for production).

It speaks KBS protocol 0.1.0 or 0.4.0 on loopback, verifies ``sample``, ``system`` and ``tdx``
evidence, answers errors in Trustee's JSON form with Trustee's status codes, and logs each
attestation and release without secrets. Measured launch is checked as Trustee checks it: the
event log is replayed to its register at /attest, and the PAI model rule judges the replayed
``pai/load-model`` events against reference values at resource release. Quote signatures are
not checked: there is no collateral here.

* :mod:`.policy`: :class:`Policy` (the ``--policy`` JSON file, reference values, RVPS messages);
* :mod:`.measured`: the event-log replay and the PAI model rule;
* :mod:`.core`: :class:`Broker`, the sessions and the evidence checks;
* :mod:`.server`: the HTTP handler, :func:`serve`, :func:`load_resources`.

The policy format and what is (and is not) checked: docs/agent.md, section on the broker.
"""

from .core import ERROR_TYPE, MAX_BODY, SESSION_SECONDS, Broker, Refusal, Session, log, typed_jwk
from .measured import EvidenceMismatch, model_denial
from .policy import TEES, Policy, check_reference, load_reference_message, merge_reference
from .server import load_resources, make_handler, serve

__all__ = [
    "ERROR_TYPE", "MAX_BODY", "SESSION_SECONDS", "TEES", "Broker", "EvidenceMismatch", "Policy", "Refusal",
    "Session", "check_reference", "load_reference_message", "load_resources", "log", "make_handler",
    "merge_reference", "model_denial", "serve", "typed_jwk",
]
