"""agent.measure: AAEL event bytes, Trustee's vectors, replay, the write-ahead protocol, registers.

RTMR3 is faked by :class:`FakeRtmr`: a regular file stands in for ``rtmr3:sha384`` and the
kernel's extend (a single 48-byte write makes ``SHA-384(old || data)``, anything else EINVAL)
is simulated in the file-operations object the register takes (``TdxRegister(io=...)``).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import logging
import os
import struct
from pathlib import Path

import pytest

from agent import measure
from agent.attesters import AttesterError, SystemAttester, TdxAttester, eventlog, tdx
from agent.measure import (
    Event,
    EventFormatError,
    MeasurementError,
    MeasurementLog,
    MeasurementUnavailable,
    SystemRegister,
    TdxRegister,
    parse_events,
    registers,
)
from tests.agent.test_attesters import REPORT_DATA_OFFSET, FakeKernel, vector
from tests.support import DATA

AAEL = DATA / "aael"
TRUSTEE_CCEL = AAEL / "CCEL_AAEL_alibabacloud"
TRUSTEE_JSON = AAEL / "CCEL_AAEL_alibabacloud_out.json"
# Trustee deps/eventlog CCEL_AAEL_alibabacloud_out.json, first AAEL event
VECTOR_B64 = "TEVBQSQAAABjb2NvLmNvbSBzb21lLW9wZXJhdGlvbiBzb21lLWNvbnRlbnQ="
VECTOR_SHA384 = ("2330183d89750c6a374ac9827d33a33636e7876733544584c8ccc88df0df87ea"
                 "da37e5d71d0773502234c2b5fbc7448e")
# guest-components attestation-agent eventlog/mod.rs test_event_digest (SHA-384 case)
GC_SHA384 = ("dad5f0e226318ffa9839b75a472c6aa7fdb5834949d0a0a22990cf04d5692440"
             "fb00f3aa0609db7e49cd8d793f670d02")
ZERO = bytes(48)


def sha384(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


class FakeRtmr(registers.RegisterIO):
    """The kernel's rtmr3:sha384 over a regular file: a 48-byte write extends, others fail EINVAL."""

    def __init__(self):
        self.writes: list[bytes] = []

    def write(self, path, data):
        if len(data) != 48:
            raise OSError(errno.EINVAL, "Invalid argument")
        self.writes.append(bytes(data))
        Path(path).write_bytes(sha384(Path(path).read_bytes() + data))


@pytest.fixture
def env(tmp_path):
    """Every path the measurement code touches, inside tmp_path; RTMR3 present (all zero)."""
    mdir = tmp_path / "measurements"
    mdir.mkdir()
    (mdir / "rtmr3:sha384").write_bytes(ZERO)
    return {"AAEL_PATH": str(tmp_path / "run" / "eventlog"), "TDX_MEASUREMENTS_DIR": str(mdir),
            "SYSTEM_MEASURE_REGISTER": str(tmp_path / "run" / "system_measure_register")}


@pytest.fixture
def rtmr(monkeypatch):
    fake = FakeRtmr()
    monkeypatch.setattr(registers, "RegisterIO", lambda: fake)
    return fake


def register(name: str, env) -> measure.Register:
    reg = measure.register_for(name, env)
    assert reg is not None
    return reg


def rtmr3(env) -> bytes:
    return Path(env["TDX_MEASUREMENTS_DIR"], "rtmr3:sha384").read_bytes()


# -- event bytes ------------------------------------------------------------------------------------
def test_event_bytes_field_by_field():
    ev = Event(4, "domain", "operation", "content")
    raw = ev.to_bytes()
    index, ev_type, count, alg = struct.unpack_from("<IIIH", raw, 0)
    assert (index, ev_type, count, alg) == (4, 6, 1, 0x000C)
    digest = raw[14:62]
    (size,) = struct.unpack_from("<I", raw, 62)
    tagged = raw[66:]
    assert size == len(tagged) == 8 + 24 and len(raw) == 66 + size
    assert tagged[:4] == b"LEAA" and struct.unpack_from("<II", tagged) == (0x4141454C, 24)
    assert tagged[8:] == b"domain operation content" == ev.text.encode()
    assert digest == sha384(tagged) == ev.digest and tagged == ev.tagged_event
    assert ev.digest.hex() == GC_SHA384  # guest-components' own vector
    assert parse_events(raw + raw) == [ev, ev]


