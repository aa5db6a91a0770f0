"""The ``tdx`` attester: a TD quote through configfs-tsm, self-checked, plus the CC event log.

Quote generation follows the Linux configfs-tsm report interface
(Documentation/ABI/testing/configfs-tsm in the kernel tree) and guest-components:

1. ``mkdir`` a fresh, uniquely named entry under ``/sys/kernel/config/tsm/report``
   (ENXIO: no TSM provider registered, i.e. not a TDX guest or the driver is not loaded);
2. read ``provider``: it must be ``tdx_guest``;
3. read ``generation`` (0 for a fresh entry), write the 64-byte REPORTDATA (the runtime-data
   digest zero-padded to 64) to ``inblob`` in one write;
4. read ``outblob`` to EOF: the quote, in the Intel TDX DCAP quote format (the first read runs
   TDG.MR.REPORT and the host's GetQuote, up to 30 s);
5. read ``generation`` again: it must be exactly one more than before (1 on a fresh entry).
   Anything else means another writer raced on the entry: the quote is discarded and the
   whole sequence retried with a new entry, :data:`TSM_ATTEMPTS` times in all;
6. ``rmdir`` the entry, always (in ``finally``).

Before it is returned, the quote goes through :func:`agent.tdx.check_quote`: TEE type
TDX, REPORTDATA equal to what was written, no debug TD attribute unless ``allow_debug``.

Evidence (the Trustee KBS protocol's ``tdx`` evidence, as guest-components sends it)::

    {"quote": "<std-base64>", "cc_eventlog": "<std-base64>" | null}

No ``aa_eventlog`` member: every verifier that read it declares it optional (a missing member
is null), and the legacy text AAEL it carried is not something this agent writes.

``cc_eventlog`` is built from ``/sys/firmware/acpi/tables/data/CCEL`` in the form the
reference client of each dialect sent (:data:`CCEL_FORM_BY_DIALECT`, see
:mod:`agent.attesters.eventlog`): the raw log area for 0.1.0/0.1.1/0.2.0 (guest-components
<= v0.14, Alibaba <= v1.3), and for 0.4.0 the log trimmed after its last event, then the AAEL
(env ``AAEL_PATH``, default ``/run/attestation-agent/eventlog``) if that file exists, then 8
bytes of 0xFF (guest-components >= v0.15). The AAEL is the log :mod:`agent.measure` writes
while extending RTMR3: it is read through :meth:`agent.measure.MeasurementLog.snapshot` (a
write-ahead record left by a crash is settled first, the records must parse) under the log's
lock, held from the quote to the read, so no measurement falls between the two. When the log
sent does not replay to the quote's RTMR3, a warning says so (a verifier would refuse it).
**UNCERTAIN:** a 0.4.0 server of upstream v0.14.0
(or an openanolis 0.4.0 server) saw raw CCELs from its own clients; its parser is expected to
stop at the first 0xFF/zero filler either way, so both forms should verify. Should one not,
``TDX_CCEL_FORM=raw`` (or ``trimmed``) overrides the per-dialect choice.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import time
from collections.abc import Mapping

from ..b64 import b64decode, b64encode
from ..kernelfs import write_once
from ..measure import DEFAULT_AAEL_PATH, MeasurementLog, register_for
from ..protocol import DIALECTS, LATEST
from ..tdx import QuoteError, check_quote, parse_quote
from . import eventlog
from .base import AttesterError, check_dialect, check_digest, get_logger

DEFAULT_TSM_ROOT = "/sys/kernel/config/tsm/report"
CCEL_PATH = "/sys/firmware/acpi/tables/data/CCEL"
TDX_GUEST_DEVICE = "/dev/tdx_guest"
PROVIDER = "tdx_guest"
REPORT_DATA_SIZE = 64
TSM_ATTEMPTS = 3  # fresh entries tried when generation shows a concurrent writer (or EBUSY)
MIN_QUOTE_SIZE = 1020  # go-tdx-guest's lower bound for a v4 quote; less means the host failed
CCEL_FORMS = ("auto", "raw", "trimmed")
# guest-components >= v0.15 (the 0.4.0 clients) trim; every older client sent the raw log area
CCEL_FORM_BY_DIALECT = {d: "trimmed" if d == LATEST else "raw" for d in DIALECTS}

_MOUNT_HINT = ("configfs must be mounted at /sys/kernel/config (mount -t configfs none /sys/kernel/config) "
               "and the kernel must be a TDX guest with configfs-tsm reports (Linux >= 6.7, tdx_guest "
               "driver)")


class _Race(Exception):
    """The entry's generation moved under us: discard the quote, use a new entry."""


