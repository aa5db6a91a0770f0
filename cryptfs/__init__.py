"""cryptfs: read and write the gocryptfs v2 on-disk format."""

from cryptfs.core.version import VERSION as __version__

__all__ = ["__version__"]
