"""One log line per phase of ``agent run`` with its duration, as text or JSON lines.

Operators read the text form to see where the time to ready goes (config, handshake, key,
unlock+mount, ready, command exited, unmounted); log collectors take ``--log-format json``.
Fields are values the operator may see: never key material.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

__all__ = ["PhaseLog", "emit_json"]

log = logging.getLogger("agent.run")
_write_lock = threading.Lock()  # the mount daemon's relayed lines come from another thread


def emit_json(level: str, logger: str, message: str, **fields: object) -> None:
    """One JSON record on stderr, one line (json.dumps escapes newlines and control characters)."""
    record = {"ts": time.time(), "level": level, "logger": logger, "message": message, **fields}
    line = json.dumps(record) + "\n"
    with _write_lock:
        sys.stderr.write(line)
        sys.stderr.flush()


class PhaseLog:
    """Times each phase from the end of the previous one, and the whole run from the start."""

    def __init__(self, fmt: str = "text"):
        self.fmt = fmt
        self.start = self.last = time.monotonic()

    def phase(self, name: str, **fields: object) -> None:
        """Log that phase ``name`` ended now, with its duration and ``fields``."""
        now = time.monotonic()
        took, total = now - self.last, now - self.start
        self.last = now
        if self.fmt == "json":
            emit_json("info", "agent.run", f"phase {name}", phase=name, seconds=round(took, 4),
                      since_start=round(total, 4), **fields)
        else:
            extra = "".join(f" {k}={v}" for k, v in fields.items())
            log.info("phase %s: %.3f s (%.3f s since start)%s", name, took, total, extra)