class FileOps:
    """The few file operations on configfs, one object so tests can stand in for the kernel."""

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o700)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def read(self, path: str) -> bytes:
        """Read to EOF (outblob can be far larger than one page)."""
        with open(path, "rb", buffering=0) as f:
            return f.readall()

    def write(self, path: str, data: bytes) -> None:
        """One write(2) of all of ``data``: the TDX provider accepts only a single 64-byte inblob."""
        write_once(path, data)


_fs = FileOps()  # module level so tests can replace it; read at call time


def _os_error_hint(e: OSError) -> str:
    return {
        errno.ENXIO: "no TSM provider is registered: this kernel is not running as a TDX guest or the "
                     "tdx_guest driver is not loaded",
        errno.EACCES: "permission denied: configfs-tsm reports need root (or CAP_SYS_ADMIN)",
        errno.EPERM: "operation not permitted: configfs-tsm reports need root (or CAP_SYS_ADMIN)",
        errno.EINVAL: "the kernel refused the request (inblob must be exactly 64 bytes for tdx_guest)",
        errno.EBUSY: "an earlier quote request is still in flight at the host",
        errno.ETIMEDOUT: "the host did not answer the GetQuote request within 30 s: check the Quote "
                         "Generation Service (QGS) on the host",
        errno.EIO: "the TDREPORT call or the host's GetQuote failed: check the host's Quote Generation "
                   "Service (QGS) and its PCCS/collateral configuration",
        errno.EINTR: "interrupted by a signal",
    }.get(e.errno or 0, e.strerror or str(e))