def test_content_may_hold_spaces_and_json():
    ev = Event(1, "trustiflux.alibaba.com", "pai/load-model", '{"model-id": "m 1", "hash": "ab"}')
    assert parse_events(ev.to_bytes()) == [ev]
    assert Event.from_tagged(1, ev.tagged_event).content == ev.content
    assert Event(1, "d", "o", "").text == "d o "  # empty content is still three fields


@pytest.mark.parametrize("domain,operation,content,what", [
    ("dom ain", "op", "c", "domain"),
    ("dom", "op eration", "c", "operation"),
    ("", "op", "c", "empty"),
    ("dom", "", "c", "empty"),
    ("dom\t", "op", "c", "control"),
    ("dom", "op", "line1\nline2", "newline"),
    ("dom", "op", "a\rb", "carriage return"),
    ("dom", "op", "a\0b", "NUL"),
    ("dom", "op", "model-\udcff.bin", "UTF-8"),  # os.fsdecode of a non-UTF-8 file name
    ("d\udc80", "op", "c", "UTF-8"),
    ("dom", "op", b"bytes", "must be a str"),
])
def test_invalid_events_are_refused(domain, operation, content, what):
    with pytest.raises(EventFormatError, match=what):
        Event(4, domain, operation, content)
    with pytest.raises(EventFormatError, match=what):  # before any register is looked at
        measure.measure(domain, operation, content, "sample", {})


def test_parse_refuses_what_is_not_an_aael_record():
    good = Event(4, "d", "o", "c").to_bytes()
    with pytest.raises(EventFormatError, match="not UTF-8"):
        Event.from_tagged(4, struct.pack("<II", 0x4141454C, 6) + b"d o \xff\xfe")
    bad_text = struct.pack("<II", 0x4141454C, 5) + b"d o \xff"
    record = (struct.pack("<IIIH", 4, 6, 1, 12) + sha384(bad_text) + struct.pack("<I", len(bad_text))
              + bad_text)
    with pytest.raises(EventFormatError, match="not UTF-8"):
        parse_events(record)
    with pytest.raises(EventFormatError, match="digest"):
        parse_events(good[:20] + bytes([good[20] ^ 1]) + good[21:])
    with pytest.raises(EventFormatError, match="truncated"):
        parse_events(good + good[:30])
    with pytest.raises(EventFormatError, match="not an AAEL event"):
        parse_events(struct.pack("<I", 4) + struct.pack("<I", 5) + good[8:])
    other_tag = struct.pack("<II", 0x8F3B22ED, 3) + b"d o"
    with pytest.raises(EventFormatError, match="tag"):
        Event.from_tagged(4, other_tag)
    with pytest.raises(EventFormatError, match="not '<domain> <operation> <content>'"):
        Event.from_tagged(4, struct.pack("<II", 0x4141454C, 5) + b"d_o_c")


# -- Trustee's vectors ------------------------------------------------------------------------------
def trustee_entries() -> list[dict]:
    return json.loads(TRUSTEE_JSON.read_text())["uefi_event_logs"]


def test_trustee_aael_vector():
    tagged = base64.b64decode(VECTOR_B64)
    ev = Event(4, "coco.com", "some-operation", "some-content")
    assert ev.tagged_event == tagged and ev.digest.hex() == VECTOR_SHA384
    assert Event.from_tagged(4, tagged) == ev


