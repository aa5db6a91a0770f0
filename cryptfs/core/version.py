"""The project's version, kept in one place: ``version`` in pyproject.toml.

Read from the installed distribution's metadata, so ``cryptfs.__version__``, ``sam.__version__``
(written into every Sam manifest as the packer version) and the agent's User-Agent all follow
pyproject.toml. ``0.0.0+unknown`` only where the distribution is not installed at all (the
source tree on ``sys.path`` without ``pip install``).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DIST = "confidential-model-serving"

try:
    VERSION: str = version(DIST)
except PackageNotFoundError:  # not installed: running from a bare source tree
    VERSION = "0.0.0+unknown"

__all__ = ["DIST", "VERSION"]
