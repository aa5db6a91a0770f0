"""``python -m agent run -- COMMAND``: attest, fetch the key, mount, start the model server.

Fails closed: without the key there is no mount, and without the mount the command never
starts. The key travels from the broker's JWE into an in-memory buffer, through an inherited
pipe to the method's mount (``cryptfs mount --passfile /dev/fd/N``, or ``sam mount --key-file
/dev/fd/N`` for ``ENCRYPTION_METHOD=sam``), and is then wiped; it is never on disk, in argv,
in an environment or in a log. The agent forwards SIGTERM/SIGINT/SIGHUP to the command, reaps
orphans when it is PID 1, passes the command's exit code through (128+N for a signal) and tears
the mount down when the command ends (command first, then unmount, then the daemon is waited for).

The parts: :mod:`.config` (flags and variables), :mod:`.backends` (one per ENCRYPTION_METHOD),
:mod:`.mount` (the mount child), :mod:`.ram` (MOUNT_MODE=copy), :mod:`.supervisor` (the command),
:mod:`.phases` (the log), :mod:`.check` (``agent check``). A failure is an
:class:`~agent.errors.AgentError` whose ``run_exit_code`` is the code ``run`` exits with.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ..errors import UsageError
from . import ram
from .backends import BACKENDS, DEFAULT_METHOD, MountBackend
from .check import check
from .config import DEFAULT_MOUNT_PATH, ENV, METHODS, RunConfig
from .mount import Mount
from .phases import PhaseLog
from .supervisor import Supervisor

__all__ = ["BACKENDS", "DEFAULT_METHOD", "DEFAULT_MOUNT_PATH", "ENV", "METHODS", "Mount", "MountBackend",
           "PhaseLog", "RunConfig", "Supervisor", "check", "fetch_key", "run"]

log = logging.getLogger("agent.run")


def protect_process() -> None:
    """No core dumps, not dumpable, memory locked where safe: this process will hold the key."""
    from cryptfs.core.hardening import lock_memory
    from cryptfs.core.hardening import protect_process as harden

    harden()
    lock_memory()


def fetch_key(cfg: RunConfig, args: Any, phases: PhaseLog) -> bytearray:
    """Attest to the broker and receive the key, in a buffer the caller wipes."""
    from ..attesters import select as select_attester
    from ..kbs import KbsClient, instance_info_header

    attester = select_attester(cfg.attester, os.environ, allow_debug=getattr(args, "allow_debug", False))
    timeout = getattr(cfg, "timeout", None) or getattr(args, "timeout", None) or 60.0  # one overall deadline
    client = KbsClient(cfg.url, attester, dialect=getattr(args, "dialect", None),
                       key_alg=getattr(args, "key_alg", None), ca_bundle=getattr(args, "ca_bundle", None),
                       timeout=timeout, instance_info=instance_info_header())
    client.handshake()
    phases.phase("handshake", attester=attester.name, dialect=client.dialect)
    key = client.get_resource(cfg.key_uri)  # already a bytearray: no second copy to wipe
    phases.phase("key", bytes=len(key))
    return key


def run(args: Any, command: list[str]) -> int:
    """The whole run; the command's exit code, or an AgentError whose run_exit_code says why not."""
    if not command:
        raise UsageError("give the command to start after --, e.g. python -m agent run -- python server.py")
    phases = PhaseLog(getattr(args, "log_format", "text") or "text")
    cfg = RunConfig.resolve(args, os.environ)
    if not cfg.secure:
        log.info("no DECRYPTION_KEY_URI: starting the command without attestation or mount")
        return Supervisor(command, None).run()
    protect_process()
    backend = cfg.backend()
    target = ram.check_ram_target(cfg.mount_path) if cfg.mode == "copy" else None
    fields = backend.prepare()  # what can be refused without the key is refused now
    phases.phase("config", key_uri=cfg.key_uri, cipher_dir=cfg.cipher_dir, mount=cfg.mount_path,
                 mode=cfg.mode, method=cfg.method, **fields)
    key = fetch_key(cfg, args, phases)
    if target is not None:
        try:
            backend.copy_into(key, target)
        finally:
            key[:] = bytes(len(key))
        phases.phase("unlock+copy", path=cfg.mount_path)
        phases.phase("ready")
        return Supervisor(command, None).run()
    return _serve_mounted(backend, key, command, phases)


def _serve_mounted(backend: MountBackend, key: bytearray, command: list[str], phases: PhaseLog) -> int:
    """Mount with the key (then wiped), run the command on the mount, always unmount."""
    mount = Mount(backend)
    try:
        try:
            mount.start(key)
        finally:
            key[:] = bytes(len(key))  # the daemon has it now; drop our copy
        phases.phase("unlock+mount", mount=mount.mount_path)
        phases.phase("ready")
        code = Supervisor(command, mount).run()
        phases.phase("command exited", code=code)
        return code
    finally:
        mount.stop()
        if mount.proc is not None:
            phases.phase("unmounted")
