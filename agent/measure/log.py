"""The measurement log (AAEL file) and its write-ahead protocol with the register.

The log (``AAEL_PATH``, default ``/run/attestation-agent/eventlog`` as guest-components) holds
only *committed* TCG2 AAEL records, back to back, so an attester can append it to
``cc_eventlog`` as it is. A register cannot be rolled back and the kernel keeps no log, so
every extend goes through a write-ahead record, ``<AAEL_PATH>.pending``, which makes a crash at
any point recoverable. Under an exclusive ``flock`` on ``<AAEL_PATH>.lock``:

1. recover any pending record left by an earlier crash (below);
2. read the register (``old``); ``expected = SHA-384(old || digest)``; ``offset`` = log size;
3. write the pending record (offset, old, expected, the record bytes, a SHA-384 checksum) to
   ``<AAEL_PATH>.pending.tmp``, fsync, rename to ``.pending``, fsync the directory;
4. extend the register, then read it back: it must now be ``expected`` (another writer
   extending the same register in between is an error, never papered over);
5. write the record at ``offset`` in the log (truncating anything after it), fsync;
6. unlink ``.pending``, fsync the directory: committed.

Recovery, when ``.pending`` exists (each crash point leaves one of these states):

* a ``.pending.tmp`` alone: the crash came before step 3 finished, the register was not
  touched: the temporary file is dropped;
* register == ``expected``: the extend happened (crash after 4 or during 5): the record is
  written at ``offset`` (again), the pending record removed: **confirmed**;
* register == ``old``: the extend never happened (crash after 3): the log is cut back to
  ``offset``, the pending record removed: **dropped**;
* anything else (the register moved by another writer, a checksum that fails, a log shorter
  than ``offset``): :class:`MeasurementError`, nothing is changed, since guessing could leave a log
  that does not replay to the register.

``hook(step)`` is called after steps 3 (``"pending-tmp"`` before the rename, ``"pending"``
after), 4 (``"extended"``) and 5 (``"appended"``): tests raise there to simulate a crash.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import MeasurementError
from .events import (
    DIGEST_SIZE,
    ZERO_REGISTER,
    Event,
    EventFormatError,
    extend,
    parse_events,
    parse_record,
    replay,
)
from .registers import Register, fsync_dir

DEFAULT_AAEL_PATH = "/run/attestation-agent/eventlog"
PENDING_MAGIC = b"AAELWAL1"
_PENDING_HEAD = struct.Struct(f"<8sQ{DIGEST_SIZE}s{DIGEST_SIZE}sI")  # magic, offset, old, expected, len
Hook = Callable[[str], None]


def aael_path(environ: Mapping[str, str] = os.environ) -> str:
    """``AAEL_PATH``, else guest-components' default."""
    return environ.get("AAEL_PATH") or DEFAULT_AAEL_PATH


@dataclass(frozen=True)
class Pending:
    offset: int
    old: bytes
    expected: bytes
    record: bytes

    def to_bytes(self) -> bytes:
        data = _PENDING_HEAD.pack(PENDING_MAGIC, self.offset, self.old, self.expected, len(self.record))
        data += self.record
        return data + hashlib.sha384(data).digest()


