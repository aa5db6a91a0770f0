"""Attester plug-ins: configfs-tsm against a fake kernel, select(), system env filtering, CCEL forms."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import logging
import os
import shutil
import struct
from pathlib import Path

import pytest

from agent.attesters import (
    CHOICES,
    AttesterError,
    SampleAttester,
    SystemAttester,
    TdxAttester,
    eventlog,
    select,
    system,
    tdx,
)
from agent.tdx import parse_quote
from tests.support import DATA

VECTORS = DATA / "tdx-vectors"
QUOTE_V4 = "go-tdx-guest__tdx_prod_quote_SPR_E4.dat"  # v4, TD attributes 0x40000000
QUOTE_V5 = "trustee__tdx_quote_5.dat"  # v5 type 3, 0x10000000
QUOTE_DEBUG = "trustee__tdx_quote_4.dat"  # v4, DEBUG bit set
REPORT_DATA_OFFSET = {4: 568, 5: 574}  # tdx-quote.md §1.3 (abs v4 / v5)

DIGEST = hashlib.sha384(b"runtime data").digest()


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def with_report_data(quote: bytes, report_data: bytes) -> bytes:
    assert len(report_data) == 64
    off = REPORT_DATA_OFFSET[struct.unpack_from("<H", quote, 0)[0]]
    return quote[:off] + report_data + quote[off + 64:]


class FakeKernel(tdx.FileOps):
    """configfs-tsm simulated in a tmp dir: mkdir populates an entry, an inblob write makes the quote."""

    def __init__(self, quote: bytes, provider: str = "tdx_guest", races: int = 0,
                 outblob: bytes | None = None, mkdir_errno: int | None = None):
        self.quote = quote
        self.provider = provider
        self.races = races  # how many entries see a concurrent writer bump generation once more
        self.outblob = outblob  # a fixed outblob instead of the patched quote
        self.mkdir_errno = mkdir_errno
        self.made: list[str] = []
        self.removed: list[str] = []
        self.inblobs: list[bytes] = []

    def mkdir(self, path):
        if self.mkdir_errno is not None:
            raise OSError(self.mkdir_errno, os.strerror(self.mkdir_errno))
        os.mkdir(path)  # FileNotFoundError when the tsm root is missing, like the real thing
        self.made.append(path)
        Path(path, "provider").write_text(self.provider + "\n")
        Path(path, "generation").write_text("0\n")

    def rmdir(self, path):
        shutil.rmtree(path)  # configfs rmdir removes the attribute files with the entry
        self.removed.append(path)

    def write(self, path, data):
        entry, attr = os.path.split(path)
        assert attr == "inblob"
        if len(data) != 64:
            raise OSError(errno.EINVAL, "tdx_guest wants 64 bytes")
        self.inblobs.append(bytes(data))
        gen = int(Path(entry, "generation").read_text()) + 1
        if self.races:
            self.races -= 1
            gen += 1
        Path(entry, "generation").write_text(f"{gen}\n")
        out = self.outblob if self.outblob is not None else with_report_data(self.quote, bytes(data))
        Path(entry, "outblob").write_bytes(out)


@pytest.fixture
def tsm_root(tmp_path):
    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True)
    return root


@pytest.fixture
def env(tmp_path):
    """An environment whose AAEL_PATH points nowhere (the host's own AAEL must not leak in)."""
    return {"AAEL_PATH": str(tmp_path / "no-aael")}


def kernel(monkeypatch, **kw) -> FakeKernel:
    fake = FakeKernel(kw.pop("quote", None) or vector(QUOTE_V5), **kw)
    monkeypatch.setattr(tdx, "_fs", fake)
    return fake


def attester(tsm_root, tmp_path, env, **kw) -> TdxAttester:
    kw.setdefault("ccel_path", str(tmp_path / "no-ccel"))
    return TdxAttester(tsm_root=str(tsm_root), environ=env, retry_delay=0, **kw)


# -- tdx: configfs-tsm flow ------------------------------------------------------------------------
@pytest.mark.parametrize("name", [QUOTE_V4, QUOTE_V5])
def test_tdx_quote_through_configfs(monkeypatch, tsm_root, tmp_path, env, name):
    fake = kernel(monkeypatch, quote=vector(name))
    ev = attester(tsm_root, tmp_path, env).evidence(DIGEST, "0.4.0")
    assert set(ev) == {"quote", "cc_eventlog"}
    quote = base64.b64decode(ev["quote"], validate=True)
    assert parse_quote(quote).body.report_data == DIGEST + bytes(16)
    assert fake.inblobs == [DIGEST + bytes(16)]
    assert ev["cc_eventlog"] is None  # no CCEL, no AAEL
    assert len(fake.made) == 1 and fake.removed == fake.made
    assert list(tsm_root.iterdir()) == []


def test_tdx_generation_race_retries_with_a_fresh_entry(monkeypatch, tsm_root, tmp_path, env, caplog):
    fake = kernel(monkeypatch, races=1)
    with caplog.at_level(logging.WARNING, logger="agent"):
        quote = attester(tsm_root, tmp_path, env).quote(DIGEST)
    assert parse_quote(quote).body.report_data == DIGEST + bytes(16)
    assert len(fake.made) == 2 and len(set(fake.made)) == 2  # a new entry name for the retry
    assert fake.removed == fake.made and list(tsm_root.iterdir()) == []
    assert any("generation went from 0 to 2" in r.getMessage() for r in caplog.records)


def test_tdx_generation_always_racing_fails(monkeypatch, tsm_root, tmp_path, env):
    fake = kernel(monkeypatch, races=100)
    with pytest.raises(AttesterError, match="another process is generating quotes") as e:
        attester(tsm_root, tmp_path, env).quote(DIGEST)
    assert f"after {tdx.TSM_ATTEMPTS} attempts" in str(e.value)
    assert len(fake.made) == tdx.TSM_ATTEMPTS and fake.removed == fake.made
    assert list(tsm_root.iterdir()) == []


def test_tdx_wrong_provider(monkeypatch, tsm_root, tmp_path, env):
    fake = kernel(monkeypatch, provider="sev_guest")
    with pytest.raises(AttesterError, match="'sev_guest', not 'tdx_guest'"):
        attester(tsm_root, tmp_path, env).quote(DIGEST)
    assert fake.inblobs == []  # refused before any request
    assert len(fake.made) == 1 and fake.removed == fake.made


def test_tdx_missing_configfs_names_the_path(tmp_path, env):
    missing = tmp_path / "sys" / "kernel" / "config" / "tsm" / "report"
    att = TdxAttester(tsm_root=str(missing), environ=env, device=str(tmp_path / "no-dev"), retry_delay=0)
    with pytest.raises(AttesterError) as e:
        att.quote(DIGEST)
    assert str(missing) in str(e.value) and "/sys/kernel/config" in str(e.value)
    assert att.detect() is False


def test_tdx_missing_configfs_on_a_tdx_guest_says_so(tmp_path, env):
    dev = tmp_path / "tdx_guest"
    dev.touch()
    att = TdxAttester(tsm_root=str(tmp_path / "nope"), environ=env, device=str(dev))
    ok, detail = att.probe()
    assert not ok and str(dev) in detail and "lacks configfs-tsm" in detail


def test_tdx_no_provider_registered(monkeypatch, tsm_root, tmp_path, env):
    kernel(monkeypatch, mkdir_errno=errno.ENXIO)
    with pytest.raises(AttesterError, match="no TSM provider is registered"):
        attester(tsm_root, tmp_path, env).quote(DIGEST)


@pytest.mark.parametrize("outblob", [b"", b"\0" * 100])
def test_tdx_empty_outblob_is_a_host_failure(monkeypatch, tsm_root, tmp_path, env, outblob):
    fake = kernel(monkeypatch, outblob=outblob)
    with pytest.raises(AttesterError, match=r"QGS"):
        attester(tsm_root, tmp_path, env).quote(DIGEST)
    assert fake.removed == fake.made and len(fake.made) == 1


def test_tdx_self_check_refuses_foreign_report_data(monkeypatch, tsm_root, tmp_path, env):
    stale = with_report_data(vector(QUOTE_V5), b"\x01" * 64)
    kernel(monkeypatch, outblob=stale)
    with pytest.raises(AttesterError, match="self-check.*REPORTDATA"):
        attester(tsm_root, tmp_path, env).quote(DIGEST)


def test_tdx_self_check_refuses_debug_td_unless_allowed(monkeypatch, tsm_root, tmp_path, env):
    kernel(monkeypatch, quote=vector(QUOTE_DEBUG))
    with pytest.raises(AttesterError, match="debug"):
        attester(tsm_root, tmp_path, env).quote(DIGEST)
    quote = attester(tsm_root, tmp_path, env, allow_debug=True).quote(DIGEST)
    assert parse_quote(quote).body.td_attributes.debug
    assert list(tsm_root.iterdir()) == []


def test_tdx_report_data_sizes(monkeypatch, tsm_root, tmp_path, env):
    fake = kernel(monkeypatch)
    att = attester(tsm_root, tmp_path, env)
    full = bytes(range(64))  # a SHA-512 digest fills REPORTDATA exactly
    att.quote(full)
    assert fake.inblobs[-1] == full
    with pytest.raises(AttesterError, match="65 bytes"):
        att.quote(bytes(65))
    assert len(fake.made) == 1  # refused before touching configfs


def test_file_ops_read_write_regular_files(tmp_path):
    ops = tdx.FileOps()
    f = tmp_path / "inblob"
    f.touch()
    ops.write(str(f), b"x" * 64)
    assert ops.read(str(f)) == b"x" * 64
    big = tmp_path / "outblob"
    big.write_bytes(os.urandom(200_000))  # larger than any single read
    assert ops.read(str(big)) == big.read_bytes()


# -- select ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "cls"), [("tdx", TdxAttester), ("TDX", TdxAttester),
                                           (" system ", SystemAttester), ("Sample", SampleAttester)])
