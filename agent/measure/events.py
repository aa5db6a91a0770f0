"""AAEL events in their TCG2 form: build, validate, parse, replay.

One event is one crypto-agile ``TCG_PCR_EVENT2`` record, all integers little-endian (the form
guest-components >= v0.15 writes to ``/run/attestation-agent/eventlog`` and Trustee's
``deps/eventlog`` parses out of ``cc_eventlog``)::

    u32 MR index          4 = RTMR3 on TDX (CCMR numbering), 1 for the system register
    u32 event type        6 = EV_EVENT_TAG
    u32 digest count      1
    u16 algorithm         0x000C = SHA-384
    48  digest            SHA-384 of the tagged event below, its 8-byte header included
    u32 event size        8 + N
    tagged event          u32 0x4141454C ("AAEL"), u32 N, N bytes of UTF-8
                          "<domain> <operation> <content>"

The register is extended with the digest: ``new = SHA-384(old || digest)``.

What the verifier does with the text decides the rules checked here (:func:`check_fields`):
Trustee requires UTF-8 and splits on the first two spaces, so domain and operation must hold
no space (content may); guest-components refuses a newline in content, since the legacy
AAEL was one line per event. Trustee's display string drops NUL characters, so a NUL would
make the event the policy reads differ from the one measured: refused too.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

EV_EVENT_TAG = 0x00000006
AAEL_TAG = 0x4141454C  # "AAEL" as a u32; on the wire (little-endian) the bytes read "LEAA"
ALG_SHA384 = 0x000C
DIGEST_SIZE = 48
ZERO_REGISTER = bytes(DIGEST_SIZE)  # a register's value before its first extend
_HEAD = struct.Struct("<IIIH")  # MR index, event type, digest count, algorithm
_TAG = struct.Struct("<II")  # tag, N
MAX_U32 = 0xFFFFFFFF


class EventFormatError(ValueError):
    """An event's fields break the AAEL rules, or bytes are not AAEL records; says which and where.

    A ValueError, not an agent failure class: it is the caller's input (or the bytes handed
    in) that is wrong. Where a log file the agent reads is at fault, the agent raises
    :class:`~agent.errors.MeasurementError` carrying this message.
    """


def extend(register: bytes, digest: bytes) -> bytes:
    """The register value after one extend: ``SHA-384(register || digest)`` (TDX RTMR semantics)."""
    if len(register) != DIGEST_SIZE or len(digest) != DIGEST_SIZE:
        raise ValueError(f"a SHA-384 register and digest are {DIGEST_SIZE} bytes each, got "
                         f"{len(register)} and {len(digest)}")
    return hashlib.sha384(register + digest).digest()


def _check_word(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise EventFormatError(f"the event {what} must be a str, not {type(value).__name__}")
    if not value:
        raise EventFormatError(f"the event {what} is empty: the verifier splits the text on its first two "
                               "spaces, so domain and operation must each be one non-empty word")
    bad = next((c for c in value if c == " " or ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        raise EventFormatError(f"the event {what} {value!r} contains {bad!r}: domain and operation may hold "
                               "no space (the verifier splits on the first two) and no control character")
    return value


def check_fields(domain: object, operation: object, content: object) -> tuple[str, str, str]:
    """The three fields if they make a valid AAEL text, else :class:`EventFormatError`."""
    domain = _check_word(domain, "domain")
    operation = _check_word(operation, "operation")
    if not isinstance(content, str):
        raise EventFormatError(f"the event content must be a str, not {type(content).__name__}")
    for char, why in (("\n", "a newline"), ("\r", "a carriage return"), ("\0", "a NUL character")):
        if char in content:
            raise EventFormatError(f"the event content contains {why} at index {content.index(char)}: an "
                                   "AAEL event is one line (guest-components refuses newlines; Trustee "
                                   "drops NULs from the text its policy shows)")
    for what, value in (("domain", domain), ("operation", operation), ("content", content)):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise EventFormatError(f"the event {what} is not valid UTF-8 (character {e.start} is an unpaired "
                                   "surrogate, e.g. a file name that was not UTF-8): the verifier requires "
                                   "UTF-8") from None
    return domain, operation, content


@dataclass(frozen=True)
class Event:
    """One AAEL event; construction validates it (:func:`check_fields`)."""

    mr_index: int
    domain: str
    operation: str
    content: str

    def __post_init__(self) -> None:
        check_fields(self.domain, self.operation, self.content)
        if not isinstance(self.mr_index, int) or not 0 <= self.mr_index <= MAX_U32:
            raise EventFormatError(f"the MR index {self.mr_index!r} is not a u32")
        if len(self.tagged_event) - _TAG.size > MAX_U32 - _TAG.size:
            raise EventFormatError("the event text is too long for a u32 size field")

    @property
    def text(self) -> str:
        """``"<domain> <operation> <content>"``, what the verifier splits back into three."""
        return f"{self.domain} {self.operation} {self.content}"

    @property
    def tagged_event(self) -> bytes:
        """The event data of the record: the AAEL tag, N, then the N bytes of UTF-8 text."""
        data = self.text.encode("utf-8")
        return _TAG.pack(AAEL_TAG, len(data)) + data

    @property
    def digest(self) -> bytes:
        """SHA-384 of :attr:`tagged_event` (header included), what the register is extended with."""
        return hashlib.sha384(self.tagged_event).digest()

    def to_bytes(self) -> bytes:
        """The TCG2 record as it goes into the log and into ``cc_eventlog``."""
        data = self.tagged_event
        return (_HEAD.pack(self.mr_index, EV_EVENT_TAG, 1, ALG_SHA384) + hashlib.sha384(data).digest()
                + struct.pack("<I", len(data)) + data)

    @classmethod
    def from_tagged(cls, mr_index: int, data: bytes, where: str = "") -> Event:
        """The event whose tagged-event bytes are ``data`` (checks the tag, N, UTF-8 and the fields)."""
        at = f" {where}" if where else ""
        if len(data) < _TAG.size:
            raise EventFormatError(f"tagged event{at} is {len(data)} bytes, shorter than its 8-byte header")
        tag, n = _TAG.unpack_from(data)
        if tag != AAEL_TAG:
            raise EventFormatError(f"tagged event{at} has tag 0x{tag:08x}, not AAEL (0x{AAEL_TAG:08x})")
        if n != len(data) - _TAG.size:
            raise EventFormatError(f"tagged event{at} declares {n} text bytes but carries {len(data) - 8}")
        try:
            text = data[_TAG.size:].decode("utf-8")
        except UnicodeDecodeError as e:
            raise EventFormatError(f"AAEL text{at} is not UTF-8 (byte {e.start} of the text)") from None
        domain, sp1, rest = text.partition(" ")
        operation, sp2, content = rest.partition(" ")
        if not (sp1 and sp2):
            raise EventFormatError(f"AAEL text{at} {text[:80]!r} is not '<domain> <operation> <content>'")
        return cls(mr_index, domain, operation, content)


def parse_record(data: bytes, off: int = 0) -> tuple[Event, int]:
    """The AAEL record at ``off`` and the offset just past it; its stored digest must be right."""
    if len(data) - off < _HEAD.size:
        raise EventFormatError(f"truncated AAEL record at offset {off}: {len(data) - off} bytes left")
    index, ev_type, count, alg = _HEAD.unpack_from(data, off)
    if ev_type != EV_EVENT_TAG or count != 1 or alg != ALG_SHA384:
        raise EventFormatError(f"record at offset {off} is not an AAEL event (type 0x{ev_type:x}, {count} "
                               f"digest(s), algorithm 0x{alg:04x}; expected type 6, 1 digest, SHA-384)")
    pos = off + _HEAD.size
    if len(data) - pos < DIGEST_SIZE + 4:
        raise EventFormatError(f"truncated AAEL record at offset {off}: its digest or size runs past the end")
    stored = data[pos:pos + DIGEST_SIZE]
    (size,) = struct.unpack_from("<I", data, pos + DIGEST_SIZE)
    pos += DIGEST_SIZE + 4
    if size > len(data) - pos:
        raise EventFormatError(f"truncated AAEL record at offset {off}: {size} event bytes declared, "
                               f"{len(data) - pos} left")
    event = Event.from_tagged(index, bytes(data[pos:pos + size]), f"at offset {off}")
    if event.digest != stored:
        raise EventFormatError(f"record at offset {off}: its digest {stored.hex()[:16]}... is not the "
                               f"SHA-384 of its event ({event.digest.hex()[:16]}...)")
    return event, pos + size


def parse_events(data: bytes) -> list[Event]:
    """Every record of a bare AAEL (the log file: records back to back, no header, no end marker)."""
    data = bytes(data)
    events, off = [], 0
    while off < len(data):
        event, off = parse_record(data, off)
        events.append(event)
    return events


def replay(events: list[Event], register_initial: bytes = ZERO_REGISTER,
           mr_index: int | None = None) -> bytes:
    """The register after extending ``register_initial`` with each event's digest, in order.

    With ``mr_index``, only the events for that register count (what a verifier does per MR).
    """
    value = bytes(register_initial)
    for event in events:
        if mr_index is None or event.mr_index == mr_index:
            value = extend(value, event.digest)
    return value


def aael_events(cc_eventlog: bytes) -> list[Event]:
    """The AAEL events inside a whole ``cc_eventlog`` (spec-ID header, CCEL events, end marker).

    Every EV_EVENT_TAG event carrying the AAEL tag is parsed strictly (its SHA-384 digest must be
    that of its data); other events are skipped. For the broker: to replay a register use
    :func:`agent.attesters.eventlog.replay`, which also counts the firmware's events.
    """
    from ..attesters import eventlog  # here, not at the top: the attesters import this package

    found = []
    for ev in eventlog.walk(cc_eventlog).events:
        if ev.type != EV_EVENT_TAG or ev.data[:4] != _TAG.pack(AAEL_TAG, 0)[:4]:
            continue
        event = Event.from_tagged(ev.index, ev.data, f"at offset {ev.offset}")
        digests = dict(ev.digests)
        if digests.get(ALG_SHA384) != event.digest:
            raise EventFormatError(f"AAEL event at offset {ev.offset}: its SHA-384 digest is not that of "
                                   "its data")
        found.append(event)
    return found
