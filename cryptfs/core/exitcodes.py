"""The exit codes every command line of the project gives the same meaning.

cryptfs, sam and agent derive these from here and add their own; where gocryptfs has a code
for the same failure we use its number (26 for tampered data, 10 for the mount point).
"""

OK = 0
ERROR = 1  # an I/O error or anything not listed
USAGE = 2  # bad command line
MOUNTPOINT = 10  # the mount point is unusable (missing, not empty, already mounted) or FUSE is not
INTEGRITY = 26  # authentication failed: tampered or corrupt data
INTERRUPTED = 130  # stopped by SIGINT (Ctrl-C)
