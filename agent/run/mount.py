"""The mount child of ``agent run``: the format's ``mount --fg``, fed the key through a pipe.

The key goes into an inherited pipe (never argv, an environment or a file) and the child says
``ready`` on a second pipe once the plaintext is served, so the command starts only on a
working mount. What the child is, what it reads and what its exit codes mean comes from the
method's :class:`~agent.run.backends.MountBackend`.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time

from ..errors import MountFailed
from .backends import MountBackend

__all__ = ["READY_TIMEOUT", "Mount"]

READY_TIMEOUT = 120.0  # scrypt at N=2^16 plus mounting; a bad config fails long before
UNMOUNT_GRACE = 10.0  # seconds the daemon gets to unmount after SIGTERM before it is killed


class Mount:
    """The mount daemon child: started with the key, waited for until ready, stopped and unmounted."""

    def __init__(self, backend: MountBackend):
        self.backend = backend
        self.mount_path = backend.cfg.mount_path
        self.proc: subprocess.Popen | None = None

    def start(self, key: bytearray) -> None:
        """Start the daemon, hand it the key, return once it serves; the method's error otherwise."""
        os.makedirs(self.mount_path, exist_ok=True)
        key_r, key_w = os.pipe()
        note_r, note_w = os.pipe()
        cmd = self.backend.mount_command(key_r, note_w)
        try:
            self.proc = subprocess.Popen(cmd, pass_fds=(key_r, note_w), start_new_session=True,
                                         stdin=subprocess.DEVNULL)
        finally:
            os.close(key_r)
            os.close(note_w)
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

    @property
    def pid(self) -> int | None:
        """The daemon's PID, for the supervisor to notice its death."""
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        """Unmount (SIGTERM makes the daemon unmount cleanly) and wait for the daemon."""
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
        mp = os.path.realpath(self.mount_path)
        if mp in mounted_paths():
            subprocess.run(["fusermount3", "-u", "-z", mp], capture_output=True)