class TdxAttester:
    name = "tdx"
    tee = "tdx"

    def __init__(self, *, tsm_root: str = DEFAULT_TSM_ROOT, ccel_path: str = CCEL_PATH,
                 allow_debug: bool = False, environ: Mapping[str, str] | None = None,
                 ccel_form: str = "auto", device: str = TDX_GUEST_DEVICE, retry_delay: float = 1.0,
                 log: logging.Logger | None = None):
        if ccel_form not in CCEL_FORMS:
            raise AttesterError(f"unknown CCEL form {ccel_form!r}; choose one of: {', '.join(CCEL_FORMS)}")
        self.tsm_root = tsm_root
        self.ccel_path = ccel_path
        self.allow_debug = allow_debug
        self.environ = os.environ if environ is None else environ
        self.ccel_form = ccel_form
        self.device = device
        self.retry_delay = retry_delay
        self.log = get_logger(log)

    # -- detection -----------------------------------------------------------------------------
    def _new_entry(self) -> str:
        fs = _fs
        for _ in range(8):
            path = os.path.join(self.tsm_root, f"agent-{os.getpid()}-{secrets.token_hex(6)}")
            try:
                fs.mkdir(path)
                return path
            except FileExistsError:
                continue
            except FileNotFoundError:
                raise AttesterError(self._missing_message()) from None
            except OSError as e:
                raise AttesterError(f"cannot create a configfs-tsm report entry under {self.tsm_root}: "
                                    f"{_os_error_hint(e)} ({e.strerror or e})") from None
        raise AttesterError(f"cannot create a uniquely named entry under {self.tsm_root}")

    def _missing_message(self) -> str:
        msg = f"configfs-tsm is not available: {self.tsm_root} does not exist; {_MOUNT_HINT}"
        if _fs.exists(self.device):
            msg += (f". {self.device} exists, so this is a TDX guest, but its kernel lacks configfs-tsm "
                    "quote support (or configfs is not mounted)")
        return msg

    def _rmdir(self, path: str) -> None:
        try:
            _fs.rmdir(path)
        except OSError as e:
            self.log.warning("could not remove the configfs-tsm entry %s: %s", path, e)

    def _read_provider(self, entry: str) -> str:
        return _fs.read(os.path.join(entry, "provider")).decode("ascii", "replace").strip()

    def probe(self) -> tuple[bool, str]:
        """(does configfs-tsm offer the tdx_guest provider?, what was found) without writing a request."""
        if not _fs.isdir(self.tsm_root):
            return False, self._missing_message()
        try:
            entry = self._new_entry()
        except AttesterError as e:
            return False, str(e)
        try:
            provider = self._read_provider(entry)
        except OSError as e:
            return False, f"cannot read {os.path.join(entry, 'provider')}: {_os_error_hint(e)}"
        finally:
            self._rmdir(entry)
        if provider != PROVIDER:
            return False, (f"the configfs-tsm provider under {self.tsm_root} is {provider!r}, not "
                           f"{PROVIDER!r}: this is not a TDX guest")
        return True, f"configfs-tsm at {self.tsm_root} offers the {PROVIDER} provider"

    def detect(self) -> bool:
        return self.probe()[0]

    # -- quote ---------------------------------------------------------------------------------
    def _quote_once(self, inblob: bytes) -> bytes:
        entry = self._new_entry()
        try:
            step = "provider"
            provider = self._read_provider(entry)
            if provider != PROVIDER:
                raise AttesterError(f"{os.path.join(entry, 'provider')} reads {provider!r}, not "
                                    f"{PROVIDER!r}: configfs-tsm here serves another TEE, this is not a "
                                    "TDX guest")
            step = "generation"
            before = int(_fs.read(os.path.join(entry, "generation")).strip() or b"0")
            step = "inblob"
            _fs.write(os.path.join(entry, "inblob"), inblob)
            step = "outblob"
            quote = _fs.read(os.path.join(entry, "outblob"))
            step = "generation"
            after = int(_fs.read(os.path.join(entry, "generation")).strip() or b"0")
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise _Race(f"{step}: {_os_error_hint(e)}") from None
            raise AttesterError(f"configfs-tsm quote request failed at {os.path.join(entry, step)}: "
                                f"{_os_error_hint(e)} ({e.strerror or e})") from None
        except ValueError:
            raise AttesterError(f"{os.path.join(entry, 'generation')} is not a decimal number") from None
        finally:
            self._rmdir(entry)
        if after != before + 1:
            raise _Race(f"generation went from {before} to {after} across one inblob write: another writer "
                        "raced on the entry")
        if len(quote) < MIN_QUOTE_SIZE:
            raise AttesterError(f"configfs-tsm returned a {len(quote)}-byte outblob, not a quote: the host's "
                                "Quote Generation Service (QGS) failed or is unreachable (older kernels "
                                "report a host-side failure this way); check QGS and PCCS on the host")
        return quote

    def quote(self, report_data: bytes) -> bytes:
        """A self-checked TD quote whose REPORTDATA is ``report_data`` zero-padded to 64 bytes."""
        digest = check_digest(report_data, REPORT_DATA_SIZE)
        inblob = digest.ljust(REPORT_DATA_SIZE, b"\0")
        last = ""
        for attempt in range(1, TSM_ATTEMPTS + 1):
            try:
                quote = self._quote_once(inblob)
                break
            except _Race as e:
                last = str(e)
                self.log.warning("configfs-tsm attempt %d/%d: %s; retrying with a new entry",
                                 attempt, TSM_ATTEMPTS, last)
                if attempt < TSM_ATTEMPTS and self.retry_delay:
                    time.sleep(self.retry_delay)
        else:
            raise AttesterError(f"no consistent quote from configfs-tsm under {self.tsm_root} after "
                                f"{TSM_ATTEMPTS} attempts ({last}); another process is generating quotes at "
                                "the same time: retry later or stop it")
        try:
            check_quote(quote, inblob, allow_debug=self.allow_debug)
        except QuoteError as e:
            hint = ("; a debug TD is refused unless debug TDs are explicitly allowed (development only)"
                    if "debug" in str(e) else "")
            raise AttesterError(f"the quote configfs-tsm produced failed its self-check: {e}{hint}") from e
        return quote

    # -- event log -----------------------------------------------------------------------------
    def _read_optional(self, path: str, what: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise AttesterError(f"cannot read the {what} at {path}: {e.strerror or e} (it needs "
                                "root)") from None

    def form_for(self, dialect: str) -> str:
        check_dialect(dialect)
        form = self.ccel_form
        if form == "auto":
            form = (self.environ.get("TDX_CCEL_FORM") or "auto").strip().lower()
        if form == "auto":
            return CCEL_FORM_BY_DIALECT[dialect]
        if form not in ("raw", "trimmed"):
            raise AttesterError(f"TDX_CCEL_FORM={form!r} is not one of: auto, raw, trimmed")
        return form

    def measurement_log(self) -> MeasurementLog:
        """The AAEL (``AAEL_PATH``) and RTMR3 (``TDX_MEASUREMENTS_DIR``) that agent.measure writes."""
        return MeasurementLog.from_environ(self.environ, register_for(self.name, self.environ), log=self.log)

    def cc_eventlog(self, dialect: str, mlog: MeasurementLog | None = None) -> str | None:
        """The ``cc_eventlog`` value for ``dialect``: std base64, or None when there is no log."""
        form = self.form_for(dialect)
        ccel = self._read_optional(self.ccel_path, "CC event log (CCEL)")
        if ccel is None:
            self.log.info("no CC event log at %s; cc_eventlog is built without it", self.ccel_path)
        elif not ccel:
            self.log.warning("the CC event log at %s is empty; treated as absent", self.ccel_path)
            ccel = None
        aael = None
        if form == "trimmed":
            mlog = mlog or self.measurement_log()
            aael = mlog.snapshot()
            if not aael and not os.path.exists(mlog.path):
                aael = None
        try:
            data = eventlog.cc_eventlog(ccel, aael, form)
        except eventlog.EventLogError as e:
            raise AttesterError(f"the CC event log at {self.ccel_path} cannot be trimmed for protocol "
                                f"{dialect}: {e}; TDX_CCEL_FORM=raw sends it untrimmed") from None
        return None if data is None else b64encode(data)

    def check_rtmr3(self, quote: bytes, cc_eventlog: str | None) -> bool:
        """Whether the log sent replays to the quote's RTMR3; a warning when not (never an error:
        the verifier decides, but this says why it will refuse)."""
        rtmr3 = parse_quote(quote).body.rtmrs[3]
        events = eventlog.walk(b64decode(cc_eventlog)).events if cc_eventlog else ()
        replayed = eventlog.replay(events, 4)
        if replayed == rtmr3:
            return True
        self.log.warning("RTMR3 in the quote is %s but the cc_eventlog sent replays to %s: another "
                         "program extends RTMR3 without logging to %s, or the log was changed; a verifier "
                         "that replays RTMR3 will refuse this evidence", rtmr3.hex(), replayed.hex(),
                         self.environ.get("AAEL_PATH") or DEFAULT_AAEL_PATH)
        return False

    def evidence(self, report_data: bytes, dialect: str) -> dict:
        check_dialect(dialect)
        mlog = self.measurement_log()
        with mlog.locked(create=False):  # no measurement between the quote and the log read
            quote = self.quote(report_data)
            cc = self.cc_eventlog(dialect, mlog)
        if self.form_for(dialect) == "trimmed":
            self.check_rtmr3(quote, cc)
        return {"quote": b64encode(quote), "cc_eventlog": cc}
