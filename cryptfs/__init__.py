"""cryptfs: read and write the gocryptfs v2 on-disk format."""

__version__ = "0.1.0"
