"""KBS client <-> local dev broker, both dialects and all key types; every failure is named."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import binding, broker, exitcodes, kbs
from agent.errors import (
    BrokerUnreachable,
    EvidenceRefused,
    KbsProtocolError,
    PolicyDenied,
    ResourceNotFound,
    VersionMismatch,
)
from tests.support import DATA, PROJECT, serve_broker, serving

SECRET = b"model-password\n\x00\xffbinary ok"
VECTORS = DATA / "tdx-vectors"
REPORT_DATA_OFFSET = 48 + 520  # header + TD body offset of REPORTDATA (v4 and v5 type 2 layouts)


class SampleAttester:
    name = tee = "sample"

    def __init__(self, tamper: bool = False):
        self.tamper = tamper
        self.dialects: list[str] = []

    def detect(self) -> bool:
        return True

    def evidence(self, report_data: bytes, dialect: str) -> dict:
        self.dialects.append(dialect)
        if self.tamper:
            report_data = bytes(48)
        return {"svn": "1", "report_data": binding.sample_report_data(report_data)}


class VectorTdxAttester:
    """A TDX attester over a real quote whose REPORTDATA (and attributes) are patched."""

    name = tee = "tdx"

    def __init__(self, debug: bool = False):
        self.quote = bytearray((VECTORS / "go-tdx-guest__cos-113-tdx-quote.dat").read_bytes())
        if debug:
            self.quote[48 + 120] |= 1  # TDATTRIBUTES bit 0 (DEBUG)

    def detect(self) -> bool:
        return True

    def evidence(self, report_data: bytes, dialect: str) -> dict:
        q = bytearray(self.quote)
        q[REPORT_DATA_OFFSET:REPORT_DATA_OFFSET + 64] = binding.tdx_report_data(report_data)
        return {"quote": base64.b64encode(bytes(q)).decode(), "cc_eventlog": None}


@contextlib.contextmanager
def running(b: broker.Broker):
    """The broker behind a path prefix, as Alibaba's ingress puts it (/trustee/kbs/v0/...)."""
    with serve_broker(b) as url:
        yield url + "/trustee"


def make_broker(dialect="0.4.0", policy=None, resources=None):
    return broker.Broker({"default/key/model": SECRET} if resources is None else resources, dialect,
                         policy or broker.Policy())


@pytest.mark.parametrize("dialect,key_alg", [("0.4.0", None), ("0.4.0", "RSA-OAEP-256"),
                                             ("0.4.0", "RSA1_5"), ("0.1.0", None)])
def test_roundtrip_both_dialects_all_keys(dialect, key_alg):
    with running(make_broker(dialect)) as url:
        att = SampleAttester()
        client = kbs.KbsClient(url, att, key_alg=key_alg)
        assert client.get_resource("kbs:///default/key/model") == SECRET
        assert client.dialect == dialect  # probed
        assert att.dialects == [dialect]


def test_tdx_evidence_verified_by_broker():
    policy = broker.Policy(tdx={"allow_debug": False})
    with running(make_broker(policy=policy)) as url:
        assert kbs.KbsClient(url, VectorTdxAttester()).get_resource("kbs:///default/key/model") == SECRET
        with pytest.raises(EvidenceRefused, match="debug"):
            kbs.KbsClient(url, VectorTdxAttester(debug=True)).get_resource("kbs:///default/key/model")


def test_tdx_allow_list():
    mr_td = VectorTdxAttester().quote[48 + 136:48 + 184].hex()
    with running(make_broker(policy=broker.Policy(tdx={"mr_td": [mr_td]}))) as url:
        assert kbs.KbsClient(url, VectorTdxAttester()).get_resource("default/key/model") == SECRET
    with running(make_broker(policy=broker.Policy(tdx={"mr_td": ["00" * 48]}))) as url:
        with pytest.raises(EvidenceRefused, match="mr_td"):
            kbs.KbsClient(url, VectorTdxAttester()).get_resource("default/key/model")


@pytest.mark.parametrize("dialect", ["0.4.0", "0.1.0"])
def test_denied(dialect):
    policy = broker.Policy(deny_resources=("default/key/*",))
    with running(make_broker(dialect, policy)) as url:
        with pytest.raises(PolicyDenied) as e:
            kbs.KbsClient(url, SampleAttester()).get_resource("kbs:///default/key/model")
        assert e.value.exit_code == exitcodes.DENIED


@pytest.mark.parametrize("dialect", ["0.4.0", "0.1.0"])
def test_missing_resource(dialect):
    with running(make_broker(dialect)) as url:
        with pytest.raises(ResourceNotFound) as e:
            kbs.KbsClient(url, SampleAttester()).get_resource("kbs:///default/key/other")
        assert e.value.exit_code == exitcodes.NOT_FOUND


def test_tee_not_allowed_by_policy():
    with running(make_broker(policy=broker.Policy(allow_tees=("tdx",)))) as url:
        with pytest.raises(EvidenceRefused):
            kbs.KbsClient(url, SampleAttester()).get_resource("default/key/model")