def test_select_explicit(tmp_path, name, cls):
    att = select(name, {}, tsm_root=str(tmp_path / "none"))
    assert isinstance(att, cls)
    assert att.name == att.tee == name.strip().lower()


def test_select_flag_overrides_env(tmp_path):
    assert isinstance(select("system", {"ATTESTER": "sample"}), SystemAttester)
    assert isinstance(select(None, {"ATTESTER": "system"}), SystemAttester)


def test_select_invalid_lists_choices():
    with pytest.raises(AttesterError) as e:
        select("sgx", {})
    assert all(c in str(e.value) for c in CHOICES) and "'sgx'" in str(e.value)
    with pytest.raises(AttesterError, match="from ATTESTER"):
        select(None, {"ATTESTER": "none"})


def test_select_sample_from_env_alone_warns_loudly(caplog):
    log = logging.getLogger("test.attesters")
    with caplog.at_level(logging.WARNING, logger="test.attesters"):
        att = select(None, {"ATTESTER": "sample"}, log=log)
    assert isinstance(att, SampleAttester)
    lines = [r.getMessage() for r in caplog.records
             if r.levelno == logging.WARNING and r.name == "test.attesters"]
    assert len(lines) >= 3
    text = " ".join(lines)
    assert "NO hardware signature" in text and "NEVER use it in production" in text