def test_our_events_match_trustees_parser_output():
    ccel = TRUSTEE_CCEL.read_bytes()
    aael = [e for e in trustee_entries() if e["details"].get("unicode_name") == "AAEL"]
    assert len(aael) == 2
    for entry in aael:
        data = entry["details"]["data"]
        content = data["content"] if isinstance(data["content"], str) else entry["details"]["string"].split(
            " ", 2)[2]
        ev = Event(entry["index"], data["domain"], data["operation"], content)
        assert entry["type_name"] == "EV_EVENT_TAG" and entry["index"] == 4
        assert base64.b64encode(ev.tagged_event).decode() == entry["event"]
        assert entry["digests"] == [{"alg": "SHA-384", "digest": ev.digest.hex()}]
        assert ev.text == entry["details"]["string"]
        if not isinstance(data["content"], str):  # Trustee turned it into JSON; so would the policy
            assert json.loads(ev.content) == data["content"]
        assert ccel.count(ev.to_bytes()) == 1  # byte for byte the record in the CCEL
    assert ccel.endswith(aael_bytes(aael) + b"\xff" * 8)
    assert measure.aael_events(ccel)[0].digest.hex() == VECTOR_SHA384


def aael_bytes(entries) -> bytes:
    return b"".join(Event.from_tagged(e["index"], base64.b64decode(e["event"])).to_bytes() for e in entries)


def test_replay_matches_trustees_digests():
    """Every register replayed from our walk of the CCEL equals the replay of Trustee's parsed digests."""
    walked = eventlog.walk(TRUSTEE_CCEL.read_bytes())
    entries = trustee_entries()
    assert len(walked.events) == len(entries)
    for index in (1, 2, 3, 4):
        expected = ZERO
        for entry in entries:
            if entry["index"] == index:
                for d in entry["digests"]:
                    if d["alg"] == "SHA-384":
                        expected = sha384(expected + bytes.fromhex(d["digest"]))
        assert eventlog.replay(walked.events, index) == expected
    events = measure.aael_events(TRUSTEE_CCEL.read_bytes())
    assert measure.replay(events) == eventlog.replay(walked.events, 4)  # RTMR3 holds only the AAEL


# -- replay and the log --------------------------------------------------------------------------------
def test_measure_system_and_replay(env):
    first = measure.measure("d", "op", "one", "system", env)
    second = measure.measure("d", "op", "two words", "system", env)
    mlog = MeasurementLog.from_environ(env)
    assert mlog.events() == [first, second] and first.mr_index == 1
    assert Path(env["AAEL_PATH"]).read_bytes() == first.to_bytes() + second.to_bytes()
    value = sha384(sha384(ZERO + first.digest) + second.digest)
    assert mlog.replay() == value == SystemRegister(env["SYSTEM_MEASURE_REGISTER"]).read()
    assert Path(env["SYSTEM_MEASURE_REGISTER"]).read_text() == value.hex()  # hex text, no newline
    start = bytes(range(48))
    assert mlog.replay(start) == sha384(sha384(start + first.digest) + second.digest)
    assert sorted(os.listdir(Path(env["AAEL_PATH"]).parent)) == [
        "eventlog", "eventlog.lock", "system_measure_register"]  # no pending or temporary file left


def test_system_register_file(tmp_path):
    reg = SystemRegister(str(tmp_path / "reg"))
    assert reg.available() and "software register" in reg.available().reason
    assert reg.read() == ZERO  # a missing file is the initial register
    reg.extend(b"\x01" * 48)
    assert reg.read() == sha384(ZERO + b"\x01" * 48)
    (tmp_path / "reg").write_text("  " + "ab" * 48 + "\n")  # surrounding whitespace tolerated
    assert reg.read() == b"\xab" * 48
    for junk in ("ab" * 47, "zz" * 48, ""):
        (tmp_path / "reg").write_text(junk)
        with pytest.raises(MeasurementError, match="96 hex digits"):
            reg.read()
    with pytest.raises(MeasurementError, match="48-byte"):
        reg.extend(b"\x01" * 32)


# -- tdx: RTMR3 -----------------------------------------------------------------------------------
def test_tdx_register_through_the_fake_kernel(env, rtmr):
    reg = register("tdx", env)
    assert isinstance(reg, TdxRegister) and reg.mr_index == 4 and reg.available()
    ev = measure.measure("d", "op", "c", "tdx", env, required=True)
    assert ev.mr_index == 4 and rtmr.writes == [ev.digest]
    assert rtmr3(env) == sha384(ZERO + ev.digest) == MeasurementLog.from_environ(env).replay()
    assert struct.unpack_from("<I", Path(env["AAEL_PATH"]).read_bytes())[0] == 4
    with pytest.raises(MeasurementError, match="48-byte"):
        reg.extend(b"short")


