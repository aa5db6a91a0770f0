"""The dev broker checks measured launch as Trustee does: replay at /attest, the PAI rule at release.

Events are real: ``agent.measure.measure`` writes them into a temporary system register
(``SYSTEM_MEASURE_REGISTER``) or a fake RTMR3 (``FakeRtmr``, as in test_measure.py) and the
log (``AAEL_PATH``); the real attesters send them; :class:`Edited` changes the evidence on the
way to play the attacker. A replay failure is a refused attestation (exit 8, ``run``: 116); a
model-rule failure is a policy denial of the key (exit 9, ``run``: 117).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import broker, exitcodes, kbs, measure
from agent.attesters import SampleAttester, SystemAttester, TdxAttester, eventlog, tdx
from agent.errors import EvidenceRefused, PolicyDenied, UsageError
from agent.measure import Event, registers
from tests.agent.test_attesters import QUOTE_V5, FakeKernel, vector
from tests.agent.test_measure import TRUSTEE_CCEL, ZERO, FakeRtmr, with_rtmr3
from tests.support import PROJECT, serve_broker

DOMAIN, OPERATION = "trustiflux.alibaba.com", "pai/load-model"
H1 = hashlib.sha256(b"model one").hexdigest()
H2 = hashlib.sha256(b"model two").hexdigest()
SECRET = b"the model key\n"
RESOURCE = "default/key/model"
HEADER = len(eventlog.AAEL_SPEC_ID_HEADER)  # where the first AAEL record starts in system evidence


@pytest.fixture
def env(tmp_path):
    """The measurement paths, all inside tmp_path; RTMR3 present (zero) for the tdx tests."""
    mdir = tmp_path / "measurements"
    mdir.mkdir()
    (mdir / "rtmr3:sha384").write_bytes(ZERO)
    return {"AAEL_PATH": str(tmp_path / "run" / "eventlog"), "TDX_MEASUREMENTS_DIR": str(mdir),
            "SYSTEM_MEASURE_REGISTER": str(tmp_path / "run" / "system_measure_register")}


def load_model(env, model_id: str, digest: str, attester: str = "system") -> Event:
    content = json.dumps({"model-id": model_id, "hash": digest})
    return measure.measure(DOMAIN, OPERATION, content, attester, env)


class Edited:
    """An attester whose evidence ``edit`` changes in place before it is sent."""

    def __init__(self, inner, edit):
        self.inner, self.edit = inner, edit
        self.name, self.tee = inner.name, inner.tee

    def detect(self) -> bool:
        return True

    def evidence(self, report_data: bytes, dialect: str) -> dict:
        evidence = self.inner.evidence(report_data, dialect)
        self.edit(evidence)
        return evidence


def fetch(policy: broker.Policy, attester, dialect: str = "0.4.0") -> bytes:
    with serve_broker(broker.Broker({RESOURCE: SECRET}, dialect, policy)) as url:
        return bytes(kbs.KbsClient(url, attester).get_resource("kbs:///" + RESOURCE))


def denied(policy: broker.Policy, attester, dialect: str = "0.4.0") -> str:
    with pytest.raises(PolicyDenied) as e:
        fetch(policy, attester, dialect)
    assert e.value.exit_code == exitcodes.DENIED and e.value.run_exit_code == exitcodes.RUN_DENIED
    return str(e.value)


def refused(policy: broker.Policy, attester) -> str:
    with pytest.raises(EvidenceRefused) as e:
        fetch(policy, attester)
    assert e.value.exit_code == exitcodes.EVIDENCE_REFUSED
    return str(e.value)


def reference(*digests: str, model_id: str = "m1") -> dict:
    return {f"measurement.model.{model_id}": list(digests)}


# -- the PAI rule on system evidence --------------------------------------------------------------
@pytest.mark.parametrize("dialect", ["0.4.0", "0.1.0"])
def test_registered_hash_releases_the_key(env, dialect):
    load_model(env, "m1", H1)
    policy = broker.Policy(reference=reference(H2, H1), require_model_event=True)
    assert fetch(policy, SystemAttester(env), dialect) == SECRET


def test_another_hash_registered_is_denied_naming_the_event(env):
    load_model(env, "m1", H1)
    message = denied(broker.Policy(reference=reference(H2)), SystemAttester(env))
    assert f'model-id "m1" hash "{H1}"' in message
    assert "not among the 1 reference value(s) of measurement.model.m1" in message


def test_every_load_model_event_is_checked(env):
    load_model(env, "m1", H1)
    load_model(env, "m2", H2)
    message = denied(broker.Policy(reference=reference(H1)), SystemAttester(env))
    assert f'model-id "m2" hash "{H2}": no reference value measurement.model.m2 is registered' in message


@pytest.mark.parametrize("other_events", [0, 1])
def test_no_model_event_when_one_is_required_is_denied(env, other_events):
    if other_events:
        measure.measure(DOMAIN, "pai/load-config", '{"x": 1}', "system", env)
    message = denied(broker.Policy(reference=reference(H1), require_model_event=True), SystemAttester(env))
    assert "no pai/load-model event" in message and "require_model_event" in message


@pytest.mark.parametrize("other_events", [0, 1])
def test_no_model_event_passes_the_stock_rule(env, other_events):
    if other_events:
        measure.measure("coco.com", "some-operation", "not JSON, not a model", "system", env)
    policy = broker.Policy(reference=reference(H1), require_model_event=False)
    assert fetch(policy, SystemAttester(env)) == SECRET


@pytest.mark.parametrize("content,reason", [
    ("not json", "its content is not JSON"),
    ('["m1", "x"]', "JSON but not an object"),
    ('{"hash": "x"}', "no 'model-id' member"),
    ('{"model-id": "m1"}', "no 'hash' member"),
    ("{}", "no 'model-id' and no 'hash' member"),
    ('{"model-id": 1, "hash": "x"}', "must be strings"),
])
def test_malformed_model_event_is_denied_with_the_reason(env, content, reason):
    measure.measure(DOMAIN, OPERATION, content, "system", env)
    message = denied(broker.Policy(reference=reference(H1)), SystemAttester(env))
    assert "load-model event 1" in message and reason in message


def test_sample_evidence_has_no_model_event():
    message = denied(broker.Policy(require_model_event=True), SampleAttester())
    assert "sample evidence carries no measurement register" in message
    policy = broker.Policy(reference=reference(H1), require_model_event=False)
    assert fetch(policy, SampleAttester()) == SECRET


def test_system_evidence_without_a_log_has_no_model_event(env):
    load_model(env, "m1", H2)  # measured, but an old client sends neither register nor log

    def strip(ev):
        del ev["rtmr_register"], ev["cc_eventlog"]

    old_client = Edited(SystemAttester(env), strip)
    assert "no pai/load-model event" in denied(broker.Policy(require_model_event=True), old_client)
    assert fetch(broker.Policy(reference=reference(H1), require_model_event=False), old_client) == SECRET


# -- replay: what is refused at /attest -----------------------------------------------------------
def _log(ev) -> bytearray:
    return bytearray(base64.b64decode(ev["cc_eventlog"]))


def _set_log(ev, data: bytes) -> None:
    ev["cc_eventlog"] = base64.b64encode(bytes(data)).decode()


def _flip_digest(ev):
    data = _log(ev)
    data[HEADER + 14] ^= 1  # the record's stored SHA-384 digest (after index, type, count, algorithm)
    _set_log(ev, data)


def _rewrite_event(ev):
    """The attacker loaded H2 and rewrites its event to claim H1, digest recomputed."""
    forged = Event(1, DOMAIN, OPERATION, json.dumps({"model-id": "m1", "hash": H1}))
    _set_log(ev, eventlog.AAEL_SPEC_ID_HEADER + forged.to_bytes() + eventlog.END_MARKER)


def _register_changed(ev):
    ev["rtmr_register"] = ZERO.hex()


def _forged_event_added(ev):
    data = _log(ev)
    forged = Event(1, DOMAIN, OPERATION, json.dumps({"model-id": "m1", "hash": H1}))
    _set_log(ev, data[:-8] + forged.to_bytes() + data[-8:])


def _event_for_another_register(ev):
    data = _log(ev)
    _set_log(ev, data[:-8] + Event(4, DOMAIN, OPERATION, "{}").to_bytes() + data[-8:])


def _no_register(ev):
    del ev["rtmr_register"]


def _garbage_log(ev):
    _set_log(ev, _log(ev)[:HEADER + 30])


def _not_base64(ev):
    ev["cc_eventlog"] = "%%%"


@pytest.mark.parametrize("edit,match", [
    (_flip_digest, "is not that of its data"),
    (_rewrite_event, "replays MR index 1"),
    (_register_changed, "replays MR index 1"),
    (_forged_event_added, "replays MR index 1"),
    (_event_for_another_register, "AAEL event for MR index 4"),
    (_no_register, "cc_eventlog without rtmr_register"),
    (_garbage_log, "cannot be parsed"),
    (_not_base64, "not standard base64"),
], ids=lambda v: v.__name__.strip("_") if callable(v) else "")
def test_system_log_that_does_not_replay_is_refused(env, edit, match):
    load_model(env, "m1", H2)
    message = refused(broker.Policy(), Edited(SystemAttester(env), edit))
    assert "system evidence refused" in message and match in message
    assert fetch(broker.Policy(reference=reference(H1, H2)), SystemAttester(env)) == SECRET  # unedited


# -- reference values from files: the policy file, RVPS sample messages ---------------------------
def rvps_message(values: dict, **fields) -> dict:
    payload = base64.b64encode(json.dumps(values).encode()).decode()
    return {"version": "0.1.0", "type": "sample", "payload": payload, **fields}


def write_json(path: Path, obj) -> str:
    path.write_text(json.dumps(obj))
    return str(path)


@pytest.mark.parametrize("form", ["message", "gateway body"])
def test_rvps_sample_message_is_accepted(env, tmp_path, form):
    load_model(env, "m1", H1)
    message = rvps_message(reference(H1))
    if form == "gateway body":
        message = {"message": json.dumps(message)}
    ref = write_json(tmp_path / "rv.json", message)
    pol = write_json(tmp_path / "policy.json", {"reference": reference(H2), "require_model_event": True})
    policy = broker.Policy.load(pol, [ref])
    assert policy.reference == {"measurement.model.m1": (H2, H1)}  # added, as the RVPS merges
    assert policy.require_model_event is True
    assert fetch(policy, SystemAttester(env)) == SECRET
    assert "not among" in denied(broker.Policy.load(pol), SystemAttester(env))


@pytest.mark.parametrize("message,match", [
    (rvps_message(reference(H1), version="0.2.0"), "message version '0.2.0'"),
    (rvps_message(reference(H1), type="in-toto"), "message type 'in-toto'"),
    ({"version": "0.1.0", "type": "sample", "payload": "%%%"}, "payload is not the base64 of a JSON object"),
    (rvps_message({"measurement.model.m1": H1}), "must map to a list of strings"),
    (rvps_message({"measurement.model.m1": [1]}), "holds 1, not a string"),
    (["not", "a", "message"], "expected an RVPS message"),
])
def test_bad_rvps_message_is_refused_at_start(tmp_path, message, match):
    with pytest.raises(UsageError, match=match):
        broker.Policy.load(None, [write_json(tmp_path / "rv.json", message)])


@pytest.mark.parametrize("policy,match", [
    ({"reference": ["measurement.model.m1"]}, "expected a JSON object of name -> list of strings"),
    ({"reference": {"measurement.model.m1": [H1, 7]}}, "holds 7, not a string"),
    ({"require_model_event": "yes"}, "require_model_event must be true or false"),
])
def test_bad_reference_in_the_policy_file_is_refused_at_start(tmp_path, policy, match):
    with pytest.raises(UsageError, match=f"policy file .*{match}"):
        broker.Policy.load(write_json(tmp_path / "policy.json", policy))


@contextlib.contextmanager
def broker_process(tmp_path: Path, *args: str):
    """``python -m agent broker`` on a free port with ``args``; terminated (by its pid) after."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(SECRET)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "agent", "broker", "--resource", f"{RESOURCE}=@{secret}",
                             "--port", str(port), *args], cwd=PROJECT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(10)


