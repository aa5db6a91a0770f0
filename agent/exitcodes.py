"""Exit codes of the ``python -m agent`` commands.

Small numbers are for what exists today (``quote``, ``get-resource``, ``broker``). ``run``
uses 111-127 for its own failures, so that the model server's own exit codes pass through
unambiguously (as ``env``/``timeout`` use 125-127). The range began at 112; when 112-127 were all
taken, RUN_NO_KBS took 111, the next number down, rather than renumbering a code scripts know.
OK, ERROR, USAGE and INTERRUPTED are the project's shared codes (:mod:`cryptfs.core.exitcodes`);
the rest are the agent's own.
"""

# OK, ERROR (an I/O error, e.g. FILE cannot be read, or anything not listed below), USAGE (bad
# command line), INTERRUPTED (stopped by SIGINT, Ctrl-C)
from cryptfs.core.exitcodes import ERROR, INTERRUPTED, OK, USAGE  # noqa: F401 (shared codes)

QUOTE_INVALID = 3  # the quote is malformed or unsupported, or check_quote refused it
QUOTE_UNVERIFIED = 4  # --verify: a signature, the QE binding or the certificate chain failed
ATTESTER = 5  # no usable attester (no TEE found), or evidence could not be collected
UNREACHABLE = 6  # the key broker cannot be reached (after the retries)
VERSION_MISMATCH = 7  # the broker speaks no KBS protocol version we know
EVIDENCE_REFUSED = 8  # the broker refused the evidence (attestation failed)
DENIED = 9  # the broker's policy denies the resource to this environment
NOT_FOUND = 10  # the broker has no such resource
PROTOCOL = 11  # the broker's reply is malformed or cannot be decrypted
NO_KBS = 12  # no KBS at the broker URL: /auth answered 404 (a missing path prefix?) or redirected
# python -m agent run: its own failures (the command's own code passes through, 128+N for a
# signal); a range model servers rarely use, like env/timeout's 125-127.
RUN_NO_KBS = 111  # no KBS at TRUSTEE_URL: /auth answered 404 or redirected (check the URL's path)
RUN_CONFIG = 112  # the configuration is invalid or partial (DECRYPTION_KEY_URI missing, ...)
RUN_ATTESTER = 113  # no usable attester / evidence could not be collected / the launch cannot be measured
RUN_UNREACHABLE = 114  # the key broker cannot be reached
RUN_VERSION_MISMATCH = 115  # the broker speaks no KBS protocol version we know
RUN_EVIDENCE_REFUSED = 116  # the broker refused the evidence
RUN_DENIED = 117  # the broker's policy denies the key
RUN_NOT_FOUND = 118  # the broker has no such key
RUN_PROTOCOL = 119  # the broker's reply is malformed or cannot be decrypted
RUN_MOUNT = 120  # the mount failed (FUSE unavailable, bad cipher dir, busy mount point)
RUN_WRONG_KEY = 121  # the key from the broker does not unlock the cipher dir
RUN_MOUNT_DIED = 122  # the mount daemon died while the command ran; the command was stopped
RUN_MODEL_REJECTED = 123  # not the pinned (or the measured) model; a Sam package fails authentication
RUN_USAGE = 124  # bad command line for run
RUN_ERROR = 125  # any other failure of the agent itself
RUN_COMMAND_NOT_EXECUTABLE = 126  # the command exists but cannot be executed
RUN_COMMAND_NOT_FOUND = 127  # the command was not found

# every code, the shared ones (OK, ERROR, USAGE, INTERRUPTED) included, sorted by number
ALL = dict(sorted(((name, code) for name, code in globals().items() if name.isupper()), key=lambda kv: kv[1]))
