"""``python -m agent run -- COMMAND``: attest, fetch the key, mount, start the model server.

Fails closed: without the key there is no mount, and without the mount the command never
starts. The key travels from the broker's JWE into an in-memory buffer, through an inherited
pipe to ``cryptfs mount --passfile /dev/fd/N`` (or ``sam mount --key-file /dev/fd/N`` for
``ENCRYPTION_METHOD=sam``), and is then wiped; it is never on disk, in argv,
in an environment or in a log. The agent forwards SIGTERM/SIGINT/SIGHUP to the command, reaps
orphans when it is PID 1, passes the command's exit code through (128+N for a signal) and tears
the mount down when the command ends (command first, then unmount, then the daemon is waited for).
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from cryptfs.core.mount import mounted_paths

from . import binding, exitcodes
from .errors import AgentError, ConfigurationError, ModelRejected, MountFailed, UsageError

log = logging.getLogger("agent.run")

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
METHODS = ("gocryptfs", "sam")
READY_TIMEOUT = 120.0  # scrypt at N=2^16 plus mounting; a bad config fails long before
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL when the agent stops the command
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


@dataclass
class RunConfig:
    secure: bool
    url: str | None = None
    key_uri: str | None = None
    method: str = "gocryptfs"
    cipher_dir: str | None = None
    mount_path: str = DEFAULT_MOUNT_PATH
    attester: str | None = None
    mode: str = "fuse"  # MOUNT_MODE: fuse (default) | copy (decrypt into a RAM-backed dir)
    expect_digest: str | None = None  # EXPECTED_MODEL_DIGEST: pins one Sam package
    seen_digest: str | None = None  # the digest logged at start: what is served must be that one

    @classmethod
    def resolve(cls, args, environ=os.environ) -> RunConfig:
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
        method = (values["method"] or "gocryptfs").lower()
        if method not in METHODS:
            raise ConfigurationError(f"ENCRYPTION_METHOD={values['method']!r}: expected gocryptfs "
                                     "or sam")
        digest = _expected_digest(values["expect_digest"], method)
        if not os.path.isdir(values["cipher_dir"]):
            raise ConfigurationError(f"ENCRYPTED_MODEL_PATH={values['cipher_dir']}: no such directory "
                                     "(is the OSS bucket mounted there?)")
        mode = (environ.get("MOUNT_MODE") or "fuse").lower()
        if mode not in ("fuse", "copy"):
            raise ConfigurationError(f"MOUNT_MODE={mode!r}: expected fuse or copy")
        return cls(True, values["url"], values["key_uri"], method, values["cipher_dir"],
                   values["mount_path"] or DEFAULT_MOUNT_PATH, values["attester"], mode, digest)


def _expected_digest(value: str | None, method: str) -> str | None:
    """EXPECTED_MODEL_DIGEST pins a Sam package; refused (not ignored) with gocryptfs."""
    if not value:
        return None
    if method != "sam":
        raise ConfigurationError("EXPECTED_MODEL_DIGEST pins a Sam package, but ENCRYPTION_METHOD is "
                                 f"{method}: unset it, or use ENCRYPTION_METHOD=sam")
    from sam.errors import SamError
    from sam.manifest import check_digest_syntax

    try:
        return check_digest_syntax(value, "EXPECTED_MODEL_DIGEST")
    except SamError as e:
        raise ConfigurationError(str(e)) from None


def open_sam_package(cfg: RunConfig):
    """The package's manifest and pinned digest, checked before any key is fetched."""
    from sam.errors import DigestMismatch, SamError
    from sam.package import Package

    try:
        pkg = Package.open(cfg.cipher_dir)
        pkg.check_digest(cfg.expect_digest or cfg.seen_digest)
    except DigestMismatch as e:
        raise ModelRejected(f"ENCRYPTED_MODEL_PATH: {e}") from None
    except SamError as e:
        raise ConfigurationError(f"ENCRYPTED_MODEL_PATH is not a usable Sam package: {e}") from None
    return pkg


