"""``python -m agent run -- COMMAND``: attest, fetch the key, mount, start the model server.

Fails closed: without the key there is no mount, and without the mount the command never
starts. The key travels from the broker's JWE into an in-memory buffer, through an inherited
pipe to the method's mount (``cryptfs mount --passfile /dev/fd/N``, or ``sam mount --key-file
/dev/fd/N`` for ``ENCRYPTION_METHOD=sam``), and is then wiped; it is never on disk, in argv,
in an environment or in a log. The agent forwards SIGTERM/SIGINT/SIGHUP to the command, reaps
orphans when it is PID 1, passes the command's exit code through (128+N for a signal) and tears
the mount down when the command ends (command first, then unmount, then the daemon is waited for).
Everything that can be refused without the key is refused before it is fetched (configuration,
the cipher directory's kind and flags, its digest against EXPECTED_MODEL_DIGEST, the mount
point, FUSE, the command's shape); a stop signal before the command starts unwinds the run, so
no mount and no plaintext is left behind. Between those checks and the first request to the
broker the launch is measured (:mod:`.launch`): the model's digest and the command go into the
attester's register and the event log, so that the broker can check them before it releases
the key; the mount (or copy) then serves only the model with that digest.

The parts: :mod:`.config` (flags and variables), :mod:`.launch` (what is measured),
:mod:`.backends` (one per ENCRYPTION_METHOD), :mod:`.flags` (the gocryptfs flags accepted),
:mod:`.mount` (the mount child), :mod:`.fuse` (can FUSE work here), :mod:`.ram`
(MOUNT_MODE=copy), :mod:`.signals` (stops before the command), :mod:`.supervisor` (the command),
:mod:`.phases` (the log), :mod:`.check` (``agent check``). A failure is an
:class:`~agent.errors.AgentError` whose ``run_exit_code`` is the code ``run`` exits with.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import TYPE_CHECKING, Any

from ..errors import MountFailed, UsageError
from . import launch, ram
from .backends import BACKENDS, DEFAULT_METHOD, MountBackend
from .check import check
from .config import DEFAULT_MOUNT_PATH, ENV, METHODS, RunConfig
from .mount import Mount, check_mount_point
from .phases import PhaseLog
from .signals import StopGuard, Stopped
from .supervisor import Supervisor

__all__ = ["BACKENDS", "DEFAULT_METHOD", "DEFAULT_MOUNT_PATH", "ENV", "METHODS", "Mount", "MountBackend",
           "PhaseLog", "RunConfig", "Supervisor", "attest_and_fetch", "check", "check_command", "fetch_key",
           "measure_model", "run", "select_attester"]

if TYPE_CHECKING:
    from ..attesters import Attester

log = logging.getLogger("agent.run")


def protect_process() -> None:
    """No core dumps, not dumpable, memory locked where safe: this process will hold the key."""
    from cryptfs.core.hardening import lock_memory
    from cryptfs.core.hardening import protect_process as harden

    harden()
    lock_memory()


def check_command(command: list[str], mount_path: str | None = None) -> None:
    """Refuse what cannot be the command: nothing, or a whole command line given as one argument.

    A platform field that takes a string (EAS' command) may hand ``python server.py --port 8000``
    over as ONE argv element; exec would fail only after the key was fetched and the model
    mounted (127). A first element with whitespace that names no file is that mistake (124);
    one under the mount path may only exist once mounted, so it is left alone.
    """
    if not command:
        raise UsageError("give the command to start after --, e.g. python -m agent run -- python server.py")
    first = command[0]
    if not any(c.isspace() for c in first) or os.path.exists(first) or shutil.which(first):
        return
    if mount_path and os.path.abspath(first).startswith(os.path.abspath(mount_path).rstrip("/") + "/"):
        return
    raise UsageError(f"the command is the single argument {first!r}, which names no program: a whole command "
                     "line was given as one string. Give its words as separate arguments (exec form: "
                     f"[\"{first.split()[0]}\", ...]), or let a shell split it: sh -c '{first}'")


def select_attester(cfg: RunConfig) -> Attester:
    """The attester the run will attest with: chosen before measuring, so the events go into the
    register that its evidence reports."""
    from ..attesters import select

    return select(cfg.attester, os.environ, allow_debug=cfg.allow_debug)


def fetch_key(cfg: RunConfig, phases: PhaseLog) -> bytearray:
    """Attest to the broker and receive the key, in a buffer the caller wipes."""
    return attest_and_fetch(cfg, select_attester(cfg), phases)


def attest_and_fetch(cfg: RunConfig, attester: Attester, phases: PhaseLog) -> bytearray:
    """Attest with ``attester`` and receive the key, in a buffer the caller wipes."""
    from ..kbs import KbsClient, instance_info_header

    client = KbsClient(cfg.url, attester, dialect=cfg.dialect, key_alg=cfg.key_alg, ca_bundle=cfg.ca_bundle,
                       timeout=cfg.timeout, instance_info=instance_info_header())  # one overall deadline
    client.handshake()
    phases.phase("handshake", attester=attester.name, dialect=client.dialect)
    key = client.get_resource(cfg.key_uri)
    if not isinstance(key, bytearray):
        key = bytearray(key)  # a buffer the caller can wipe
    phases.phase("key", bytes=len(key))
    return key


def run(args: Any, command: list[str]) -> int:
    """The whole run; the command's exit code, or an AgentError whose run_exit_code says why not."""
    cfg = RunConfig.resolve(args, os.environ)
    check_command(command, cfg.mount_path if cfg.secure else None)
    phases = PhaseLog(cfg.log_format)
    if not cfg.secure:
        log.info("no DECRYPTION_KEY_URI: starting the command without attestation or mount")
        return Supervisor(command, None).run()
    warning = cfg.transport_warning()
    if warning:
        log.warning("%s", warning)
    protect_process()
    with StopGuard() as guard:
        try:
            return _secure_run(cfg, command, phases, guard)
        except Stopped as e:
            log.error("stopped by %s before the command started; nothing is left mounted or decrypted",
                      e.name)
            return e.exit_code


def _secure_run(cfg: RunConfig, command: list[str], phases: PhaseLog, guard: StopGuard) -> int:
    """Everything that can be refused without the key is refused first; then key, mount or copy, command."""
    from .fuse import fuse_problem

    backend = cfg.backend()
    fields = backend.prepare()  # what can be refused without the key is refused now
    if cfg.mode == "copy":
        target = ram.CopyTarget(cfg.mount_path)
    else:
        target = None
        check_mount_point(cfg.mount_path)
        problem = fuse_problem()
        if problem:
            raise MountFailed(problem)
    phases.phase("config", key_uri=cfg.key_uri, cipher_dir=cfg.cipher_dir, mount=cfg.mount_path,
                 mode=cfg.mode, method=cfg.method, **fields)
    attester = select_attester(cfg)
    measure_model(cfg, attester.name, backend.pin, command, phases)
    key = attest_and_fetch(cfg, attester, phases)
    if target is not None:
        return _serve_copied(backend, key, target, command, phases, guard)
    return _serve_mounted(backend, key, command, phases, guard)


def measure_model(cfg: RunConfig, attester_name: str, digest: str, command: list[str],
                  phases: PhaseLog) -> None:
    """The load-model and run/command events (:mod:`.launch`), before any request to the broker."""
    events = [(launch.MODEL_DOMAIN, launch.MODEL_OPERATION, launch.load_model_content(cfg.model_id, digest)),
              (launch.AGENT_DOMAIN, launch.COMMAND_OPERATION,
               launch.command_content(command, cfg.mount_path, cfg.method, cfg.mode))]
    measured = launch.measure_launch(cfg.measure, attester_name, events)
    phases.phase("measure", model_id=cfg.model_id, hash=digest, measure=cfg.measure, events=len(measured))


def _serve_copied(backend: MountBackend, key: bytearray, target: ram.CopyTarget, command: list[str],
                  phases: PhaseLog, guard: StopGuard) -> int:
    """Decrypt into RAM with the key (then wiped), run the command, always remove the plaintext."""
    try:
        try:
            backend.copy_into(key, target.path)
        finally:
            key[:] = bytes(len(key))
        phases.phase("unlock+copy", path=target.path)
        phases.phase("ready")
        code = Supervisor(command, None).run()
        phases.phase("command exited", code=code)
        return code
    finally:
        guard.hold()
        target.remove()
        phases.phase("plaintext removed")


def _serve_mounted(backend: MountBackend, key: bytearray, command: list[str], phases: PhaseLog,
                   guard: StopGuard) -> int:
    """Mount with the key (then wiped), run the command on the mount, always unmount."""
    mount = Mount(backend, phases.fmt)
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
        guard.hold()
        mount.stop()
        if mount.proc is not None:
            phases.phase("unmounted")