def get_resource(url: str, env: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **env, "ATTESTER": "system", "TRUSTEE_URL": url}
    return subprocess.run([sys.executable, "-m", "agent", "get-resource", "kbs:///" + RESOURCE], cwd=PROJECT,
                          env=env, capture_output=True, text=True, timeout=60)


def test_cli_reference_file_and_require_model_event(tmp_path):
    ref = write_json(tmp_path / "rv.json", rvps_message(reference(H1)))
    envs = {}
    for name, digest in (("good", H1), ("bad", H2), ("none", None)):
        (tmp_path / name / "measurements").mkdir(parents=True)
        envs[name] = {"AAEL_PATH": str(tmp_path / name / "eventlog"),
                      "SYSTEM_MEASURE_REGISTER": str(tmp_path / name / "register")}
        if digest:
            load_model(envs[name], "m1", digest)
    with broker_process(tmp_path, "--reference", ref, "--require-model-event") as (url, proc):
        r = get_resource(url, envs["good"])
        assert r.returncode == 0 and r.stdout == SECRET.decode(), r.stderr
        r = get_resource(url, envs["bad"])
        assert r.returncode == exitcodes.DENIED, r.stderr
        assert f'model-id "m1" hash "{H2}"' in r.stderr and "not among" in r.stderr
        r = get_resource(url, envs["none"])
        assert r.returncode == exitcodes.DENIED and "require_model_event" in r.stderr, r.stderr
    log = proc.stderr.read()
    assert "1 model(s); a load-model event is required" in log and "denied by the model rule" in log


