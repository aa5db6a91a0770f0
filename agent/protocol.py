"""The KBS protocol versions and TEE key algorithms the agent knows: the one place they are listed.

The client probes, the attesters accept, the report-data binding hashes, the dev broker speaks
and the command line offers exactly these; each derives its list from here, so that adding a
dialect (or a key type) is one edit and no two lists can disagree.

The versions ("dialects") are the ones found in the field of the Trustee KBS attestation
protocol: 0.4.0 (upstream Trustee >= v0.14, openanolis >= v1.6), 0.1.0 (openanolis <= v1.5.2,
Alibaba's Helm chart 1.0.0), 0.2.0 and 0.1.1.
"""

from __future__ import annotations

__all__ = ["BROKER_DIALECTS", "DEFAULT_KEY_ALG", "DIALECTS", "ECDH_ES_A256KW", "KEY_ALGORITHMS", "LATEST",
           "LEGACY_DIALECTS", "LEGACY_KEY_ALG", "RSA1_5", "RSA_OAEP_256"]

# In probe order: the two common in the field first, so that a client usually needs one /auth.
DIALECTS = ("0.4.0", "0.1.0", "0.2.0", "0.1.1")
# The current protocol: runtime-data attest body, report data binding the additional evidence,
# RFC 7516 JWE, trimmed CCEL. Also the client's and the broker's default.
LATEST = DIALECTS[0]
# The versions whose KBS accepts only RSA1_5 TEE keys and answers in the legacy JWE form.
LEGACY_DIALECTS = ("0.1.0", "0.1.1")
# What the dev broker speaks: the current protocol (its default) and Alibaba's chart 1.0.0.
BROKER_DIALECTS = (LATEST, "0.1.0")

# JWE key management algorithms of the TEE key pair (content encryption is always A256GCM).
ECDH_ES_A256KW = "ECDH-ES+A256KW"
RSA_OAEP_256 = "RSA-OAEP-256"
RSA1_5 = "RSA1_5"
KEY_ALGORITHMS = (ECDH_ES_A256KW, RSA_OAEP_256, RSA1_5)  # the default first
DEFAULT_KEY_ALG = ECDH_ES_A256KW  # on P-256: small, fast, what current clients send
LEGACY_KEY_ALG = RSA1_5  # the only one LEGACY_DIALECTS accept
