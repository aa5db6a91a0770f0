"""The ENCRYPTION_METHOD registry: one :class:`MountBackend` per accepted value.

``ENCRYPTION_METHOD``'s accepted values, the ``--method`` help and the demo's choices all come
from :data:`BACKENDS`, so a new format is one module and one line here.
"""

from __future__ import annotations

from .base import COMMON_REASONS, MountBackend
from .gocryptfs import GocryptfsBackend
from .sam import SamBackend

__all__ = ["BACKENDS", "COMMON_REASONS", "DEFAULT_METHOD", "GocryptfsBackend", "MountBackend", "SamBackend"]

BACKENDS: dict[str, type[MountBackend]] = {cls.name: cls for cls in (GocryptfsBackend, SamBackend)}
DEFAULT_METHOD = GocryptfsBackend.name
