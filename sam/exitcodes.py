"""Exit codes of the sam commands: the cryptfs numbers wherever the failure is the same kind.

A script that handles ``cryptfs`` exit codes handles ``sam`` ones: 12 is always a wrong key,
26 always tampered or corrupt data, 10 an unusable mount point.
"""

from cryptfs.core.exitcodes import ERROR, INTEGRITY, INTERRUPTED, MOUNTPOINT, OK, USAGE  # noqa: F401 (shared)

# USAGE also covers a key or key ID of the wrong length
PACKAGE = 6  # the package (or MODEL_DIR for pack) is missing or not a directory
OUTPUT = 7  # the output directory is unusable (exists and is not empty, not writable)
MANIFEST = 8  # .sam/manifest.json missing, malformed, or a format version we do not read
KEY_READ = 9  # the key could not be read (empty --key-file, unreadable stdin)
WRONG_KEY = 12  # the key does not unlock this package (or its key ID / KDF salt was altered)
DIGEST_MISMATCH = 13  # the package is not the one --expect-digest names (rollback, swap)
# INTEGRITY (26): a tampered, swapped, truncated, added or missing file

# every code, the shared ones (OK, ERROR, USAGE, MOUNTPOINT, INTEGRITY, INTERRUPTED) included
ALL = dict(sorted(((name, code) for name, code in globals().items() if name.isupper()), key=lambda kv: kv[1]))
