"""The ``agent run`` / ``agent check`` configuration: flags win over the environment.

Secure mode is on when DECRYPTION_KEY_URI is set. With none of the variables set the command is
started as it is (a plain image still works); with some set but not DECRYPTION_KEY_URI the run
is refused, so that a typo cannot serve the model in the clear. Everything that can be checked
without the key is checked here, before any network traffic.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import binding
from ..errors import ConfigurationError
from .backends import BACKENDS, DEFAULT_METHOD, MountBackend

__all__ = ["DEFAULT_MOUNT_PATH", "ENV", "METHODS", "MOUNT_MODES", "RunConfig"]

# RunConfig field -> the environment variable its flag stands for (docs/agent.md lists them)
ENV = {
    "url": "TRUSTEE_URL",
    "key_uri": "DECRYPTION_KEY_URI",
    "method": "ENCRYPTION_METHOD",
    "cipher_dir": "ENCRYPTED_MODEL_PATH",
    "mount_path": "MODEL_MOUNT_PATH",
    "attester": "ATTESTER",
    "expect_digest": "EXPECTED_MODEL_DIGEST",
}
DEFAULT_MOUNT_PATH = "/mnt/model"
METHODS = tuple(BACKENDS)  # ENCRYPTION_METHOD's accepted values
# MOUNT_MODE (no flag): fuse serves through the decrypting mount; copy decrypts the whole model
# into a RAM-backed directory, for hosts without FUSE
MOUNT_MODES = ("fuse", "copy")


@dataclass
class RunConfig:
    """What ``run`` and ``check`` act on; ``secure`` is False when the command runs in the clear."""

    secure: bool
    url: str | None = None
    key_uri: str | None = None
    method: str = DEFAULT_METHOD
    cipher_dir: str | None = None
    mount_path: str = DEFAULT_MOUNT_PATH
    attester: str | None = None
    mode: str = MOUNT_MODES[0]
    expect_digest: str | None = None  # EXPECTED_MODEL_DIGEST: pins one Sam package

    @classmethod
    def resolve(cls, args: Any, environ: Mapping[str, str] = os.environ) -> RunConfig:
        """Flags win over the environment; a partial secure configuration is refused."""
        values = {k: getattr(args, k, None) or environ.get(v) or None for k, v in ENV.items()}
        if not values["key_uri"]:
            given = [ENV[k] for k in ("url", "method", "cipher_dir", "mount_path") if values[k]]
            if given:
                raise ConfigurationError(
                    f"{', '.join(given)} set but DECRYPTION_KEY_URI is not: refusing to start, so that a "
                    "typo cannot serve the model in the clear (set DECRYPTION_KEY_URI, or unset them)")
            return cls(secure=False, attester=values["attester"])
        missing = [ENV[k] for k in ("url", "cipher_dir") if not values[k]]
        if missing:
            raise ConfigurationError(f"DECRYPTION_KEY_URI is set but {', '.join(missing)} is not")
        try:
            binding.kbs_resource_path(values["key_uri"])
        except ValueError as e:
            raise ConfigurationError(f"DECRYPTION_KEY_URI: {e}") from None
        method = (values["method"] or DEFAULT_METHOD).lower()
        if method not in BACKENDS:
            raise ConfigurationError(f"ENCRYPTION_METHOD={values['method']!r}: expected "
                                     f"{' or '.join(METHODS)}")
        digest = _expected_digest(values["expect_digest"], method)
        if not os.path.isdir(values["cipher_dir"]):
            raise ConfigurationError(f"ENCRYPTED_MODEL_PATH={values['cipher_dir']}: no such directory "
                                     "(is the OSS bucket mounted there?)")
        mode = (environ.get("MOUNT_MODE") or MOUNT_MODES[0]).lower()
        if mode not in MOUNT_MODES:
            raise ConfigurationError(f"MOUNT_MODE={mode!r}: expected {' or '.join(MOUNT_MODES)}")
        return cls(True, values["url"], values["key_uri"], method, values["cipher_dir"],
                   values["mount_path"] or DEFAULT_MOUNT_PATH, values["attester"], mode, digest)

    def backend(self) -> MountBackend:
        """The method's backend for this configuration (secure mode only)."""
        return BACKENDS[self.method](self)


def _expected_digest(value: str | None, method: str) -> str | None:
    """EXPECTED_MODEL_DIGEST, checked by the method's backend: a method that cannot pin refuses it.

    Refused rather than ignored: an operator who pinned a digest believes the model is pinned.
    """
    if not value:
        return None
    return BACKENDS[method].check_expected_digest(value)
