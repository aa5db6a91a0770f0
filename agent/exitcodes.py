"""Exit codes of the ``python -m agent`` commands.

Small numbers are for what exists today (``quote``, ``get-resource``, ``broker``). The codes
125-127 are left free for the agent-run issue, which will use them for its own failures (as
``env``/``timeout`` do for "the launcher itself failed" as opposed to the launched program's
status).
"""

OK = 0
ERROR = 1  # an I/O error (e.g. FILE cannot be read) or anything not listed below
USAGE = 2  # bad command line
QUOTE_INVALID = 3  # the quote is malformed or unsupported, or check_quote refused it
QUOTE_UNVERIFIED = 4  # --verify: a signature, the QE binding or the certificate chain failed
ATTESTER = 5  # no usable attester (no TEE found), or evidence could not be collected
UNREACHABLE = 6  # the key broker cannot be reached (after the retries)
VERSION_MISMATCH = 7  # the broker speaks no KBS protocol version we know
EVIDENCE_REFUSED = 8  # the broker refused the evidence (attestation failed)
DENIED = 9  # the broker's policy denies the resource to this environment
NOT_FOUND = 10  # the broker has no such resource
PROTOCOL = 11  # the broker's reply is malformed or cannot be decrypted
INTERRUPTED = 130  # stopped by SIGINT (Ctrl-C)

ALL = {
    "OK": OK,
    "ERROR": ERROR,
    "USAGE": USAGE,
    "QUOTE_INVALID": QUOTE_INVALID,
    "QUOTE_UNVERIFIED": QUOTE_UNVERIFIED,
    "ATTESTER": ATTESTER,
    "UNREACHABLE": UNREACHABLE,
    "VERSION_MISMATCH": VERSION_MISMATCH,
    "EVIDENCE_REFUSED": EVIDENCE_REFUSED,
    "DENIED": DENIED,
    "NOT_FOUND": NOT_FOUND,
    "PROTOCOL": PROTOCOL,
    "INTERRUPTED": INTERRUPTED,
}
