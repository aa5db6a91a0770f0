"""One exception class per failure kind; each carries its exit code.

The CLI has a single handler that prints ``agent: error: <message>`` and exits with
``exc.exit_code``. Messages never contain key material.
"""

from __future__ import annotations

from cryptfs.core.errors import Failure

from . import exitcodes


class AgentError(Failure):
    """Base class: a failure the user can act on."""

    exit_code = exitcodes.ERROR


class UsageError(AgentError):
    exit_code = exitcodes.USAGE


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


class KbsError(AgentError):
    """Base class of the key-broker failures."""


class BrokerUnreachable(KbsError):
    exit_code = exitcodes.UNREACHABLE


class VersionMismatch(KbsError):
    exit_code = exitcodes.VERSION_MISMATCH


class EvidenceRefused(KbsError):
    exit_code = exitcodes.EVIDENCE_REFUSED


class PolicyDenied(KbsError):
    exit_code = exitcodes.DENIED


class ResourceNotFound(KbsError):
    exit_code = exitcodes.NOT_FOUND


class KbsProtocolError(KbsError):
    """A reply we cannot use: not JSON, no nonce or token, a JWE that does not decrypt."""

    exit_code = exitcodes.PROTOCOL


class ConfigurationError(AgentError):
    """The run configuration is invalid or partial; the message names the variable."""

    exit_code = exitcodes.RUN_CONFIG


class MountFailed(AgentError):
    """cryptfs mount did not come up; ``wrong_key`` when the key does not unlock the cipher dir."""

    exit_code = exitcodes.RUN_MOUNT

    def __init__(self, message: str, cryptfs_code: int | None = None):
        super().__init__(message)
        self.cryptfs_code = cryptfs_code
        self.wrong_key = cryptfs_code == 12  # cryptfs.exitcodes.PASSWORD_INCORRECT


class ModelRejected(AgentError):
    """The encrypted model is authentic-looking but not the pinned one, or fails authentication."""

    exit_code = exitcodes.RUN_MODEL_REJECTED
