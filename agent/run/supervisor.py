"""The command's supervisor: what ``agent run`` does while the model server runs.

As the container's PID 1 the agent must do init's work: forward the signals the platform sends
(SIGTERM on stop) to the command, reap orphans reparented to it, and exit with the command's
own code (128+N when signal N killed it) so that the platform sees the server's status. If the
mount daemon dies the model is gone: the command is stopped rather than left serving errors.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from types import FrameType

from .. import exitcodes
from ..errors import CommandNotExecutable, CommandNotFound
from .mount import Mount

__all__ = ["FORWARDED", "STOP_GRACE", "Supervisor", "own_process_group"]

log = logging.getLogger("agent.run")

STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL when the agent stops the command
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def own_process_group() -> dict:
    """Popen arguments that put the child in its own process group (3.10 has no process_group)."""
    if sys.version_info >= (3, 11):
        return {"process_group": 0}
    return {"preexec_fn": os.setpgrp}  # noqa: PLW1509 (3.10 has no process_group)


class Supervisor:
    """Runs the command, forwards signals, reaps orphans, notices a dead mount daemon."""

    def __init__(self, command: list[str], mount: Mount | None):
        self.command = command
        self.mount = mount
        self.child: subprocess.Popen | None = None
        self.pending: int | None = None  # a signal that came before the command existed

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        """Pass a signal on to the command, which decides how to stop (the agent waits for it)."""
        # returncode, not poll(): poll() could reap the command here, and _wait's waitpid(-1)
        # would then block on the mount daemon and lose the command's exit code.
        if self.child is None:
            self.pending = self.pending or signum
        elif self.child.returncode is None:
            try:
                os.kill(self.child.pid, signum)
            except ProcessLookupError:
                pass

    def run(self) -> int:
        """Start the command and return its exit code (or RUN_MOUNT_DIED).

        The forwarding handlers are installed first, so that no signal falls between the run's
        own handlers and these: one that comes before the command exists is sent to it at once.
        """
        previous = {sig: signal.signal(sig, self._forward) for sig in FORWARDED}
        try:
            try:
                # Its own process group: a terminal's Ctrl-C reaches the agent only, which forwards
                # it once (otherwise the command would get SIGINT twice).
                self.child = subprocess.Popen(self.command, **own_process_group())
            except FileNotFoundError:
                raise CommandNotFound(f"command not found: {self.command[0]}") from None
            except PermissionError:
                raise CommandNotExecutable(f"command not executable: {self.command[0]}") from None
            if self.pending is not None:
                self._forward(self.pending, None)
            return self._wait()
        finally:
            for sig, handler in previous.items():  # the run's own (its StopGuard), not the defaults
                signal.signal(sig, handler)

    def _wait(self) -> int:
        """Reap every child (PID 1 duty) until the command or the mount daemon ends."""
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
        """SIGTERM, then SIGKILL after STOP_GRACE: a server must not outlive its model."""
        self.child.send_signal(signal.SIGTERM)
        try:
            self.child.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()
