"""The registers a measurement extends, one per attester (:data:`REGISTERS`).

* ``tdx``: RTMR3 through the kernel's TDX measurement-register files (Linux >= 6.16,
  ``Documentation/ABI/testing/sysfs-devices-virtual-misc-tdx_guest``):
  ``<TDX_MEASUREMENTS_DIR>/rtmr3:sha384`` reads as the 48-byte register, and one 48-byte write
  at offset 0 extends it (``RTMR3 = SHA-384(RTMR3 || data)``; a partial write fails EINVAL).
  The kernel keeps no log: that is what :mod:`agent.measure.log` is for. MR index 4 (CCMR).
* ``system``: a software register, a file of hex text (``SYSTEM_MEASURE_REGISTER``, default
  ``/run/attestation-agent/system_measure_register`` as Trustiflux's system attester), 48 zero
  bytes until first extended. MR index 1, as Trustee's system verifier replays it. Nothing but
  file permissions protects it: it is worth what the system evidence is worth.
* ``sample``: no register at all; measuring with it is never silent (see :func:`agent.measure.measure`).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..errors import MeasurementError
from ..kernelfs import read_all, write_once
from .events import DIGEST_SIZE, ZERO_REGISTER, extend

DEFAULT_TDX_MEASUREMENTS_DIR = "/sys/class/misc/tdx_guest/measurements"
TDX_RTMR3_FILE = "rtmr3:sha384"
TDX_MR_INDEX = 4  # CCMR 4 = RTMR3 (guest-components maps PCR 17 there)
DEFAULT_SYSTEM_REGISTER = "/run/attestation-agent/system_measure_register"
SYSTEM_MR_INDEX = 1  # Trustee's system verifier replays index 1


@dataclass(frozen=True)
class Availability:
    """Whether a register can be extended here, and what was found (true-ish when it can)."""

    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok


@runtime_checkable
class Register(Protocol):
    name: str  # for messages: "RTMR3", "the system register"
    mr_index: int  # the MR index written in each event record

    def available(self) -> Availability:
        """Whether :meth:`extend` can work here; the reason says what was looked for."""
        ...

    def read(self) -> bytes:
        """The current 48-byte value."""
        ...

    def extend(self, digest: bytes) -> None:
        """``value = SHA-384(value || digest)``; :class:`MeasurementError` if it cannot be done."""
        ...


class RegisterIO:
    """The two file operations on the kernel's register file, one object so tests can fake the kernel."""

    def read(self, path: str) -> bytes:
        return read_all(path)

    def write(self, path: str, data: bytes) -> None:
        """One write(2) at offset 0: the kernel extends with exactly what one write carries."""
        write_once(path, data)


_TDX_HINTS = {
    errno.EACCES: "permission denied: extending RTMR3 needs root",
    errno.EPERM: "operation not permitted: extending RTMR3 needs root",
    errno.EINVAL: "the kernel refused the write (it takes exactly one 48-byte SHA-384 digest)",
    errno.EIO: "the TDX module refused the extend (TDG.MR.RTMR.EXTEND failed)",
}


