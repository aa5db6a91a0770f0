"""The ``agent run`` / ``agent check`` configuration: flags win over the environment.

Every flag of ``run`` has an environment variable (:data:`ENV`), because a container platform
(EAS) sets variables, not argv. Secure mode is on when DECRYPTION_KEY_URI is set. With none of
the variables set the command is started as it is (a plain image still works); with some set
but not DECRYPTION_KEY_URI the run is refused, so that a typo cannot serve the model in the
clear. Everything that can be checked without the key is checked here, before any network
traffic: a mistake must never cost a key release, nor surface as another failure's exit code.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .. import binding, protocol
from ..errors import ConfigurationError
from .backends import BACKENDS, DEFAULT_METHOD, MountBackend
from .flags import parse_allowed
from .launch import MEASURE_MODES, check_model_id, default_model_id

__all__ = ["DEFAULT_MOUNT_PATH", "DEFAULT_TIMEOUT", "ENV", "LOG_FORMATS", "MEASURE_MODES", "METHODS",
           "MOUNT_MODES", "RunConfig", "check_key_uri", "log_format"]

# RunConfig field (= the flag's argparse dest) -> the environment variable it stands for
# (docs/agent.md lists them); the flag wins over the variable.
ENV = {
    "url": "TRUSTEE_URL",
    "key_uri": "DECRYPTION_KEY_URI",
    "method": "ENCRYPTION_METHOD",
    "cipher_dir": "ENCRYPTED_MODEL_PATH",
    "mount_path": "MODEL_MOUNT_PATH",
    "attester": "ATTESTER",
    "expect_digest": "EXPECTED_MODEL_DIGEST",
    "mode": "MOUNT_MODE",
    "ca_bundle": "TRUSTEE_CA_BUNDLE",
    "require_tls": "TRUSTEE_REQUIRE_TLS",
    "timeout": "TRUSTEE_TIMEOUT",
    "dialect": "KBS_DIALECT",
    "key_alg": "KEY_ALG",
    "allow_debug": "ALLOW_DEBUG",
    "log_format": "LOG_FORMAT",
    "gocryptfs_flags": "GOCRYPTFS_FLAGS",
    "model_id": "MODEL_ID",
    "measure": "MEASURE",
    "warmup": "MODEL_WARMUP",
}
DEFAULT_MOUNT_PATH = "/mnt/model"
DEFAULT_TIMEOUT = 60.0  # seconds for everything sent to the broker
METHODS = tuple(BACKENDS)  # ENCRYPTION_METHOD's accepted values
# MOUNT_MODE: fuse serves through the decrypting mount; copy decrypts the whole model into a
# RAM-backed directory, for hosts without FUSE
MOUNT_MODES = ("fuse", "copy")
LOG_FORMATS = ("text", "json")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


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
    expect_digest: str | None = None  # EXPECTED_MODEL_DIGEST: pins one model (tree or package digest)
    ca_bundle: str | None = None
    require_tls: bool = False
    timeout: float = DEFAULT_TIMEOUT
    dialect: str | None = None
    key_alg: str | None = None
    allow_debug: bool = False
    log_format: str = LOG_FORMATS[0]
    gocryptfs_flags: frozenset[str] = field(default_factory=frozenset)  # GOCRYPTFS_FLAGS' allowances
    model_id: str | None = None  # MODEL_ID, else DECRYPTION_KEY_URI's tag: the measured model-id
    measure: str = MEASURE_MODES[0]  # MEASURE: auto, required or off
    warmup: str | None = None  # MODEL_WARMUP: off (default), on, or a budget (8G, 50%) for the mount

    @classmethod
    def resolve(cls, args: Any, environ: Mapping[str, str] = os.environ) -> RunConfig:
        """Flags win over the environment; a partial secure configuration is refused."""
        raw = _raw_values(args, environ)
        common = {"attester": raw["attester"], "allow_debug": _bool(raw, "allow_debug"),
                  "log_format": _choice(raw, "log_format", LOG_FORMATS) or LOG_FORMATS[0]}
        if not raw["key_uri"]:
            given = [ENV[k] for k in ("url", "method", "cipher_dir", "mount_path") if raw[k]]
            if given:
                raise ConfigurationError(
                    f"{', '.join(given)} set but DECRYPTION_KEY_URI is not: refusing to start, so that a "
                    "typo cannot serve the model in the clear (set DECRYPTION_KEY_URI, or unset them)")
            return cls(secure=False, **common)
        missing = [ENV[k] for k in ("url", "cipher_dir") if not raw[k]]
        if missing:
            raise ConfigurationError(f"DECRYPTION_KEY_URI is set but {', '.join(missing)} is not")
        check_key_uri(raw["key_uri"])
        method = (raw["method"] or DEFAULT_METHOD).lower()
        if method not in BACKENDS:
            raise ConfigurationError(f"ENCRYPTION_METHOD={raw['method']!r}: expected {' or '.join(METHODS)}")
        digest = _expected_digest(raw["expect_digest"], method)
        if not os.path.isdir(raw["cipher_dir"]):
            raise ConfigurationError(f"ENCRYPTED_MODEL_PATH={raw['cipher_dir']}: no such directory "
                                     "(is the OSS bucket mounted there?)")
        require_tls = _bool(raw, "require_tls")
        model_id = check_model_id(raw["model_id"]) if raw["model_id"] else default_model_id(raw["key_uri"])
        return cls(True, _check_url(raw["url"], require_tls), raw["key_uri"], method, raw["cipher_dir"],
                   raw["mount_path"] or DEFAULT_MOUNT_PATH, mode=_choice(raw, "mode", MOUNT_MODES) or "fuse",
                   expect_digest=digest, ca_bundle=_ca_bundle(raw["ca_bundle"]), require_tls=require_tls,
                   timeout=_timeout(raw["timeout"]), dialect=_choice(raw, "dialect", protocol.DIALECTS),
                   key_alg=_choice(raw, "key_alg", protocol.KEY_ALGORITHMS, fold=False),
                   gocryptfs_flags=parse_allowed(raw["gocryptfs_flags"]), model_id=model_id,
                   measure=_choice(raw, "measure", MEASURE_MODES) or MEASURE_MODES[0],
                   warmup=_warmup(raw["warmup"]), **common)

    def backend(self) -> MountBackend:
        """The method's backend for this configuration (secure mode only)."""
        return BACKENDS[self.method](self)

    def transport_warning(self) -> str | None:
        """The one-line warning for an ``http://`` broker (None for https): what it risks, what fixes it.

        The key itself is sealed to the TEE's key either way; what http loses is the broker's
        identity, so whoever sits on the path can pose as the broker and hand out a key (and so a
        model) of its choosing.
        """
        if not self.url or urlsplit(self.url).scheme != "http":
            return None
        pin = ("the model is pinned by EXPECTED_MODEL_DIGEST" if self.expect_digest else
               "or pin the model with EXPECTED_MODEL_DIGEST")
        return (f"TRUSTEE_URL={self.url} is plain http: anyone on the network path can pose as the broker "
                "and release a key, and so a model, of their choosing; use https (TRUSTEE_CA_BUNDLE / "
                f"--ca-bundle for a private CA), {pin}; TRUSTEE_REQUIRE_TLS=1 refuses http")


