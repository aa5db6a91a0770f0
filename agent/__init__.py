"""The init agent: attestation, key release from a Trustee broker, and the model-server launch.

``agent.tdx`` parses and checks TDX quotes; ``agent.attesters`` collects evidence;
``agent.kbs`` (with ``agent.jwe`` and ``agent.binding``) is the Trustee KBS client and
``agent.broker`` a dev broker; ``agent.run`` is the container entrypoint (``run`` and
``check``); ``agent.protocol`` lists the protocol versions and key algorithms all of them share.
"""
