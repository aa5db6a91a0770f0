"""The init agent: attestation, key release from a Trustee broker, and the model-server launch.

This release ships the TDX quote parser (``agent.tdx``) and ``python -m agent quote``; the
attesters, the KBS client and the agent run come with their issues.
"""
