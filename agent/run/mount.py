"""The mount child of ``agent run``: the format's ``mount --fg``, fed the key through a pipe.

The key goes into an inherited pipe (never argv, an environment or a file) and the child says
``ready`` on a second pipe once the plaintext is served, so the command starts only on a
working mount. What the child is, what it reads and what its exit codes mean comes from the
method's :class:`~agent.run.backends.MountBackend`.

The agent unmounts only what its own child mounted: the mount point is checked before the key
is fetched (:func:`check_mount_point`) and the lazy unmount at the end happens only once the
child said ``ready``, so a failed start never detaches someone else's mount there.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from typing import IO

from ..errors import MountFailed
from . import phases
from .backends import MountBackend

__all__ = ["READY_TIMEOUT", "Mount", "check_mount_point"]

READY_TIMEOUT = 120.0  # scrypt at N=2^16 plus mounting; a bad config fails long before
UNMOUNT_GRACE = 10.0  # seconds the daemon gets to unmount after SIGTERM before it is killed


def check_mount_point(path: str) -> None:
    """MODEL_MOUNT_PATH must be absent or an empty directory that is not a mount point.

    Checked before the key is fetched: the mount would fail on it anyway, and a mount that is
    already there belongs to someone else (a tmpfs, another gocryptfs), never to be unmounted.
    """
    from cryptfs.core.mount import mounted_paths  # not at import: the agent's CLI starts faster

    from .ram import fstype

    mp = os.path.realpath(path)
    if mp in mounted_paths():
        raise MountFailed(f"MODEL_MOUNT_PATH={path} is already a mount point ({fstype(mp)}): unmount it or "
                          "choose another MODEL_MOUNT_PATH (agent run never unmounts what it did not mount)")
    if os.path.lexists(mp) and not os.path.isdir(mp):
        raise MountFailed(f"MODEL_MOUNT_PATH={path} is not a directory")
    if os.path.isdir(mp) and os.listdir(mp):
        raise MountFailed(f"MODEL_MOUNT_PATH={path} is not empty: the model would hide its files; use an "
                          "empty directory")


class Mount:
    """The mount daemon child: started with the key, waited for until ready, stopped and unmounted."""

    def __init__(self, backend: MountBackend, log_format: str = "text"):
        self.backend = backend
        self.mount_path = backend.cfg.mount_path
        self.log_format = log_format
        self.proc: subprocess.Popen | None = None
        self.ready = False  # the child said it serves: only then is the mount point's mount ours
        self._relay: threading.Thread | None = None

    def start(self, key: bytearray) -> None:
        """Start the daemon, hand it the key, return once it serves; the method's error otherwise."""
        os.makedirs(self.mount_path, exist_ok=True)
        key_r, key_w = os.pipe()
        note_r, note_w = os.pipe()
        cmd = self.backend.mount_command(key_r, note_w)
        json_log = self.log_format == "json"
        try:
            self.proc = subprocess.Popen(cmd, pass_fds=(key_r, note_w), start_new_session=True,
                                         stdin=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE if json_log else None)
        finally:
            os.close(key_r)
            os.close(note_w)
        if json_log:
            self._relay = threading.Thread(target=relay_json, args=(self.proc.stderr, self.backend.tool),
                                           daemon=True)
            self._relay.start()
        try:
            os.write(key_w, self.backend.key_bytes(key))  # a pipe holds 64 KiB; a key at most 2 KiB
        finally:
            os.close(key_w)
        self._wait_ready(note_r)

    def _wait_ready(self, note_r: int) -> None:
        """Until the daemon writes ``ready``; its exit (or READY_TIMEOUT) is the method's error."""
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
            raise self.backend.mount_failure(self.proc.wait())
        self.ready = True

    @property
    def pid(self) -> int | None:
        """The daemon's PID, for the supervisor to notice its death."""
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        """Unmount (SIGTERM makes the daemon unmount cleanly) and wait for the daemon.

        The lazy unmount afterwards (a daemon that was killed leaves its mount behind) happens
        only if this daemon was ready: otherwise whatever is mounted there is not ours.
        """
        from cryptfs.core.mount import mounted_paths  # not at import: the agent's CLI starts faster

        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(UNMOUNT_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._relay is not None:
            self._relay.join(2.0)  # the daemon's last lines, before the agent's own
        mp = os.path.realpath(self.mount_path)
        if self.ready and mp in mounted_paths():
            subprocess.run(["fusermount3", "-u", "-z", mp], capture_output=True)


def relay_json(stream: IO[bytes], tool: str) -> None:
    """The daemon's (and libfuse's) stderr lines as JSON records, for ``--log-format json``.

    Read until EOF, so that the daemon never blocks on a full pipe.
    """
    with stream:
        for raw in stream:
            line = raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
            if line:
                phases.emit_json(_level(line), f"{tool}.mount", line)


def _level(line: str) -> str:
    """A record level guessed from the line's words: the daemon's own format is not parsed."""
    lower = line.lower()
    if "error" in lower or "traceback" in lower:
        return "error"
    return "warning" if "warning" in lower else "info"