class TdxRegister:
    """RTMR3 through ``<measurements_dir>/rtmr3:sha384`` (Linux >= 6.16)."""

    name = "RTMR3"
    mr_index = TDX_MR_INDEX

    def __init__(self, measurements_dir: str = DEFAULT_TDX_MEASUREMENTS_DIR, io: RegisterIO | None = None):
        self.measurements_dir = measurements_dir
        self.path = os.path.join(measurements_dir, TDX_RTMR3_FILE)
        self.io = io or RegisterIO()

    def available(self) -> Availability:
        if not os.path.isdir(self.measurements_dir):
            return Availability(False, f"{self.measurements_dir} does not exist: this kernel offers no TDX "
                                       "measurement registers to user space (Linux >= 6.16 in a TDX guest, "
                                       "tdx_guest driver; set TDX_MEASUREMENTS_DIR if they live elsewhere)")
        if not os.path.exists(self.path):
            return Availability(False, f"{self.measurements_dir} exists but has no {TDX_RTMR3_FILE}: this "
                                       "kernel does not let user space extend RTMR3")
        if not os.access(self.path, os.R_OK | os.W_OK):
            return Availability(False, f"{self.path} is not readable and writable by this process: extending "
                                       "RTMR3 needs root")
        return Availability(True, f"RTMR3 at {self.path}")

    def read(self) -> bytes:
        try:
            value = self.io.read(self.path)
        except OSError as e:
            raise MeasurementError(f"cannot read RTMR3 at {self.path}: "
                                   f"{_TDX_HINTS.get(e.errno or 0, e.strerror or str(e))}") from None
        if len(value) != DIGEST_SIZE:
            raise MeasurementError(f"{self.path} reads {len(value)} bytes, not the {DIGEST_SIZE} of a "
                                   "SHA-384 RTMR: not the kernel's TDX register file")
        return value

    def extend(self, digest: bytes) -> None:
        if len(digest) != DIGEST_SIZE:
            raise MeasurementError(f"RTMR3 is extended with a {DIGEST_SIZE}-byte SHA-384 digest, not "
                                   f"{len(digest)}")
        try:
            self.io.write(self.path, bytes(digest))
        except OSError as e:
            raise MeasurementError(f"cannot extend RTMR3 through {self.path}: "
                                   f"{_TDX_HINTS.get(e.errno or 0, e.strerror or str(e))}") from None


def fsync_dir(path: str) -> None:
    """Make a rename or unlink in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class SystemRegister:
    """A software register: a file of hex text, replaced atomically on each extend."""

    name = "the system register"
    mr_index = SYSTEM_MR_INDEX

    def __init__(self, path: str = DEFAULT_SYSTEM_REGISTER):
        self.path = path

    def available(self) -> Availability:
        return Availability(True, f"software register file {self.path} (no hardware protects it)")

    def read(self) -> bytes:
        """The value; a missing file is the initial all-zero register."""
        try:
            with open(self.path, "rb") as f:
                text = f.read().strip()
        except FileNotFoundError:
            return ZERO_REGISTER
        except OSError as e:
            raise MeasurementError(f"cannot read the system register {self.path}: "
                                   f"{e.strerror or e}") from None
        try:
            value = bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            value = b""
        if len(value) != DIGEST_SIZE:
            raise MeasurementError(f"the system register {self.path} is not {2 * DIGEST_SIZE} hex digits; it "
                                   "and the event log (AAEL_PATH) can only be reset together: delete both")
        return value

    def extend(self, digest: bytes) -> None:
        """Write ``SHA-384(old || digest)`` to a temporary file, fsync, rename over the register.

        A crash leaves the old or the new value, never a torn one.
        """
        if len(digest) != DIGEST_SIZE:
            raise MeasurementError(f"the system register takes a {DIGEST_SIZE}-byte digest, not "
                                   f"{len(digest)}")
        new = extend(self.read(), bytes(digest))
        directory = os.path.dirname(self.path) or "."
        tmp = f"{self.path}.tmp"
        try:
            os.makedirs(directory, 0o755, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, new.hex().encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as e:
            raise MeasurementError(f"cannot update the system register {self.path}: "
                                   f"{e.strerror or e}") from None
        fsync_dir(directory)


# attester name -> its register (None: that attester has no register)
REGISTERS: dict[str, Callable[[Mapping[str, str]], Register | None]] = {
    "tdx": lambda env: TdxRegister(env.get("TDX_MEASUREMENTS_DIR") or DEFAULT_TDX_MEASUREMENTS_DIR),
    "system": lambda env: SystemRegister(env.get("SYSTEM_MEASURE_REGISTER") or DEFAULT_SYSTEM_REGISTER),
    "sample": lambda env: None,
}


def register_for(attester_name: str, environ: Mapping[str, str] = os.environ) -> Register | None:
    """The register the attester ``attester_name`` measures into, or None (``sample``)."""
    try:
        factory = REGISTERS[attester_name]
    except KeyError:
        raise MeasurementError(f"no measurement register is known for attester {attester_name!r}; known: "
                               f"{', '.join(REGISTERS)}") from None
    return factory(environ)