def test_tdx_kernel_refusal_is_explained(env, monkeypatch):
    class Refusing(registers.RegisterIO):
        def write(self, path, data):
            raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(registers, "RegisterIO", Refusing)
    with pytest.raises(MeasurementError, match="needs root"):
        measure.measure("d", "op", "c", "tdx", env)
    assert MeasurementLog.from_environ(env, register("tdx", env)).recover() == "dropped"  # not extended
    assert not Path(env["AAEL_PATH"]).read_bytes()


def test_tdx_without_the_kernel_interface(env, tmp_path, caplog):
    env["TDX_MEASUREMENTS_DIR"] = str(tmp_path / "nowhere")
    avail = register("tdx", env).available()
    assert not avail and "Linux >= 6.16" in avail.reason and str(tmp_path / "nowhere") in avail.reason
    with pytest.raises(MeasurementUnavailable, match=r"nowhere does not exist.*required"):
        measure.measure("d", "op", "c", "tdx", env, required=True)
    with caplog.at_level(logging.WARNING, logger="agent"):
        ev = measure.measure("d", "op", "c", "tdx", env)
    assert "NOT measured" in caplog.text and ev.mr_index == 4
    assert not Path(env["AAEL_PATH"]).exists()  # an unmeasured event is never logged
    os.makedirs(tmp_path / "nofile")
    env["TDX_MEASUREMENTS_DIR"] = str(tmp_path / "nofile")
    assert "no rtmr3:sha384" in register("tdx", env).available().reason


def test_sample_warns_and_measures_nothing(env, caplog):
    assert measure.register_for("sample", env) is None
    with caplog.at_level(logging.WARNING, logger="agent"):
        ev = measure.measure("d", "op", "c", "sample", env)
    assert "NOT measured" in caplog.text and "'sample' has no measurement register" in caplog.text
    assert ev == Event(4, "d", "op", "c") and not Path(env["AAEL_PATH"]).exists()
    with pytest.raises(MeasurementUnavailable, match="sample"):
        measure.measure("d", "op", "c", "sample", env, required=True)
    with pytest.raises(MeasurementError, match="no measurement register is known for attester 'auto'"):
        measure.measure("d", "op", "c", "auto", env)


# -- write-ahead: a crash between each step ----------------------------------------------------------
class Crash(Exception):
    pass


def crash_at(step: str):
    def hook(name: str) -> None:
        if name == step:
            raise Crash(step)
    return hook


@pytest.mark.parametrize("attester", ["system", "tdx"])
@pytest.mark.parametrize("step,outcome,kept", [
    ("pending-tmp", "clean", False),  # write-ahead record not yet renamed: register untouched
    ("pending", "dropped", False),  # record durable, register untouched
    ("extended", "confirmed", True),  # register extended, log not yet written
    ("appended", "confirmed", True),  # log written, record not yet removed
])
def test_crash_between_steps_recovers(env, rtmr, attester, step, outcome, kept):
    reg = register(attester, env)
    before = MeasurementLog(env["AAEL_PATH"], reg)
    before.append(Event(reg.mr_index, "d", "op", "before"))
    ev = Event(reg.mr_index, "d", "op", "crashing")
    with pytest.raises(Crash):
        MeasurementLog(env["AAEL_PATH"], reg, hook=crash_at(step)).append(ev)
    mlog = MeasurementLog(env["AAEL_PATH"], register(attester, env))
    assert mlog.recover() == outcome
    assert [e.content for e in mlog.events()] == (["before", "crashing"] if kept else ["before"])
    assert mlog.replay() == reg.read()
    assert not Path(mlog.pending_path).exists() and not Path(mlog.pending_path + ".tmp").exists()
    assert mlog.recover() == "clean"
    measure.measure("d", "op", "after", attester, env)  # and measuring goes on consistently
    assert mlog.replay() == reg.read() and mlog.events()[-1].content == "after"


