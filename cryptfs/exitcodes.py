"""Exit codes of the cryptfs commands.

Where gocryptfs has a code for the same failure we use its number, so scripts written
for gocryptfs keep working (wrong password 12, fsck errors 26, config 8, cipherdir 6); 13 is
sam's number for a pinned digest that does not match.
"""


from .core.exitcodes import ERROR, INTEGRITY, INTERRUPTED, MOUNTPOINT, OK, USAGE  # noqa: F401 (shared codes)

CIPHERDIR = 6  # CIPHERDIR (or PLAINDIR) missing, not a directory, or not empty for encrypt
OUTPUT = 7  # the output directory is unusable (not empty, not writable)
CONFIG = 8  # gocryptfs.conf missing, unreadable, invalid or using an unsupported feature
PASSWORD_READ = 9  # the password or master key could not be read (empty, extpass failed)
PASSWORD_INCORRECT = 12  # the password or master key does not unlock this filesystem
DIGEST_MISMATCH = 13  # the tree is not the one --expect-digest names (swapped, added, rolled back...)

# every code, the shared ones (OK, ERROR, USAGE, MOUNTPOINT, INTEGRITY, INTERRUPTED) included
ALL = dict(sorted(((name, code) for name, code in globals().items() if name.isupper()), key=lambda kv: kv[1]))