def log_format(args: Any, environ: Mapping[str, str] = os.environ) -> str:
    """``--log-format`` or LOG_FORMAT, for setting up logging before the rest is resolved.

    An invalid value gives text here; :meth:`RunConfig.resolve` then refuses it (112).
    """
    value = (getattr(args, "log_format", None) or environ.get("LOG_FORMAT") or "").strip().lower()
    return value if value in LOG_FORMATS else LOG_FORMATS[0]


def _raw_values(args: Any, environ: Mapping[str, str]) -> dict[str, Any]:
    """Each setting's flag value if given, else its variable's (None when neither is set)."""
    out = {}
    for name, var in ENV.items():
        flag = getattr(args, name, None)
        out[name] = flag if flag not in (None, "", False) else (environ.get(var) or None)
    return out


def _warmup(value: str | None) -> str | None:
    """MODEL_WARMUP: off (the default), on (decrypt ahead while the server starts), or a budget.

    Off by default for now: the pass runs as a thread of the mount daemon, and a daemon killed
    with SIGKILL while that thread waits on its own mount cannot exit until the FUSE connection
    is aborted (fusectl). A warm-up in a process of its own lifts this; until then it is opt-in.
    Returns "on", None (off) or the budget text, checked here so a typo fails before the key.
    """
    text = (value or "off").strip()
    if text.lower() in _TRUE:
        return "on"
    if text.lower() in _FALSE:
        return None
    from cryptfs.core.warmup import parse_budget

    try:
        parse_budget(text)
    except ValueError as e:
        raise ConfigurationError(f"MODEL_WARMUP={value!r}: expected on, off or a budget (8G, 50%): {e}") \
            from None
    return text