# -- tdx: RTMR3 in the quote ----------------------------------------------------------------------
@pytest.fixture
def rtmr(monkeypatch):
    fake = FakeRtmr()
    monkeypatch.setattr(registers, "RegisterIO", lambda: fake)
    return fake


def tdx_attester(env, tmp_path, monkeypatch, rtmr3: bytes, ccel: Path | None = None) -> TdxAttester:
    """The tdx attester over a fake configfs-tsm whose quotes carry ``rtmr3``."""
    monkeypatch.setattr(tdx, "_fs", FakeKernel(with_rtmr3(vector(QUOTE_V5), rtmr3)))
    root = tmp_path / "tsm"
    root.mkdir(exist_ok=True)
    return TdxAttester(tsm_root=str(root), environ=env, ccel_path=str(ccel or tmp_path / "no-ccel"),
                       retry_delay=0)


def rtmr3(env) -> bytes:
    return Path(env["TDX_MEASUREMENTS_DIR"], "rtmr3:sha384").read_bytes()


def test_tdx_rtmr3_is_replayed_then_the_rule_applied(env, tmp_path, monkeypatch, rtmr):
    load_model(env, "m1", H1, "tdx")
    att = tdx_attester(env, tmp_path, monkeypatch, rtmr3(env))
    assert fetch(broker.Policy(reference=reference(H1), require_model_event=True), att) == SECRET
    assert f'model-id "m1" hash "{H1}"' in denied(broker.Policy(reference=reference(H2)), att)
    stale = tdx_attester(env, tmp_path, monkeypatch, ZERO)  # a quote whose RTMR3 the event never reached
    message = refused(broker.Policy(reference=reference(H1)), stale)
    assert "tdx evidence refused" in message and "replays MR index 4" in message
    assert "the quote's RTMR3 is 000000" in message


