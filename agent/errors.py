"""One exception class per failure kind; each carries its exit codes.

The CLI has a single handler that prints ``agent: error: <message>`` and exits with
``exc.exit_code``. ``agent run`` (and ``agent check``) exit with ``exc.run_exit_code`` instead:
its own failures use 111-127 so that the model server's codes pass through unambiguously, and
the class is the mapping (a new failure kind cannot be forgotten in a table elsewhere). Messages
never contain key material, and whatever part of them came from outside (a broker's reply, a
redirect target, a resource path) has passed through :func:`untrusted` first: a broker, or
whoever sits between it and the VM, must not be able to forge log lines or terminal output.
"""

from __future__ import annotations

from cryptfs.core.errors import Failure
from cryptfs.core.text import display

from . import exitcodes

EXCERPT = 160  # characters of outside text a message quotes; the rest is cut, with "…"


def untrusted(value: str | bytes | bytearray, limit: int | None = EXCERPT) -> str:
    """Outside text made safe to print or log: one line, control characters escaped, at most
    ``limit`` characters (``None``: all).

    :func:`cryptfs.core.text.display` does the escaping (control characters, invalid UTF-8);
    this only cuts to ``limit`` and turns a ``str`` into the bytes display expects without
    failing on lone surrogates, which JSON's ``\\ud800`` escapes produce.
    """
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value if limit is None else value[:limit])
        cut = limit is not None and len(value) > limit
    else:
        text = str(value)
        cut = limit is not None and len(text) > limit
        raw = (text[:limit] if cut else text).encode("utf-8", "backslashreplace")
    return display(raw) + ("…" if cut else "")


class AgentError(Failure):
    """Base class: a failure the user can act on."""

    exit_code = exitcodes.ERROR
    run_exit_code = exitcodes.RUN_ERROR  # a failure of the agent itself that no subclass names


class UsageError(AgentError):
    exit_code = exitcodes.USAGE
    run_exit_code = exitcodes.RUN_USAGE


class QuoteError(AgentError):
    """A TDX quote is malformed or unsupported, or it fails a check_quote policy check.

    ``offset`` is the absolute byte offset in the quote where the problem was found, when
    there is one; the message always says it too.
    """

    exit_code = exitcodes.QUOTE_INVALID

    def __init__(self, message: str, offset: int | None = None):
        self.offset = offset
        super().__init__(message)


class QuoteVerificationError(AgentError):
    """An offline signature, QE-binding or certificate-chain check of a quote failed."""

    exit_code = exitcodes.QUOTE_UNVERIFIED


class AttesterError(AgentError):
    """No usable attester, or the evidence could not be collected; says what was looked for."""

    exit_code = exitcodes.ATTESTER
    run_exit_code = exitcodes.RUN_ATTESTER


class KbsError(AgentError):
    """Base class of the key-broker failures."""


class BrokerUnreachable(KbsError):
    exit_code = exitcodes.UNREACHABLE
    run_exit_code = exitcodes.RUN_UNREACHABLE


class VersionMismatch(KbsError):
    exit_code = exitcodes.VERSION_MISMATCH
    run_exit_code = exitcodes.RUN_VERSION_MISMATCH


class EvidenceRefused(KbsError):
    exit_code = exitcodes.EVIDENCE_REFUSED
    run_exit_code = exitcodes.RUN_EVIDENCE_REFUSED


class PolicyDenied(KbsError):
    exit_code = exitcodes.DENIED
    run_exit_code = exitcodes.RUN_DENIED


class ResourceNotFound(KbsError):
    exit_code = exitcodes.NOT_FOUND
    run_exit_code = exitcodes.RUN_NOT_FOUND


class KbsProtocolError(KbsError):
    """A reply we cannot use: not JSON (or nested too deeply), too large, no nonce or token, a JWE
    that does not decrypt."""

    exit_code = exitcodes.PROTOCOL
    run_exit_code = exitcodes.RUN_PROTOCOL


class NoKbs(KbsError):
    """No KBS answers at the broker URL: ``/auth`` is 404 in every dialect, or it redirects.

    Its own code, because the usual cause is a forgotten path prefix in TRUSTEE_URL, not an
    attestation failure; the operator must look at the URL, not at the policy.
    """

    exit_code = exitcodes.NO_KBS
    run_exit_code = exitcodes.RUN_NO_KBS


# agent run's own failures: only run and check raise them, so both codes are the run code.


class ConfigurationError(AgentError):
    """The run configuration is invalid or partial; the message names the variable."""

    exit_code = run_exit_code = exitcodes.RUN_CONFIG


class MountFailed(AgentError):
    """The mount (or the copy into RAM) did not come up; ``mount_code`` is the mount child's exit code."""

    exit_code = run_exit_code = exitcodes.RUN_MOUNT

    def __init__(self, message: str, mount_code: int | None = None):
        super().__init__(message)
        self.mount_code = mount_code

    @property
    def wrong_key(self) -> bool:
        """Whether the key from the broker does not unlock the model (:class:`WrongKey`)."""
        return isinstance(self, WrongKey)


class WrongKey(MountFailed):
    """The key from the broker does not unlock the model: the stored secret is the one to check."""

    exit_code = run_exit_code = exitcodes.RUN_WRONG_KEY


class ModelRejected(AgentError):
    """The encrypted model is authentic-looking but not the pinned one, or fails authentication."""

    exit_code = run_exit_code = exitcodes.RUN_MODEL_REJECTED


class CommandNotFound(AgentError):
    """The command given after ``--`` does not exist (as a shell's 127)."""

    exit_code = run_exit_code = exitcodes.RUN_COMMAND_NOT_FOUND


class CommandNotExecutable(AgentError):
    """The command given after ``--`` exists but cannot be executed (as a shell's 126)."""

    exit_code = run_exit_code = exitcodes.RUN_COMMAND_NOT_EXECUTABLE


class MeasurementError(AttesterError):
    """A measurement could not be recorded, or the event log and its register disagree.

    An attester failure (same exit codes): what is measured is part of the evidence. The message
    names the log or register file involved.
    """


class MeasurementUnavailable(MeasurementError):
    """A measurement is required but the attester has no register to extend; says what was looked for."""
