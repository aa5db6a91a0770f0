"""Exit codes of the cryptfs commands.

Where gocryptfs has a code for the same failure we use its number, so scripts written
for gocryptfs keep working (wrong password 12, fsck errors 26, config 8, cipherdir 6).
"""

OK = 0
ERROR = 1  # an I/O error or anything not listed below
USAGE = 2  # bad command line
CIPHERDIR = 6  # CIPHERDIR (or PLAINDIR) missing, not a directory, or not empty for encrypt
OUTPUT = 7  # the output directory is unusable (not empty, not writable)
CONFIG = 8  # gocryptfs.conf missing, unreadable, invalid or using an unsupported feature
PASSWORD_READ = 9  # the password or master key could not be read (empty, extpass failed)
MOUNTPOINT = 10  # the mount point is unusable (missing, not empty, already mounted)
PASSWORD_INCORRECT = 12  # the password or master key does not unlock this filesystem
INTEGRITY = 26  # authentication failed: tampered or corrupt content, names or dir IVs
INTERRUPTED = 130  # stopped by SIGINT (Ctrl-C)

ALL = {name: code for name, code in globals().items() if name.isupper()}  # every code above
