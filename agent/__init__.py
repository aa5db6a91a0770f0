"""The init agent: attestation, key release from a Trustee broker, and the model-server launch.

Filled by the attestation and agent-run issues; this release ships no agent command yet.
"""