def test_select_sample_warns_on_default_agent_logger(caplog):
    with caplog.at_level(logging.WARNING, logger="agent"):
        select("sample", {})
    assert any(r.name == "agent" and "NOT ATTESTATION" in r.getMessage() for r in caplog.records)


def test_select_auto_picks_tdx_from_configfs(monkeypatch, tsm_root):
    fake = kernel(monkeypatch)
    for name, environ in ((None, {}), ("auto", {}), (None, {"ATTESTER": "AUTO"}), ("", {"ATTESTER": ""})):
        att = select(name, environ, tsm_root=str(tsm_root), allow_debug=True)
        assert isinstance(att, TdxAttester) and att.allow_debug and att.tsm_root == str(tsm_root)
    assert fake.made and fake.removed == fake.made  # probe entries are removed too
    assert fake.inblobs == []  # detection requests no quote


def test_select_auto_never_falls_back(tmp_path):
    missing = tmp_path / "sys" / "kernel" / "config" / "tsm" / "report"
    for environ in ({}, {"ATTESTER": "auto", "SYSTEM_ATTESTATION": "true"}):
        with pytest.raises(AttesterError) as e:
            select(None, environ, tsm_root=str(missing))
        msg = str(e.value)
        assert str(missing) in msg and "'provider'" in msg and "tdx_guest" in msg
        assert "mount -t configfs none /sys/kernel/config" in msg and msg.count("mount -t configfs") == 1
        assert "'sample'" in msg and "ATTESTER" in msg


def test_select_auto_refuses_other_provider(monkeypatch, tsm_root):
    fake = kernel(monkeypatch, provider="sev_guest")
    with pytest.raises(AttesterError, match="'sev_guest'"):
        select("auto", {}, tsm_root=str(tsm_root))
    assert fake.removed == fake.made and list(tsm_root.iterdir()) == []


