"""TCG2 ("crypto-agile") event logs: find the end of the last event, build the ``cc_eventlog`` forms.

A CCEL log area (``/sys/firmware/acpi/tables/data/CCEL``) is LAML bytes long, far more than the
firmware used: the events are followed by 0xFF (TDVF) or zero (td-shim) filling. Layout, all
integers little-endian (TCG PC Client Platform Firmware Profile, crypto-agile log format; the
UEFI CC event log of the TDX guest uses the same records)::

    header  TCG_PCR_EVENT (SHA-1 format): index u32, type u32 (= 3 EV_NO_ACTION), digest[20],
            size u32, data[size] = TCG_EfiSpecIDEvent ("Spec ID Event03\\0", platformClass u32,
            versionMinor u8, versionMajor u8, errata u8, uintnSize u8, numberOfAlgorithms u32,
            {algId u16, digestSize u16} x n, vendorInfoSize u8, vendorInfo)
    events  TCG_PCR_EVENT2: index u32, type u32, digestCount u32, {algId u16, digest[size]} x count,
            eventSize u32, event[eventSize]

The walk stops where guest-components' ``trim_ccel`` stops (the next 8 bytes all 0xFF or all
0x00), and also where the spec says a log ends (index or type 0xFFFFFFFF, digestCount 0, or
the data runs out exactly at an event boundary). Anything else that does not fit (an unknown
digest algorithm, an event running past the end of the data) is a :class:`EventLogError`.

The forms a client sends in the tdx evidence's ``cc_eventlog`` (Trustee KBS protocol, as
guest-components sends them):

* ``raw``: the log area file as it is (guest-components <= v0.14, all 0.1.x/0.2.0 clients);
* ``trimmed``: guest-components >= v0.15: the log cut after its last event, then the
  Attestation-Agent event log (AAEL, TCG2 records) if that file exists, preceded by
  :data:`AAEL_SPEC_ID_HEADER` when there is no CCEL, then :data:`END_MARKER`.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

EV_NO_ACTION = 0x00000003
SPEC_ID_SIGNATURE = b"Spec ID Event03\0"
END_MARKER = b"\xff" * 8  # appended by guest-components >= v0.15 after the last event

# TPM_ALG_ID -> digest size, for logs whose spec-ID event does not declare its algorithms.
KNOWN_DIGEST_SIZES = {
    0x0004: 20,  # SHA-1
    0x000B: 32,  # SHA-256
    0x000C: 48,  # SHA-384 (the only one TDX firmware declares)
    0x000D: 64,  # SHA-512
    0x0012: 32,  # SM3-256
}
MAX_DIGESTS_PER_EVENT = 16  # a sanity bound; real logs carry one digest per declared algorithm

_HEADER_FIXED = 32  # index, type, digest[20], size


class EventLogError(ValueError):
    """The bytes are not a TCG2 event log this walker understands; the message gives the offset."""


def _spec_id_header(algorithms: tuple[tuple[int, int], ...]) -> bytes:
    """An EV_NO_ACTION header event the way guest-components writes it in front of an AAEL.

    Its spec-ID data is all zero except numberOfAlgorithms and the {algId, digestSize} list
    (no "Spec ID Event03" signature), vendorInfoSize 0.
    """
    data = bytes(16 + 4 + 4) + struct.pack("<I", len(algorithms))
    data += b"".join(struct.pack("<HH", alg, size) for alg, size in algorithms) + b"\0"
    return struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(data)) + data


# The fixed 69-byte header guest-components puts before the AAEL when there is no CCEL:
# EV_NO_ACTION declaring SHA-384 (48 bytes) and SM3 (32 bytes), as guest-components' attestation
# agent writes it. guest-components has shipped three variants of this constant: 65 bytes
# (SHA-384 only), 69 bytes (SHA-384, SM3) and, later, 73 bytes (adding SHA-256). A verifier
# sizes each digest by its algorithm, so any variant that declares SHA-384 parses our AAEL.
AAEL_SPEC_ID_HEADER = _spec_id_header(((0x000C, 48), (0x0012, 32)))
assert len(AAEL_SPEC_ID_HEADER) == 69


@dataclass(frozen=True)
class Event:
    offset: int  # of the record in the log
    end: int  # one past its last byte
    index: int  # CC measurement register index (0 MRTD, 1-4 RTMR0-3)
    type: int
    digests: tuple[tuple[int, bytes], ...]  # (algId, digest)
    data: bytes


@dataclass(frozen=True)
class Walk:
    end: int  # where the log ends: one past the last event (or the header when there is none)
    header_end: int
    digest_sizes: dict[int, int]
    events: tuple[Event, ...]
    stop: str  # why the walk stopped


def _u32(data: bytes, off: int, what: str) -> int:
    if off + 4 > len(data):
        raise EventLogError(f"truncated event log: {what} at offset {off} runs past the end "
                            f"({len(data)} bytes)")
    return struct.unpack_from("<I", data, off)[0]


def _spec_id_sizes(data: bytes) -> dict[int, int]:
    """The algorithm list of a TCG_EfiSpecIDEvent (empty if it is not one or is malformed)."""
    if len(data) < 28:
        return {}
    count = struct.unpack_from("<I", data, 24)[0]
    if count > MAX_DIGESTS_PER_EVENT or len(data) < 28 + 4 * count:
        return {}
    return {alg: size for alg, size in (struct.unpack_from("<HH", data, 28 + 4 * i) for i in range(count))}


def walk(data: bytes) -> Walk:
    """Parse a TCG2 log from byte 0 and find where its last event ends."""
    data = bytes(data)
    if len(data) < _HEADER_FIXED:
        raise EventLogError(f"not a TCG2 event log: {len(data)} bytes, shorter than the {_HEADER_FIXED}-byte "
                            "header event")
    ev_type = struct.unpack_from("<I", data, 4)[0]
    if ev_type != EV_NO_ACTION:
        raise EventLogError(f"not a TCG2 event log: the first event has type 0x{ev_type:x} at offset 4, not "
                            "EV_NO_ACTION (3), the spec-ID header event")
    size = _u32(data, 28, "the header event size")
    header_end = _HEADER_FIXED + size
    if header_end > len(data):
        raise EventLogError(f"truncated event log: the header event declares {size} data bytes at offset 28 "
                            f"but the log has {len(data)} bytes")
    sizes = dict(KNOWN_DIGEST_SIZES)
    sizes.update(_spec_id_sizes(data[_HEADER_FIXED:header_end]))

    events: list[Event] = []
    off = header_end
    while True:
        rest = len(data) - off
        if rest == 0:
            return Walk(off, header_end, sizes, tuple(events), "end of data")
        head = data[off:off + 8]
        if head in (b"\xff" * len(head), bytes(len(head))):
            # guest-components' end test (8 bytes of 0xFF or zero); fewer than 8 left: trailing filler
            return Walk(off, header_end, sizes, tuple(events), "filler" if rest >= 8 else "short filler")
        if rest < 12:
            raise EventLogError(f"truncated event log: {rest} bytes left at offset {off}, too few for an "
                                "event")
        index, ev_type, count = struct.unpack_from("<III", data, off)
        if index == 0xFFFFFFFF or ev_type == 0xFFFFFFFF:
            return Walk(off, header_end, sizes, tuple(events), "end marker")
        if count == 0:
            return Walk(off, header_end, sizes, tuple(events), "digest count 0")
        if count > MAX_DIGESTS_PER_EVENT:
            raise EventLogError(f"event at offset {off} declares {count} digests (at most "
                                f"{MAX_DIGESTS_PER_EVENT} expected): not a TCG2 event")
        pos = off + 12
        digests = []
        for _ in range(count):
            if pos + 2 > len(data):
                raise EventLogError(f"truncated event log: the digest algorithm at offset {pos} runs past "
                                    "the end")
            alg = struct.unpack_from("<H", data, pos)[0]
            if alg not in sizes:
                raise EventLogError(f"event at offset {off}: unknown digest algorithm 0x{alg:04x} at "
                                    f"offset {pos}")
            pos += 2
            if pos + sizes[alg] > len(data):
                raise EventLogError(f"truncated event log: the digest at offset {pos} runs past the end")
            digests.append((alg, data[pos:pos + sizes[alg]]))
            pos += sizes[alg]
        ev_size = _u32(data, pos, "an event size")
        pos += 4
        if pos + ev_size > len(data):
            raise EventLogError(f"truncated event log: the event at offset {off} declares {ev_size} data "
                                f"bytes at offset {pos - 4}, past the end ({len(data)} bytes)")
        events.append(Event(off, pos + ev_size, index, ev_type, tuple(digests), data[pos:pos + ev_size]))
        off = pos + ev_size


def replay(events: tuple[Event, ...] | list[Event], index: int, initial: bytes = bytes(48),
           alg: int = 0x000C) -> bytes:
    """A register replayed as Trustee's ``deps/eventlog`` does: from ``initial``, extend with every
    ``alg`` digest of every event at ``index``, in log order (SHA-384 registers, i.e. TDX RTMRs
    and the system register)."""
    if alg != 0x000C:
        raise ValueError(f"only SHA-384 (0x000c) registers are replayed here, not 0x{alg:04x}")
    value = bytes(initial)
    for ev in events:
        if ev.index == index:
            for digest_alg, digest in ev.digests:
                if digest_alg == alg:
                    value = hashlib.sha384(value + digest).digest()
    return value


def trim(data: bytes) -> bytes:
    """The log cut right after its last event (its header included), filler dropped."""
    return bytes(data[:walk(data).end])


def cc_eventlog(ccel: bytes | None, aael: bytes | None, form: str) -> bytes | None:
    """The bytes of the ``cc_eventlog`` field (before base64) in ``form`` ``raw`` or ``trimmed``.

    ``raw`` ignores the AAEL (clients that sent the raw CCEL never appended one). ``None``
    means the field is null: no log at all.
    """
    if form == "raw":
        return ccel
    if form != "trimmed":
        raise ValueError(f"unknown cc_eventlog form {form!r}")
    log = trim(ccel) if ccel else b""
    if aael is not None:
        if not log:
            log = AAEL_SPEC_ID_HEADER
        log += aael
    if not log:
        return None
    return log + END_MARKER