def test_torn_log_append_is_rewritten(env):
    reg = register("system", env)
    ev = Event(1, "d", "op", "torn")
    with pytest.raises(Crash):
        MeasurementLog(env["AAEL_PATH"], reg, hook=crash_at("extended")).append(ev)
    Path(env["AAEL_PATH"]).write_bytes(ev.to_bytes()[:40])  # half a record reached the disk
    assert measure.measure("d", "op", "next", "system", env).content == "next"  # recovers first
    mlog = MeasurementLog.from_environ(env)
    assert [e.content for e in mlog.events()] == ["torn", "next"] and mlog.replay() == reg.read()


def test_recovery_refuses_to_guess(env):
    reg = register("system", env)
    with pytest.raises(Crash):
        MeasurementLog(env["AAEL_PATH"], reg, hook=crash_at("pending")).append(Event(1, "d", "op", "x"))
    mlog = MeasurementLog(env["AAEL_PATH"], reg)
    reg.extend(b"\x07" * 48)  # another program moved the register
    with pytest.raises(MeasurementError, match="neither the value before"):
        mlog.recover()
    pending = Path(mlog.pending_path)
    assert pending.exists()  # nothing changed
    data = pending.read_bytes()
    pending.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(MeasurementError, match="damaged"):
        mlog.recover()
    with pytest.raises(MeasurementError, match="damaged"):
        measure.measure("d", "op", "y", "system", env)  # measuring stops too


def test_another_writer_during_the_extend_is_an_error(env, rtmr):
    reg = register("tdx", env)

    def interloper(step: str) -> None:
        if step == "pending":
            rtmr.write(reg.path, b"\x05" * 48)

    with pytest.raises(MeasurementError, match="another program extends the same register"):
        MeasurementLog(env["AAEL_PATH"], reg, hook=interloper).append(Event(4, "d", "op", "x"))
    assert Path(env["AAEL_PATH"] + ".pending").exists()


def test_event_for_another_register_is_refused(env):
    mlog = MeasurementLog(env["AAEL_PATH"], register("system", env))
    with pytest.raises(MeasurementError, match="MR index 4"):
        mlog.append(Event(4, "d", "op", "c"))
    with pytest.raises(MeasurementError, match="needs the register"):
        MeasurementLog(env["AAEL_PATH"]).append(Event(1, "d", "op", "c"))


# -- evidence --------------------------------------------------------------------------------------
def spec_parse(data: bytes) -> tuple[dict[int, int], list[tuple[int, int, bytes, bytes]]]:
    """A TCG2 parser written from the spec: ({alg: size}, [(index, type, sha384 digest, event)])."""
    assert struct.unpack_from("<I", data, 4)[0] == 3  # EV_NO_ACTION header, SHA-1 format
    (hsize,) = struct.unpack_from("<I", data, 28)
    spec = data[32:32 + hsize]
    (count,) = struct.unpack_from("<I", spec, 24)
    sizes = dict(struct.unpack_from("<HH", spec, 28 + 4 * i) for i in range(count))
    assert 28 + 4 * count + 1 + spec[28 + 4 * count] == hsize  # vendorInfoSize closes the event
    off, events = 32 + hsize, []
    while data[off:off + 8] != b"\xff" * 8:
        index, ev_type, n = struct.unpack_from("<III", data, off)
        off += 12
        digests = {}
        for _ in range(n):
            (alg,) = struct.unpack_from("<H", data, off)
            digests[alg] = data[off + 2:off + 2 + sizes[alg]]
            off += 2 + sizes[alg]
        (size,) = struct.unpack_from("<I", data, off)
        events.append((index, ev_type, digests[0x000C], data[off + 4:off + 4 + size]))
        off += 4 + size
    assert off + 8 == len(data)
    return sizes, events


