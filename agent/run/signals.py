"""Stop signals before the command runs: unwind, so that nothing is left behind.

Between the start of a secure run and the start of the command the agent fetches the key,
mounts or decrypts into RAM. A SIGTERM (the platform stopping the container) or SIGINT there
would by default kill the agent on the spot, leaving a mount daemon serving the model or the
plaintext in tmpfs. :class:`StopGuard` turns them into :class:`Stopped`, which unwinds through
the ``finally`` blocks that unmount and remove; while the command runs the supervisor forwards
them instead, and during cleanup they are only remembered (a second signal must not cut the
cleanup short).
"""

from __future__ import annotations

import signal
from types import FrameType

__all__ = ["STOP_SIGNALS", "StopGuard", "Stopped"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Stopped(BaseException):  # noqa: N818 (a control-flow signal, like KeyboardInterrupt)
    """A stop signal arrived before the command started; ``exit_code`` is the shell's 128+N."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128+N, as a shell reports a command killed by signal N."""
        return 128 + self.signum

    @property
    def name(self) -> str:
        """SIGTERM, SIGINT, ...: for the log line."""
        return signal.Signals(self.signum).name


class StopGuard:
    """Installs the handlers for a ``with`` block; :meth:`hold` makes them only remember."""

    def __init__(self) -> None:
        self.armed = True
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopGuard:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def hold(self) -> None:
        """From now on a stop signal is remembered, not raised: the cleanup must run to its end."""
        self.armed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """Raise :class:`Stopped` once while armed; afterwards only remember the signal."""
        self.received = self.received or signum
        if self.armed:
            self.armed = False  # one unwind is enough
            raise Stopped(signum)
