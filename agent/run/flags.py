"""Which gocryptfs feature flags ``agent run`` accepts: gocryptfs v2's defaults, the rest on request.

``gocryptfs.conf`` lies on the same untrusted storage as the ciphertext and is not
authenticated by the password: whoever can write the bucket can rewrite its FeatureFlags. Most
rewrites only make the model unreadable, but some weaken what the mount guarantees, e.g.
PlaintextNames lets the attacker rename (swap) files at will, and deterministic names let them
move files between directories. So the agent accepts only the flag set ``gocryptfs -init``
writes by default (v2.x: HKDF GCMIV128 DirIV EMENames LongNames Raw64); each deviation must be
allowed by the operator in GOCRYPTFS_FLAGS (``--gocryptfs-flags``), and is checked before the
key is fetched.
"""

from __future__ import annotations

from ..errors import ConfigurationError

__all__ = ["ALLOWANCES", "DEFAULT_FLAGS", "check_feature_flags", "parse_allowed"]

DEFAULT_FLAGS = ("HKDF", "GCMIV128", "DirIV", "EMENames", "LongNames", "Raw64")
# GOCRYPTFS_FLAGS' tokens -> what allowing it gives up (said when it is refused)
ALLOWANCES = {
    "XChaCha20Poly1305": "XChaCha20-Poly1305 content encryption (gocryptfs -xchacha) instead of AES-GCM",
    "AESSIV": "AES-SIV content encryption (gocryptfs -aessiv), deterministic",
    "DeterministicNames": "no per-directory IVs (gocryptfs -deterministic-names): the same name encrypts "
                          "the same in every directory, so files can be moved between directories",
    "LongNameMax": "a shorter long-name threshold (gocryptfs -longnamemax)",
    "PlaintextNames": "file names are not encrypted (gocryptfs -plaintextnames): whoever can write the "
                      "storage can rename and swap files at will",
}
_NAME_FLAGS = ("DirIV", "EMENames", "LongNames", "Raw64")  # absent with PlaintextNames


def parse_allowed(value: str | None) -> frozenset[str]:
    """GOCRYPTFS_FLAGS (comma or space separated, any case) as canonical tokens; unknown ones refused."""
    if not value:
        return frozenset()
    canonical = {name.lower(): name for name in ALLOWANCES}
    out = set()
    for token in value.replace(",", " ").split():
        name = canonical.get(token.lower())
        if name is None:
            raise ConfigurationError(f"GOCRYPTFS_FLAGS: unknown flag {token!r}; it takes "
                                     f"{', '.join(ALLOWANCES)}")
        out.add(name)
    return frozenset(out)


def deviations(flags: list[str]) -> list[str]:
    """The allowances a filesystem with these FeatureFlags needs (``?X`` for a flag none can allow)."""
    present = set(flags)
    needed = [f for f in flags if f not in DEFAULT_FLAGS]
    for flag in DEFAULT_FLAGS:
        if flag in present:
            continue
        if flag == "GCMIV128" and "XChaCha20Poly1305" in present:
            continue  # XChaCha replaces GCMIV128
        if flag in _NAME_FLAGS and "PlaintextNames" in present:
            continue  # plaintext names have no IVs or name encoding: the allowance is PlaintextNames
        needed.append("DeterministicNames" if flag == "DirIV" else f"?{flag}")
    return list(dict.fromkeys(needed))


def check_feature_flags(flags: list[str], allowed: frozenset[str], where: str) -> None:
    """Refuse a flag set that is not gocryptfs' default unless GOCRYPTFS_FLAGS allows each deviation."""
    for need in deviations(flags):
        if need.startswith("?"):
            raise ConfigurationError(
                f"{where}: FeatureFlags lack {need[1:]} (a format older than gocryptfs v1.3, or a rewritten "
                "gocryptfs.conf); agent run accepts gocryptfs v2's default flags "
                f"({' '.join(DEFAULT_FLAGS)}): re-encrypt the model with gocryptfs v2")
        if need not in allowed:
            reason = ALLOWANCES.get(need, "a flag agent run does not know")
            raise ConfigurationError(
                f"{where}: feature flag {need} is not allowed ({reason}); if the model really was encrypted "
                f"so, allow it with GOCRYPTFS_FLAGS={need} (or --gocryptfs-flags {need}), otherwise "
                "gocryptfs.conf was tampered with")