def _bool(raw: Mapping[str, Any], name: str) -> bool:
    """A yes/no variable; anything else is refused, so that a typo never silently means no."""
    value = raw[name]
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ConfigurationError(f"{ENV[name]}={value!r}: expected 1/true/yes/on or 0/false/no/off")


def _choice(raw: Mapping[str, Any], name: str, choices: tuple[str, ...], fold: bool = True) -> str | None:
    """One of ``choices`` (any case when ``fold``), None when unset: a variable gets the flag's check."""
    value = raw[name]
    if value is None:
        return None
    text = str(value).strip()
    for choice in choices:
        if text == choice or (fold and text.lower() == choice.lower()):
            return choice
    raise ConfigurationError(f"{ENV[name]}={value!r}: expected {' or '.join(choices)}")


def check_key_uri(uri: str) -> None:
    """The key's URI as the broker client will read it; ``kbs://a/b/c`` gets the spelling it meant."""
    try:
        binding.kbs_resource_path(uri)
    except ValueError as e:
        hint = ""
        rest = uri[len("kbs://"):] if uri.startswith("kbs://") else ""
        if rest and not rest.startswith("/") and len(rest.split("?")[0].split("/")) == 3:
            hint = (f"; did you mean kbs:///{rest} (three slashes: a kbs:// URI has an empty host, and "
                    "kbs://A/B/C makes A the host)?")
        raise ConfigurationError(f"DECRYPTION_KEY_URI: {e}{hint}") from None


def _check_url(url: str, require_tls: bool) -> str:
    """TRUSTEE_URL must be an http(s) URL with a host; http is refused with TRUSTEE_REQUIRE_TLS."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"TRUSTEE_URL={url!r}: expected http(s)://HOST[:PORT][/PREFIX], e.g. "
                                 "https://kbs.example.com or http://alb-host/trustee")
    if require_tls and parts.scheme != "https":
        raise ConfigurationError(f"TRUSTEE_URL={url} is plain http but TRUSTEE_REQUIRE_TLS is set: use an "
                                 "https:// broker URL (with TRUSTEE_CA_BUNDLE for a private CA)")
    return url.strip()


def _ca_bundle(path: str | None) -> str | None:
    """The CA file must exist now: a missing one would otherwise fail only at the TLS handshake."""
    if path and not os.path.isfile(path):
        raise ConfigurationError(f"TRUSTEE_CA_BUNDLE={path}: no such file (the PEM CA certificates for "
                                 "an https broker)")
    return path or None


def _timeout(value: Any) -> float:
    """Positive, finite seconds (a flag gives a float already, a variable a string)."""
    if value is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigurationError(f"TRUSTEE_TIMEOUT={value!r}: expected a positive number of seconds")
    return seconds


def _expected_digest(value: str | None, method: str) -> str | None:
    """EXPECTED_MODEL_DIGEST in the method's canonical form, refused now if malformed (112).

    Checked before the model is even opened: a pin that can never match is a typo, not a
    rejected model.
    """
    if not value:
        return None
    return BACKENDS[method].check_expected_digest(value)