class MeasurementLog:
    """The AAEL file at ``path`` together with the register its records extend."""

    def __init__(self, path: str = DEFAULT_AAEL_PATH, register: Register | None = None, *,
                 hook: Hook | None = None, log: logging.Logger | None = None):
        self.path = path
        self.pending_path = f"{path}.pending"
        self.lock_path = f"{path}.lock"
        self.register = register
        self.hook = hook
        self.log = log if log is not None else logging.getLogger("agent")
        self._mutex = threading.RLock()
        self._depth = 0
        self._lock_fd: int | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ, register: Register | None = None,
                     **kw) -> MeasurementLog:
        return cls(aael_path(environ), register, **kw)

    # -- reading --------------------------------------------------------------------------------
    def read_bytes(self) -> bytes:
        """The committed records as they are on disk (empty when the file does not exist)."""
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""
        except OSError as e:
            raise MeasurementError(f"cannot read the event log {self.path}: {e.strerror or e}") from None

    def events(self) -> list[Event]:
        try:
            return parse_events(self.read_bytes())
        except EventFormatError as e:
            raise MeasurementError(f"the event log {self.path} is not a sequence of TCG2 AAEL records: "
                                   f"{e}") from None

    def replay(self, register_initial: bytes = ZERO_REGISTER) -> bytes:
        """The register value the committed log leads to from ``register_initial``."""
        return replay(self.events(), register_initial)

    def snapshot(self) -> bytes:
        """The committed log for evidence, after recovering a pending record (under the lock if any)."""
        with self.locked(create=False):
            if os.path.exists(self.pending_path) or os.path.exists(f"{self.pending_path}.tmp"):
                self._recover()
            data = self.read_bytes()
        try:
            parse_events(data)
        except EventFormatError as e:
            raise MeasurementError(f"the event log {self.path} is not a sequence of TCG2 AAEL records "
                                   f"(another program's log at the same path?): {e}") from None
        return data

    # -- locking --------------------------------------------------------------------------------
    @contextmanager
    def locked(self, create: bool = True) -> Iterator[MeasurementLog]:
        """Hold the exclusive lock on ``<path>.lock`` (reentrant within this object).

        ``create=False`` locks only when the lock file exists: evidence collection on a machine
        that never measured anything creates no file.
        """
        with self._mutex:
            if self._depth == 0:
                self._lock_fd = self._open_lock(create)
                if self._lock_fd is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
                if self._depth == 0 and self._lock_fd is not None:
                    os.close(self._lock_fd)  # releases the flock
                    self._lock_fd = None

    def _open_lock(self, create: bool) -> int | None:
        try:
            if create:
                os.makedirs(os.path.dirname(self.lock_path) or ".", 0o755, exist_ok=True)
                return os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            return os.open(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            if create:
                raise MeasurementError(f"cannot create the lock file {self.lock_path}") from None
            return None
        except OSError as e:
            raise MeasurementError(f"cannot open the lock file {self.lock_path}: {e.strerror or e}") from None

    # -- the write-ahead transaction ------------------------------------------------------------
    def _step(self, name: str) -> None:
        if self.hook is not None:
            self.hook(name)

    def _need_register(self, why: str) -> Register:
        if self.register is None:
            raise MeasurementError(f"{why} needs the register the log {self.path} belongs to, and none was "
                                   "given")
        return self.register

    def append(self, event: Event) -> Event:
        """Extend the register with ``event`` and log it, crash-safely (module docstring)."""
        register = self._need_register("measuring an event")
        if event.mr_index != register.mr_index:
            raise MeasurementError(f"the event is for MR index {event.mr_index} but {register.name} is index "
                                   f"{register.mr_index}")
        with self.locked():
            self._recover()
            old = register.read()
            pending = Pending(self._log_size(), old, extend(old, event.digest), event.to_bytes())
            self._write_pending(pending)
            self._step("pending")
            register.extend(event.digest)
            self._step("extended")
            now = register.read()
            if now != pending.expected:
                raise MeasurementError(
                    f"{register.name} is {now.hex()} after the extend, not the expected "
                    f"{pending.expected.hex()}: another program extends the same register, so the log can no "
                    f"longer replay to it; the pending record {self.pending_path} is kept (measuring stops "
                    "until this is resolved)")
            self._write_record(pending.offset, pending.record)
            self._step("appended")
            self._clear_pending()
        return event

    def recover(self) -> str:
        """Settle a record left pending by a crash: ``"clean"``, ``"confirmed"`` or ``"dropped"``."""
        with self.locked():
            return self._recover()

    def _recover(self) -> str:
        tmp = f"{self.pending_path}.tmp"
        if os.path.exists(tmp):
            os.unlink(tmp)  # never renamed: the register was not touched
            self.log.warning("measurement log: dropped an unfinished write-ahead record %s", tmp)
        if not os.path.exists(self.pending_path):
            return "clean"
        pending = self._read_pending()
        register = self._need_register(f"recovering the pending record {self.pending_path}")
        size = self._log_size()
        if size < pending.offset:
            raise MeasurementError(f"the event log {self.path} is {size} bytes, shorter than the "
                                   f"{pending.offset} its pending record {self.pending_path} expects: it was "
                                   "truncated by another program; the log can no longer be reconciled with "
                                   "the register")
        current = register.read()
        event, _ = parse_record(pending.record)
        if current == pending.expected:
            self._write_record(pending.offset, pending.record)
            self._clear_pending()
            self.log.warning("measurement log: confirmed the event %r left pending by a crash (%s was "
                             "extended)", event.text, register.name)
            return "confirmed"
        if current == pending.old:
            self._truncate(pending.offset)
            self._clear_pending()
            self.log.warning("measurement log: dropped the event %r left pending by a crash (%s was not "
                             "extended)", event.text, register.name)
            return "dropped"
        raise MeasurementError(
            f"{register.name} is {current.hex()}, neither the value before ({pending.old.hex()}) nor "
            f"after ({pending.expected.hex()}) the event pending in {self.pending_path}: another program "
            f"extended it; the log {self.path} can no longer replay to it")

    # -- files ----------------------------------------------------------------------------------
    def _log_size(self) -> int:
        try:
            return os.path.getsize(self.path)
        except FileNotFoundError:
            return 0
        except OSError as e:
            raise MeasurementError(f"cannot stat the event log {self.path}: {e.strerror or e}") from None

    def _write_pending(self, pending: Pending) -> None:
        tmp = f"{self.pending_path}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fd, pending.to_bytes(), 0)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._step("pending-tmp")
            os.replace(tmp, self.pending_path)
        except OSError as e:
            raise MeasurementError(f"cannot write the write-ahead record {self.pending_path}: "
                                   f"{e.strerror or e}") from None
        fsync_dir(os.path.dirname(self.pending_path))

    def _read_pending(self) -> Pending:
        try:
            with open(self.pending_path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise MeasurementError(f"cannot read the write-ahead record {self.pending_path}: "
                                   f"{e.strerror or e}") from None
        bad = (f"the write-ahead record {self.pending_path} is damaged or not this agent's; whether the "
               f"register was extended cannot be told, so the log {self.path} is left as it is")
        body, checksum = data[:-DIGEST_SIZE], data[-DIGEST_SIZE:]
        if len(body) < _PENDING_HEAD.size or hashlib.sha384(body).digest() != checksum:
            raise MeasurementError(bad)
        magic, offset, old, expected, n = _PENDING_HEAD.unpack_from(body)
        record = body[_PENDING_HEAD.size:]
        if magic != PENDING_MAGIC or n != len(record):
            raise MeasurementError(bad)
        try:
            event, end = parse_record(record)
        except EventFormatError:
            raise MeasurementError(bad) from None
        if end != len(record) or extend(old, event.digest) != expected:
            raise MeasurementError(bad)
        return Pending(offset, old, expected, record)

    def _open_log(self) -> int:
        os.makedirs(os.path.dirname(self.path) or ".", 0o755, exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def _write_record(self, offset: int, record: bytes) -> None:
        try:
            fd = self._open_log()
            try:
                os.ftruncate(fd, offset)
                _write_all(fd, record, offset)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise MeasurementError(f"cannot append to the event log {self.path}: {e.strerror or e}") from None
        fsync_dir(os.path.dirname(self.path))

    def _truncate(self, offset: int) -> None:
        try:
            fd = self._open_log()
            try:
                os.ftruncate(fd, offset)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise MeasurementError(f"cannot truncate the event log {self.path}: {e.strerror or e}") from None

    def _clear_pending(self) -> None:
        try:
            os.unlink(self.pending_path)
        except OSError as e:
            raise MeasurementError(f"cannot remove the write-ahead record {self.pending_path}: "
                                   f"{e.strerror or e}") from None
        fsync_dir(os.path.dirname(self.pending_path))


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