# -- sample ---------------------------------------------------------------------------------------
def test_sample_evidence_matches_the_worked_example():
    digest = bytes.fromhex("9edc01b09e997f6578d6bd8f7fc2b28dfaaf4e5417793667b7ece025d50c7cf5"
                           "b9b0f7d2bbbcebe25d2f53bd33807ce3")  # kbs-protocol.md §3.3
    ev = SampleAttester().evidence(digest, "0.4.0")
    want = "ntwBsJ6Zf2V41r2Pf8KyjfqvTlQXeTZnt+zgJdUMfPW5sPfSu7zr4l0vU70zgHzj"
    assert ev == {"svn": "1", "report_data": want}
    assert SampleAttester().detect() is True
    with pytest.raises(AttesterError, match="dialect"):
        SampleAttester().evidence(digest, "0.3.0")


# -- system ---------------------------------------------------------------------------------------
SECRETS = {
    "TRUSTEE_API_KEY": "tk-123",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
    "HF_TOKEN": "hf_abcdef",
    "db_password": "hunter2",
    "MYSQL_PASSWD": "pw2",
    "GPG_PASSPHRASE": "phrase",
    "GOOGLE_APPLICATION_CREDENTIALS": "/secrets/sa.json",
    "SSH_PRIVATE": "ssh-private-value",
    "AA_INSTANCE_INFO": '{"eas_instance_id":"i-1"}',
    "HTTP_AUTHORIZATION": "Bearer abc",
    "Model_Key": "model-key-value",
    "DB_PWD": "pwd-value",
    "INNOCENT_NAME": "-----BEGIN EC PRIVATE KEY-----\nMHc...",
    "DATABASE_URL": "postgres://user:s3cr3t@db:5432/x",
}
PLAIN = {"eas-test": "123", "PATH": "/usr/bin", "PWD": "/srv", "OLDPWD": "/", "HOME": "/root",
         "TRUSTEE_URL": "http://alb.example/trustee", "EAS_MODEL_ID": "m-1"}


def test_system_environment_drops_secrets_keeps_eas_vars(caplog):
    att = SystemAttester({**SECRETS, **PLAIN}, log=logging.getLogger("test.system"))
    with caplog.at_level(logging.INFO, logger="test.system"):
        ev = att.evidence(DIGEST, "0.1.0")
    assert ev["environment"] == PLAIN
    dump = json.dumps(ev)
    for name, value in SECRETS.items():
        assert name not in ev["environment"] and value not in dump
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "TRUSTEE_API_KEY" in logged and "tk-123" not in logged and "hunter2" not in logged


def test_system_filter_constants():
    for part in ("KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "PRIVATE"):
        assert part in system.SECRET_NAME_PARTS
        assert system.is_secret_name(f"x_{part.lower()}_y")
    assert "TRUSTEE_API_KEY" in system.SECRET_NAMES and system.is_secret_name("aa_instance_info")
    assert not system.is_secret_name("eas-test") and not system.is_secret_name("PWD")
    kept, dropped = system.filter_environment({"B_TOKEN": "1", "A": "2"})
    assert kept == {"A": "2"} and dropped == ["B_TOKEN"]


def test_system_evidence_fields(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cpuinfo").write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n"
                                  "model name\t: Intel(R) Xeon(R) Platinum 8475B\nflags\t\t: fpu tdx_guest\n")
    (proc / "meminfo").write_text("MemTotal:       16384000 kB\nMemFree:        1 kB\n")
    env = {"eas-test": "123", "AAEL_PATH": str(tmp_path / "aael"),
           "SYSTEM_MEASURE_REGISTER": str(tmp_path / "register")}  # nothing measured yet
    ev = SystemAttester(env, proc_root=str(proc)).evidence(DIGEST, "0.4.0")
    assert set(ev) == {"system_report", "measurements", "mr_register", "rtmr_register", "cc_eventlog",
                       "environment", "report_data"}
    assert ev["measurements"] == "[]" and ev["mr_register"] == ""
    assert ev["rtmr_register"] == "00" * 48  # (tests/agent/test_measure.py: with events)
    assert base64.b64decode(ev["cc_eventlog"]) == eventlog.AAEL_SPEC_ID_HEADER + b"\xff" * 8
    assert base64.b64decode(ev["report_data"], validate=True) == DIGEST
    report = json.loads(ev["system_report"])
    hw, sw = report["hardware"], report["software"]
    assert hw["cpu_model"] == "Intel(R) Xeon(R) Platinum 8475B" and hw["mem_total_kb"] == 16384000
    assert hw["tdx_guest"] is True and hw["nproc"] >= 1
    assert sw["uname"].startswith(os.uname().sysname) and os.uname().release in sw["uname"]
    assert SystemAttester({}).detect() is True


# -- CCEL forms -----------------------------------------------------------------------------------
SHA384 = 0x000C


def spec_id_header(algorithms=((SHA384, 48),)) -> bytes:
    data = eventlog.SPEC_ID_SIGNATURE + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(algorithms))
    data += b"".join(struct.pack("<HH", a, s) for a, s in algorithms) + b"\0"
    return struct.pack("<II", 1, 3) + bytes(20) + struct.pack("<I", len(data)) + data