class PhaseLog:
    """One log line per phase with its duration; text or JSON lines for log collectors."""

    def __init__(self, fmt: str = "text"):
        self.fmt = fmt
        self.start = self.last = time.monotonic()

    def phase(self, name: str, **fields) -> None:
        now = time.monotonic()
        took, total = now - self.last, now - self.start
        self.last = now
        if self.fmt == "json":
            record = {"ts": time.time(), "level": "info", "phase": name, "seconds": round(took, 4),
                      "since_start": round(total, 4), **fields}
            print(json.dumps(record), file=sys.stderr, flush=True)
        else:
            extra = "".join(f" {k}={v}" for k, v in fields.items())
            log.info("phase %s: %.3f s (%.3f s since start)%s", name, took, total, extra)


def protect_process() -> None:
    """No core dumps, not dumpable, memory locked where safe: this process will hold the key."""
    from cryptfs.core.hardening import lock_memory
    from cryptfs.core.hardening import protect_process as harden

    harden()
    lock_memory()


def fetch_key(cfg: RunConfig, args, phases: PhaseLog) -> bytearray:
    from .attesters import select as select_attester
    from .kbs import KbsClient, instance_info_header

    attester = select_attester(cfg.attester, os.environ, allow_debug=getattr(args, "allow_debug", False))
    client = KbsClient(cfg.url, attester, dialect=getattr(args, "dialect", None),
                       key_alg=getattr(args, "key_alg", None), ca_bundle=getattr(args, "ca_bundle", None),
                       instance_info=instance_info_header())
    client.handshake()
    phases.phase("handshake", attester=attester.name, dialect=client.dialect)
    key = bytearray(client.get_resource(cfg.key_uri))
    phases.phase("key", bytes=len(key))
    return key


def _first_line(secret: bytearray) -> bytes:
    """gocryptfs' password semantics for the KMS secret: the first line, as -passfile reads it."""
    line = bytes(secret).split(b"\n", 1)[0]
    if not line:
        raise ConfigurationError("the secret fetched from the broker is empty (its first line is empty)")
    return line


