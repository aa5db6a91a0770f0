"""An open, tamper-evident model package with the Sam packager's interface.

``python -m sam pack|info|verify|unpack|mount``. The format is ours and documented in
docs/sam-format.md: packages are read by these tools, not by the platform's own Sam.
"""

from cryptfs.core.version import VERSION as __version__

__all__ = ["__version__"]