def event(index: int, ev_type: int, payload: bytes, alg: int = SHA384, size: int = 48) -> bytes:
    digest = hashlib.sha384(payload).digest()[:size].ljust(size, b"\0")
    return (struct.pack("<IIIH", index, ev_type, 1, alg) + digest + struct.pack("<I", len(payload)) + payload)


EV1 = event(1, 0x80000001, b"EFI variable payload")
EV2 = event(2, 0xD, b"grub cmdline: linux /vmlinuz ro")
LOG = spec_id_header() + EV1 + EV2
AAEL = event(4, 0x6, struct.pack("<II", 0x4141454C, 24) + b"domain operation content")


@pytest.fixture
def ccel(tmp_path):
    path = tmp_path / "CCEL"
    path.write_bytes(LOG + bytes(4096))  # td-shim style zero filler up to LAML
    return path


def cc_eventlog(tsm_root, tmp_path, env, ccel_path, dialect, **kw) -> bytes | None:
    value = attester(tsm_root, tmp_path, env, ccel_path=str(ccel_path), **kw).cc_eventlog(dialect)
    return None if value is None else base64.b64decode(value, validate=True)


@pytest.mark.parametrize("dialect", ["0.1.0", "0.1.1", "0.2.0"])
def test_ccel_raw_for_old_dialects(tsm_root, tmp_path, env, ccel, dialect):
    (tmp_path / "aael").write_bytes(AAEL)
    env["AAEL_PATH"] = str(tmp_path / "aael")  # the raw form never carries the AAEL
    assert cc_eventlog(tsm_root, tmp_path, env, ccel, dialect) == ccel.read_bytes()


@pytest.mark.parametrize("filler", [b"\0", b"\xff"])
def test_ccel_trimmed_for_0_4_0(tsm_root, tmp_path, env, ccel, filler):
    ccel.write_bytes(LOG + filler * 4096)
    out = cc_eventlog(tsm_root, tmp_path, env, ccel, "0.4.0")
    assert out == LOG + b"\xff" * 8
    assert out[len(LOG) - len(EV2):len(LOG)] == EV2  # ends right after event 2


def test_ccel_trimmed_with_aael(tsm_root, tmp_path, env, ccel):
    (tmp_path / "aael").write_bytes(AAEL)
    env["AAEL_PATH"] = str(tmp_path / "aael")
    out = cc_eventlog(tsm_root, tmp_path, env, ccel, "0.4.0")
    assert out == LOG + AAEL + b"\xff" * 8
    walked = eventlog.walk(out)
    assert [e.index for e in walked.events] == [1, 2, 4] and walked.end == len(LOG + AAEL)


def test_aael_without_ccel_gets_the_69_byte_header(tsm_root, tmp_path, env):
    (tmp_path / "aael").write_bytes(AAEL)
    env["AAEL_PATH"] = str(tmp_path / "aael")
    out = cc_eventlog(tsm_root, tmp_path, env, tmp_path / "no-ccel", "0.4.0")
    header = eventlog.AAEL_SPEC_ID_HEADER
    assert out == header + AAEL + b"\xff" * 8
    assert len(header) == 69 and struct.unpack_from("<II", header, 0) == (0, 3)
    assert struct.unpack_from("<I", header, 28)[0] == 37 and struct.unpack_from("<I", header, 56)[0] == 2
    assert struct.unpack_from("<HHHH", header, 60) == (0x000C, 48, 0x0012, 32)
    assert [e.data[8:] for e in eventlog.walk(out).events] == [b"domain operation content"]
    assert cc_eventlog(tsm_root, tmp_path, env, tmp_path / "no-ccel", "0.1.0") is None