class Mount:
    """The ``cryptfs mount --fg`` child: the key goes in through a pipe, readiness comes back."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.proc: subprocess.Popen | None = None

    def start(self, key: bytearray) -> None:
        mp = self.cfg.mount_path
        os.makedirs(mp, exist_ok=True)
        key_r, key_w = os.pipe()
        note_r, note_w = os.pipe()
        cmd = self.command(key_r, note_w)
        try:
            self.proc = subprocess.Popen(cmd, pass_fds=(key_r, note_w), start_new_session=True,
                                         stdin=subprocess.DEVNULL)
        finally:
            os.close(key_r)
            os.close(note_w)
        try:
            os.write(key_w, self.key_bytes(key))  # a pipe holds 64 KiB; a key at most 2 KiB
        finally:
            os.close(key_w)
        self._wait_ready(note_r)

    def command(self, key_fd: int, note_fd: int) -> list[str]:
        cfg = self.cfg
        if cfg.method == "sam":
            digest = cfg.expect_digest or cfg.seen_digest  # serve exactly the package that was logged
            pin = ["--expect-digest", digest] if digest else []
            return [sys.executable, "-m", "sam", "mount", "--fg", "--allow_other", "--key-file",
                    f"/dev/fd/{key_fd}", "--notify-fd", str(note_fd), *pin, cfg.cipher_dir, cfg.mount_path]
        return [sys.executable, "-m", "cryptfs", "mount", "--fg", "--allow_other", "--passfile",
                f"/dev/fd/{key_fd}", "--notify-fd", str(note_fd), cfg.cipher_dir, cfg.mount_path]

    def key_bytes(self, key: bytearray) -> bytes:
        """gocryptfs: the first line, as -passfile reads it. Sam: the secret's exact bytes."""
        if self.cfg.method == "sam":
            return sam_key(key)
        return _first_line(key) + b"\n"

    def _wait_ready(self, note_r: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        buf = b""
        try:
            while b"\n" not in buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise MountFailed(f"the mount was not ready after {READY_TIMEOUT:.0f} s")
                ready, _, _ = select.select([note_r], [], [], min(remaining, 0.5))
                if ready:
                    chunk = os.read(note_r, 256)
                    if not chunk:
                        break
                    buf += chunk
                elif self.proc.poll() is not None:
                    break
        finally:
            os.close(note_r)
        if not buf.startswith(b"ready"):
            code = self.proc.wait()
            if self.cfg.method == "sam":
                raise sam_mount_failure(code)
            raise MountFailed(_mount_failure(code), code)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        """Unmount (SIGTERM makes the daemon unmount cleanly) and wait for the daemon."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        mp = os.path.realpath(self.cfg.mount_path)
        if mp in mounted_paths():
            subprocess.run(["fusermount3", "-u", "-z", mp], capture_output=True)


def _mount_failure(code: int) -> str:
    from cryptfs import exitcodes as cx

    reasons = {
        cx.PASSWORD_INCORRECT: "the key from the broker does not unlock ENCRYPTED_MODEL_PATH (wrong secret "
                               "stored for DECRYPTION_KEY_URI?)",
        cx.CONFIG: "ENCRYPTED_MODEL_PATH has no usable gocryptfs.conf (is it the encrypted model directory?)",
        cx.CIPHERDIR: "ENCRYPTED_MODEL_PATH is not a directory",
        cx.MOUNTPOINT: "MODEL_MOUNT_PATH cannot be used, or FUSE is unavailable: the container needs "
                       "--device /dev/fuse and CAP_SYS_ADMIN, and the mount point must be empty and not "
                       "mounted",
    }
    return f"mount failed (cryptfs exit {code}): {reasons.get(code, 'see the messages above')}"


def sam_key(secret: bytearray) -> bytes:
    """The KMS secret is the plaintext key given to the packer, byte for byte (4-128 bytes)."""
    from sam.errors import SamError
    from sam.keys import check_key, strip_newline

    key = bytes(secret)
    try:
        check_key(strip_newline(key))
    except SamError as e:
        raise ConfigurationError(f"the secret fetched for DECRYPTION_KEY_URI is not a Sam key: {e}") from None
    return key


def sam_mount_failure(code: int) -> AgentError:
    from sam import exitcodes as sx

    if code in (sx.DIGEST_MISMATCH, sx.INTEGRITY):
        what = ("is not the package EXPECTED_MODEL_DIGEST pins" if code == sx.DIGEST_MISMATCH else
                "fails authentication (tampered, truncated or incomplete upload)")
        return ModelRejected(f"mount refused (sam exit {code}): ENCRYPTED_MODEL_PATH {what}")
    reasons = {
        sx.WRONG_KEY: "the key from the broker does not unlock the Sam package at ENCRYPTED_MODEL_PATH "
                      "(wrong secret stored for DECRYPTION_KEY_URI?)",
        sx.MANIFEST: "ENCRYPTED_MODEL_PATH has no usable .sam/manifest.json (is it the package directory?)",
        sx.PACKAGE: "ENCRYPTED_MODEL_PATH is not a directory",
        sx.KEY_READ: "the key from the broker is empty",
    }
    if code in reasons:
        return MountFailed(f"mount failed (sam exit {code}): {reasons[code]}", code)
    return MountFailed(_mount_failure(code).replace("cryptfs exit", "sam exit"), code)


RAM_FILESYSTEMS = ("tmpfs", "ramfs")


def copy_to_ram(cfg: RunConfig, key: bytearray) -> None:
    """MOUNT_MODE=copy: decrypt the whole model into a RAM-backed directory (no FUSE needed).

    The target must be on tmpfs/ramfs (e.g. under /dev/shm) and the plaintext must fit in the
    memory that is available; tmpfs pages can be swapped where swap is configured.
    """
    from cryptfs.config import ConfFile
    from cryptfs.core.files import tree_bytes
    from cryptfs.decrypt import decrypt_tree
    from cryptfs.errors import CryptfsError, WrongPasswordError
    from cryptfs.tree import CipherTree

    target = check_ram_target(cfg)
    if cfg.method == "sam":
        return _unpack_sam(cfg, key, target)
    need = tree_bytes(cfg.cipher_dir)
    avail = _available_memory()
    if need > avail:
        raise ConfigurationError(f"MOUNT_MODE=copy: the model needs about {need >> 20} MiB but only "
                                 f"{avail >> 20} MiB of memory is available")
    try:
        conf = ConfFile.load(os.path.join(cfg.cipher_dir, "gocryptfs.conf"))
        tree = CipherTree(cfg.cipher_dir, conf.params, conf.unlock(_first_line(key)))
        decrypt_tree(tree, target)
    except WrongPasswordError:
        raise MountFailed("the key from the broker does not unlock ENCRYPTED_MODEL_PATH", 12) from None
    except CryptfsError as e:
        raise MountFailed(f"MOUNT_MODE=copy: decryption failed: {e}", e.exit_code) from None
    except OSError as e:
        raise MountFailed(f"MOUNT_MODE=copy: decryption failed: {e.strerror or e}") from None


def _unpack_sam(cfg: RunConfig, key: bytearray, target: str) -> None:
    from sam.errors import SamError, WrongKeyError
    from sam.keys import strip_newline
    from sam.unpack import unpack

    pkg = open_sam_package(cfg)
    need = pkg.manifest.total_size()
    avail = _available_memory()
    if need > avail:
        raise ConfigurationError(f"MOUNT_MODE=copy: the model needs about {need >> 20} MiB but only "
                                 f"{avail >> 20} MiB of memory is available")
    raw = sam_key(key)
    try:
        unpack(pkg.unlock(strip_newline(raw)), target, progress=False)
    except WrongKeyError:
        raise MountFailed("the key from the broker does not unlock the Sam package", 12) from None
    except SamError as e:
        rejected = sam_mount_failure(e.exit_code)
        if isinstance(rejected, ModelRejected):
            raise ModelRejected(f"MOUNT_MODE=copy: {e}") from None
        raise MountFailed(f"MOUNT_MODE=copy: unpacking failed: {e}", e.exit_code) from None
    except OSError as e:
        raise MountFailed(f"MOUNT_MODE=copy: unpacking failed: {e.strerror or e}") from None


def check_ram_target(cfg: RunConfig) -> str:
    """MOUNT_MODE=copy must decrypt onto tmpfs/ramfs, never onto a disk; checked before the key."""
    target = os.path.realpath(cfg.mount_path)
    fstype = _fstype(os.path.dirname(target) if not os.path.exists(target) else target)
    if fstype not in RAM_FILESYSTEMS:
        raise ConfigurationError(f"MOUNT_MODE=copy: MODEL_MOUNT_PATH={cfg.mount_path} is on {fstype}, not "
                                 "tmpfs: the plaintext would reach a disk; use a path under /dev/shm or a "
                                 "tmpfs volume")
    return target


def _fstype(path: str) -> str:
    best, fstype = "", "unknown"
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            point = parts[1].replace("\\040", " ")
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
                best, fstype = point, parts[2]
    return fstype


def _available_memory() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _own_process_group() -> dict:
    if sys.version_info >= (3, 11):
        return {"process_group": 0}
    return {"preexec_fn": os.setpgrp}  # noqa: PLW1509 (3.10 has no process_group)


class Supervisor:
    """Runs the command, forwards signals, reaps orphans, notices a dead mount daemon."""

    def __init__(self, command: list[str], mount: Mount | None):
        self.command = command
        self.mount = mount
        self.child: subprocess.Popen | None = None

    def _forward(self, signum, frame) -> None:
        # returncode, not poll(): poll() could reap the command here, and _wait's waitpid(-1)
        # would then block on the mount daemon and lose the command's exit code.
        if self.child is not None and self.child.returncode is None:
            try:
                os.kill(self.child.pid, signum)
            except ProcessLookupError:
                pass

    def run(self) -> int:
        try:
            # Its own process group: a terminal's Ctrl-C reaches the agent only, which forwards it
            # once (otherwise the command would get SIGINT twice).
            self.child = subprocess.Popen(self.command, **_own_process_group())
        except FileNotFoundError:
            raise CommandNotFound(f"command not found: {self.command[0]}") from None
        except PermissionError:
            raise CommandNotExecutable(f"command not executable: {self.command[0]}") from None
        for sig in FORWARDED:
            signal.signal(sig, self._forward)
        try:
            return self._wait()
        finally:
            for sig in FORWARDED:
                signal.signal(sig, signal.SIG_DFL)

    def _wait(self) -> int:
        mount_pid = self.mount.pid if self.mount else None
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return exitcodes.RUN_ERROR
            if pid == self.child.pid:
                self.child.returncode = os.waitstatus_to_exitcode(status)
                code = self.child.returncode
                return 128 - code if code < 0 else code
            if pid == mount_pid:
                self.mount.proc.returncode = os.waitstatus_to_exitcode(status)
                log.error("the mount daemon exited (status %s) while the command was running: stopping the "
                          "command", self.mount.proc.returncode)
                self._stop_child()
                return exitcodes.RUN_MOUNT_DIED
            # anything else: an orphan reparented to us (PID 1 duty), now reaped

    def _stop_child(self) -> None:
        self.child.send_signal(signal.SIGTERM)
        try:
            self.child.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()


class CommandNotFound(AgentError):
    exit_code = exitcodes.RUN_COMMAND_NOT_FOUND


class CommandNotExecutable(AgentError):
    exit_code = exitcodes.RUN_COMMAND_NOT_EXECUTABLE


def run_exit_code(exc: AgentError) -> int:
    """The agent run's own failures use 112-127, codes model servers rarely use (like env's 125-127)."""
    from .errors import (
        AttesterError,
        BrokerUnreachable,
        EvidenceRefused,
        KbsProtocolError,
        PolicyDenied,
        ResourceNotFound,
        VersionMismatch,
    )

    if isinstance(exc, MountFailed):
        return exitcodes.RUN_WRONG_KEY if exc.wrong_key else exitcodes.RUN_MOUNT
    table = [(UsageError, exitcodes.RUN_USAGE), (ConfigurationError, exitcodes.RUN_CONFIG),
             (AttesterError, exitcodes.RUN_ATTESTER), (BrokerUnreachable, exitcodes.RUN_UNREACHABLE),
             (VersionMismatch, exitcodes.RUN_VERSION_MISMATCH),
             (EvidenceRefused, exitcodes.RUN_EVIDENCE_REFUSED), (PolicyDenied, exitcodes.RUN_DENIED),
             (ResourceNotFound, exitcodes.RUN_NOT_FOUND), (KbsProtocolError, exitcodes.RUN_PROTOCOL),
             (ModelRejected, exitcodes.RUN_MODEL_REJECTED),
             (CommandNotFound, exitcodes.RUN_COMMAND_NOT_FOUND),
             (CommandNotExecutable, exitcodes.RUN_COMMAND_NOT_EXECUTABLE)]
    for cls, code in table:
        if isinstance(exc, cls):
            return code
    return exitcodes.RUN_ERROR


def run(args, command: list[str]) -> int:
    if not command:
        raise UsageError("give the command to start after --, e.g. python -m agent run -- python server.py")
    phases = PhaseLog(getattr(args, "log_format", "text") or "text")
    cfg = RunConfig.resolve(args, os.environ)
    if not cfg.secure:
        log.info("no DECRYPTION_KEY_URI: starting the command without attestation or mount")
        return Supervisor(command, None).run()
    protect_process()
    if cfg.mode == "copy":
        check_ram_target(cfg)
    fields = {}
    if cfg.method == "sam":
        cfg.seen_digest = open_sam_package(cfg).digest
        fields = {"digest": cfg.seen_digest, "pinned": bool(cfg.expect_digest)}
    phases.phase("config", key_uri=cfg.key_uri, cipher_dir=cfg.cipher_dir, mount=cfg.mount_path,
                 mode=cfg.mode, method=cfg.method, **fields)
    key = fetch_key(cfg, args, phases)
    if cfg.mode == "copy":
        try:
            copy_to_ram(cfg, key)
        finally:
            key[:] = bytes(len(key))
        phases.phase("unlock+copy", path=cfg.mount_path)
        phases.phase("ready")
        return Supervisor(command, None).run()
    mount = Mount(cfg)
    try:
        try:
            mount.start(key)
        finally:
            key[:] = bytes(len(key))  # the daemon has it now; drop our copy
        phases.phase("unlock+mount", mount=cfg.mount_path)
        phases.phase("ready")
        code = Supervisor(command, mount).run()
        phases.phase("command exited", code=code)
        return code
    finally:
        mount.stop()
        if mount.proc is not None:
            phases.phase("unmounted")


def check(args, environ=os.environ) -> int:
    """Validate configuration and environment without fetching the key; one line per check."""
    results: list[tuple[bool, str, int]] = []

    def record(ok: bool, what: str, code: int = exitcodes.RUN_CONFIG) -> None:
        results.append((ok, what, code))
        print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)

    try:
        cfg = RunConfig.resolve(args, environ)
    except AgentError as e:
        record(False, f"configuration: {e}")
        return results[-1][2]
    if not cfg.secure:
        record(True, "configuration: no DECRYPTION_KEY_URI, so run would start the command in the clear "
                     "(no attestation, no mount)")
        return exitcodes.OK
    record(True, f"configuration: key {cfg.key_uri}, cipher dir {cfg.cipher_dir}, mount {cfg.mount_path}")
    _check_cipher_dir(cfg, record)
    _check_fuse(cfg, record)
    attester = _check_attester(cfg, args, environ, record)
    if attester is not None:
        _check_broker(cfg, args, attester, record)
    failed = [r for r in results if not r[0]]
    return failed[0][2] if failed else exitcodes.OK


def _check_cipher_dir(cfg: RunConfig, record) -> None:
    from cryptfs.config import ConfFile
    from cryptfs.errors import CryptfsError

    if cfg.method == "sam":
        try:
            pkg = open_sam_package(cfg)
            pin = "matches EXPECTED_MODEL_DIGEST" if cfg.expect_digest else "not pinned"
            record(True, f"sam package: key ID {pkg.manifest.key_id}, {len(pkg.manifest.files)} files, "
                         f"digest {pkg.digest} ({pin})")
        except AgentError as e:
            record(False, f"sam package: {e}", run_exit_code(e))
        return
    try:
        conf = ConfFile.load(os.path.join(cfg.cipher_dir, "gocryptfs.conf"))
        record(True, f"cipher dir: gocryptfs.conf readable, flags {' '.join(conf.feature_flags)}, "
                     f"scrypt N={conf.scrypt.n}")
    except CryptfsError as e:
        record(False, f"cipher dir: {e}", exitcodes.RUN_CONFIG)


def _check_fuse(cfg: RunConfig, record) -> None:
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
        record(True, "/dev/fuse can be opened")
    except OSError as e:
        record(False, f"/dev/fuse cannot be opened ({e.strerror}): run the container with --device /dev/fuse "
                      "and --cap-add SYS_ADMIN", exitcodes.RUN_MOUNT)
    mp = os.path.realpath(cfg.mount_path)
    if mp in mounted_paths():
        record(False, f"mount point {cfg.mount_path} is already mounted", exitcodes.RUN_MOUNT)
    elif os.path.isdir(mp) and os.listdir(mp):
        record(False, f"mount point {cfg.mount_path} is not empty", exitcodes.RUN_MOUNT)
    elif os.path.exists(mp) and not os.path.isdir(mp):
        record(False, f"mount point {cfg.mount_path} is not a directory", exitcodes.RUN_MOUNT)
    else:
        state = "exists" if os.path.isdir(mp) else "will be created"
        record(True, f"mount point {cfg.mount_path} usable ({state})")


def _check_attester(cfg: RunConfig, args, environ, record):
    from .attesters import select as select_attester

    try:
        attester = select_attester(cfg.attester, environ, allow_debug=getattr(args, "allow_debug", False))
        record(True, f"attester: {attester.name} (tee {attester.tee})")
        return attester
    except AgentError as e:
        record(False, f"attester: {e}", exitcodes.RUN_ATTESTER)
        return None


def _check_broker(cfg: RunConfig, args, attester, record) -> None:
    from .kbs import KbsClient

    client = KbsClient(cfg.url, attester, dialect=getattr(args, "dialect", None),
                       ca_bundle=getattr(args, "ca_bundle", None), timeout=getattr(args, "timeout", 10.0))
    try:
        dialect = client.probe()
        record(True, f"broker {cfg.url}: reachable, speaks KBS protocol {dialect} (the key was not fetched)")
    except AgentError as e:
        record(False, f"broker {cfg.url}: {e}", run_exit_code(e))