def test_version_mismatch_when_forced():
    with running(make_broker("0.1.0")) as url:
        with pytest.raises(VersionMismatch):
            kbs.KbsClient(url, SampleAttester(), dialect="0.4.0").get_resource("default/key/model")


def test_bad_evidence_refused():
    with running(make_broker()) as url:
        with pytest.raises(EvidenceRefused, match="report_data"):
            kbs.KbsClient(url, SampleAttester(tamper=True)).get_resource("default/key/model")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_broker_down_retries_then_names_it():
    sleeps: list[float] = []
    client = kbs.KbsClient(f"http://127.0.0.1:{free_port()}", SampleAttester(), sleep=sleeps.append,
                           timeout=2)
    with pytest.raises(BrokerUnreachable) as e:
        client.get_resource("default/key/model")
    assert sleeps == [1.0] * 4  # 5 handshake attempts, 1 s apart
    assert e.value.exit_code == exitcodes.UNREACHABLE


def test_expired_session_gets_one_fresh_handshake():
    b = make_broker()
    with running(b) as url:
        client = kbs.KbsClient(url, SampleAttester())
        assert client.get_resource("default/key/model") == SECRET
        b.sessions.clear()  # the broker forgot the session (expiry, restart)
        assert client.get_resource("default/key/model") == SECRET


def fake_server(handler_cls):
    return serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_cls))


def test_garbage_replies():
    class Garbage(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "9")
            self.end_headers()
            self.wfile.write(b"<garbage>")

        def log_message(self, *a):
            pass

    with fake_server(Garbage) as url:
        client = kbs.KbsClient(url, SampleAttester(), sleep=lambda s: None)
        with pytest.raises(KbsProtocolError):
            client.get_resource("default/key/model")


def test_truncated_jwe_is_a_protocol_error():
    b = make_broker()
    real = b.resource

    def truncated(sid, path):
        body = real(sid, path)
        body["ciphertext"] = body["ciphertext"][:5]
        return body

    b.resource = truncated
    with running(b) as url:
        with pytest.raises(KbsProtocolError, match="decrypt"):
            kbs.KbsClient(url, SampleAttester()).get_resource("default/key/model")


def test_instance_info_header(monkeypatch):
    env = {"EAS_MODEL_ID": "m1", "EAS_INSTANCE_ID": "i1", "POD_NAME": "p1"}
    assert json.loads(kbs.instance_info_header(env)) == {"eas_model_id": "m1", "eas_instance_id": "i1",
                                                         "eas_pod_name": "p1"}
    assert kbs.instance_info_header({"AA_INSTANCE_INFO": "{\"x\":1}", **env}) == "{\"x\":1}"
    assert kbs.instance_info_header({}) is None
    seen = []
    b = make_broker()
    real = b.attest
    b.attest = lambda sid, body, info: (seen.append(info), real(sid, body, info))[1]
    with running(b) as url:
        kbs.KbsClient(url, SampleAttester(), instance_info="{\"a\":1}").get_resource("default/key/model")
    assert seen == ["{\"a\":1}"]


def test_bad_uri_is_a_usage_error():
    client = kbs.KbsClient("http://127.0.0.1:1", SampleAttester())
    with pytest.raises(Exception) as e:
        client.get_resource("kbs:///only/two")
    assert e.value.exit_code == exitcodes.USAGE


# -- the command line: broker and get-resource as separate processes ----------------------
@contextlib.contextmanager
def broker_process(tmp_path: Path, dialect: str):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(SECRET)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "agent", "broker", "--resource",
                             f"default/key/model=@{secret}", "--dialect", dialect, "--port", str(port)],
                            cwd=PROJECT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("dialect", ["0.4.0", "0.1.0"])
def test_cli_get_resource_from_dev_broker(tmp_path, dialect):
    out = tmp_path / "key.bin"
    with broker_process(tmp_path, dialect) as (url, proc):
        env = {**os.environ, "ATTESTER": "sample", "TRUSTEE_URL": url}
        r = subprocess.run([sys.executable, "-m", "agent", "get-resource", "kbs:///default/key/model",
                            "--out", str(out)], cwd=PROJECT, env=env, capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert out.read_bytes() == SECRET
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        assert b"WARNING" in r.stderr  # the sample attester is never silent
        r = subprocess.run([sys.executable, "-m", "agent", "get-resource", "kbs:///default/key/none",
                            "--out", str(tmp_path / "none.bin")], cwd=PROJECT, env=env, capture_output=True,
                           timeout=60)
        assert r.returncode == exitcodes.NOT_FOUND
        assert not (tmp_path / "none.bin").exists()
        assert b"Traceback" not in r.stderr
        r = subprocess.run([sys.executable, "-m", "agent", "get-resource", "kbs:///default/key/model"],
                           cwd=PROJECT, env=env, capture_output=True, timeout=60)
        assert r.returncode == 0 and r.stdout == SECRET
    log = proc.stderr.read()
    assert "release" in log and SECRET.decode(errors="ignore")[:10] not in log