def test_no_eventlog_at_all_is_null(tsm_root, tmp_path, env):
    for dialect in ("0.1.0", "0.4.0"):
        assert cc_eventlog(tsm_root, tmp_path, env, tmp_path / "no-ccel", dialect) is None


def test_ccel_form_override(tsm_root, tmp_path, env, ccel):
    env["TDX_CCEL_FORM"] = "raw"
    assert cc_eventlog(tsm_root, tmp_path, env, ccel, "0.4.0") == ccel.read_bytes()
    trimmed = LOG + b"\xff" * 8
    auto = {**env, "TDX_CCEL_FORM": "auto"}
    assert cc_eventlog(tsm_root, tmp_path, auto, ccel, "0.4.0", ccel_form="trimmed") == trimmed
    assert cc_eventlog(tsm_root, tmp_path, auto, ccel, "0.1.0", ccel_form="raw") == ccel.read_bytes()
    assert cc_eventlog(tsm_root, tmp_path, {**env, "TDX_CCEL_FORM": "Trimmed"}, ccel, "0.1.0") == trimmed
    with pytest.raises(AttesterError, match="TDX_CCEL_FORM"):
        cc_eventlog(tsm_root, tmp_path, {**env, "TDX_CCEL_FORM": "gzip"}, ccel, "0.4.0")
    with pytest.raises(AttesterError, match="unknown CCEL form"):
        TdxAttester(ccel_form="both")


def test_malformed_ccel_fails_trimmed_form_only(tsm_root, tmp_path, env, ccel):
    ccel.write_bytes(spec_id_header() + event(1, 4, b"x", alg=0x0099, size=48) + bytes(64))
    with pytest.raises(AttesterError, match=r"unknown digest algorithm 0x0099.*TDX_CCEL_FORM=raw"):
        cc_eventlog(tsm_root, tmp_path, env, ccel, "0.4.0")
    assert cc_eventlog(tsm_root, tmp_path, env, ccel, "0.1.0") == ccel.read_bytes()


def test_tdx_evidence_carries_the_dialects_ccel_form(monkeypatch, tsm_root, tmp_path, env, ccel):
    kernel(monkeypatch)
    att = attester(tsm_root, tmp_path, env, ccel_path=str(ccel))
    old, new = att.evidence(DIGEST, "0.1.0"), att.evidence(DIGEST, "0.4.0")
    assert base64.b64decode(old["cc_eventlog"]) == ccel.read_bytes()
    assert base64.b64decode(new["cc_eventlog"]) == LOG + b"\xff" * 8
    assert "aa_eventlog" not in old and "aa_eventlog" not in new


# -- the TCG2 walk --------------------------------------------------------------------------------
def test_walk_events_and_stops():
    w = eventlog.walk(LOG + bytes(100))
    assert (w.end, w.header_end, w.stop) == (len(LOG), len(spec_id_header()), "filler")
    assert [(e.index, e.type) for e in w.events] == [(1, 0x80000001), (2, 0xD)]
    assert w.events[1].digests == ((SHA384, hashlib.sha384(b"grub cmdline: linux /vmlinuz ro").digest()),)
    assert eventlog.walk(LOG).stop == "end of data" and eventlog.walk(LOG).end == len(LOG)
    marker = struct.pack("<II", 0xFFFFFFFF, 0) + b"\x12" * 20
    assert eventlog.walk(LOG + marker).stop == "end marker" and eventlog.walk(LOG + marker).end == len(LOG)
    assert eventlog.trim(LOG + b"\xff" * 3) == LOG  # filler shorter than 8 bytes


def test_walk_uses_declared_digest_sizes():
    # a log declaring SHA-256 only; its events carry 32-byte digests
    log = spec_id_header(((0x000B, 32),)) + event(0, 5, b"a", alg=0x000B, size=32)
    assert eventlog.trim(log + bytes(16)) == log


@pytest.mark.parametrize("bad", [
    b"",
    struct.pack("<II", 0, 6) + bytes(24),  # first event is not EV_NO_ACTION
    spec_id_header()[:-3],  # header data cut short
    LOG + EV1[:40],  # an event running past the end
    LOG + struct.pack("<III", 1, 4, 999),  # absurd digest count
])
def test_walk_rejects_malformed(bad):
    with pytest.raises(eventlog.EventLogError):
        eventlog.walk(bad)