def test_tdx_replay_counts_the_firmware_log(env, tmp_path, monkeypatch, rtmr):
    """A CCEL with its own index-4 AAEL events (Trustee's vector), then ours: all of them make RTMR3."""
    load_model(env, "m1", H1, "tdx")
    att = tdx_attester(env, tmp_path, monkeypatch, ZERO, TRUSTEE_CCEL)
    data = base64.b64decode(att.cc_eventlog("0.4.0"))
    full = eventlog.replay(eventlog.walk(data).events, 4)
    att = tdx_attester(env, tmp_path, monkeypatch, full, TRUSTEE_CCEL)
    assert fetch(broker.Policy(reference=reference(H1), require_model_event=True), att) == SECRET
    ours_only = rtmr3(env)
    assert ours_only != full
    att = tdx_attester(env, tmp_path, monkeypatch, ours_only, TRUSTEE_CCEL)
    assert "replays MR index 4" in refused(broker.Policy(reference=reference(H1)), att)


def test_tdx_without_a_log_has_no_model_event(env, tmp_path, monkeypatch, rtmr):
    load_model(env, "m1", H2, "tdx")  # measured, but protocol 0.1.0 sends the raw CCEL only: none here
    att = tdx_attester(env, tmp_path, monkeypatch, rtmr3(env))
    assert "no pai/load-model event" in denied(broker.Policy(require_model_event=True), att, "0.1.0")
    policy = broker.Policy(reference=reference(H1), require_model_event=False)
    assert fetch(policy, att, "0.1.0") == SECRET  # the stock rule: nothing to check, nothing denied