def test_system_evidence_replays_to_rtmr_register(env):
    for content in ('{"model-id": "m", "hash": "00"}', "second event"):
        measure.measure("trustiflux.alibaba.com", "pai/load-model", content, "system", env)
    ev = SystemAttester(env).evidence(sha384(b"rd"), "0.4.0")
    sizes, events = spec_parse(base64.b64decode(ev["cc_eventlog"], validate=True))
    assert sizes[0x000C] == 48
    value = ZERO
    for index, ev_type, digest, data in events:
        assert (index, ev_type) == (1, 6) and digest == sha384(data) and data[:4] == b"LEAA"
        value = sha384(value + digest)
    assert value.hex() == ev["rtmr_register"] and len(events) == 2
    assert events[1][3][8:] == b"trustiflux.alibaba.com pai/load-model second event"
    assert ev["measurements"] == "[]" and ev["mr_register"] == ""  # older verifiers' fields kept


def test_system_evidence_refuses_a_log_that_does_not_replay(env):
    measure.measure("d", "op", "c", "system", env)
    Path(env["SYSTEM_MEASURE_REGISTER"]).write_text("00" * 48)
    with pytest.raises(AttesterError, match="replays to"):
        SystemAttester(env).evidence(sha384(b"rd"), "0.4.0")
    Path(env["SYSTEM_MEASURE_REGISTER"]).unlink()
    Path(env["AAEL_PATH"]).write_bytes(Event(4, "d", "op", "c").to_bytes())
    with pytest.raises(AttesterError, match="another attester"):
        SystemAttester(env).evidence(sha384(b"rd"), "0.4.0")


def test_system_evidence_settles_a_crash_first(env):
    reg = register("system", env)
    with pytest.raises(Crash):
        MeasurementLog(env["AAEL_PATH"], reg, hook=crash_at("extended")).append(Event(1, "d", "op", "x"))
    ev = SystemAttester(env).evidence(sha384(b"rd"), "0.4.0")
    assert [e[3][8:] for e in spec_parse(base64.b64decode(ev["cc_eventlog"]))[1]] == [b"d op x"]
    assert ev["rtmr_register"] == reg.read().hex()


def with_rtmr3(quote: bytes, value: bytes) -> bytes:
    off = REPORT_DATA_OFFSET[struct.unpack_from("<H", quote, 0)[0]] - 48  # RTMR3 precedes REPORTDATA
    return quote[:off] + value + quote[off + 48:]


def test_tdx_evidence_sends_what_was_measured(env, rtmr, tmp_path, monkeypatch, caplog):
    ev1 = measure.measure("d", "op", "model", "tdx", env)
    root = tmp_path / "tsm"
    root.mkdir()
    monkeypatch.setattr(tdx, "_fs", FakeKernel(with_rtmr3(vector("trustee__tdx_quote_5.dat"), rtmr3(env))))
    att = TdxAttester(tsm_root=str(root), environ=env, ccel_path=str(tmp_path / "no-ccel"), retry_delay=0)
    with caplog.at_level(logging.WARNING, logger="agent"):
        out = att.evidence(sha384(b"rd"), "0.4.0")
    assert "RTMR3" not in caplog.text
    data = base64.b64decode(out["cc_eventlog"])
    assert data == eventlog.AAEL_SPEC_ID_HEADER + ev1.to_bytes() + b"\xff" * 8
    assert measure.aael_events(data) == [ev1]
    measure.measure("d", "op", "unsent", "tdx", env)  # RTMR3 moves on, the quote does not
    with caplog.at_level(logging.WARNING, logger="agent"):
        stale = with_rtmr3(vector("trustee__tdx_quote_5.dat"), ZERO)
        assert att.check_rtmr3(stale, out["cc_eventlog"]) is False
    assert "RTMR3 in the quote is 0000" in caplog.text


def test_tdx_evidence_refuses_a_foreign_log(env, tmp_path):
    Path(env["AAEL_PATH"]).parent.mkdir(parents=True)
    Path(env["AAEL_PATH"]).write_text("INIT sha384/" + "00" * 48 + "\n")  # the legacy text AAEL
    att = TdxAttester(tsm_root=str(tmp_path), environ=env, ccel_path=str(tmp_path / "no-ccel"))
    with pytest.raises(AttesterError, match="another program's log"):
        att.cc_eventlog("0.4.0")
