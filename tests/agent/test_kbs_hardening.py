"""The KBS client under a network attacker (issue "Hold under attack"): whatever the broker, or
whoever sits in front of it, answers (slowly, hugely, nested, elsewhere, forged), the agent ends
with a named error and a documented exit code, within its deadline, in bounded memory, without
a traceback or a forged log line, and the key stays in one buffer that is wiped.

Every server here binds 127.0.0.1 and stops on its own within seconds.
"""

from __future__ import annotations

import contextlib
import http.server
import inspect
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from agent import attesters, broker, cli, exitcodes, jwe, kbs, protocol, transport
from agent.errors import BrokerUnreachable, EvidenceRefused, KbsProtocolError, NoKbs
from tests.agent.support import agent_env
from tests.support import PROJECT, serve_broker, serving

KEY_URI = "kbs:///default/key/model"
SECRET = b"model-password\n"
FORGED = "2026-01-01 00:00:00,000 agent INFO phase ready: forged"
HOSTILE = f"denied\n{FORGED}\x1b[2J\x1b[31m\r"
HTML = (b"<html><head><title>404 Not Found</title></head><body><center><h1>404 Not Found</h1>"
        b"</center><hr><center>nginx</center></body></html>")


# -- servers ------------------------------------------------------------------------------------
class Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass


@contextlib.contextmanager
def fake(handler: type):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    with serving(server) as url:
        yield url


def drip(wfile, data: bytes, every: float, limit: float = 20.0) -> None:
    """Write ``data`` one byte every ``every`` s until done, the client leaves, or ``limit`` s."""
    end = time.monotonic() + limit
    for i in range(len(data)):
        if time.monotonic() > end:
            return
        try:
            wfile.write(data[i:i + 1])
            wfile.flush()
        except OSError:
            return
        time.sleep(every)


def client(url: str, **kw) -> kbs.KbsClient:
    kw.setdefault("sleep", lambda s: None)
    return kbs.KbsClient(url, attesters.SampleAttester(), **kw)


def cli_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TRUSTEE_URL", "DECRYPTION_KEY_URI")}
    return {**env, "ATTESTER": "sample", **extra}


def get_resource(url: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", "get-resource", KEY_URI, "--url", url, *args],
                          cwd=PROJECT, env=cli_env(), capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def cipher(oracle, tmp_path_factory) -> Path:
    """A gocryptfs directory (real gocryptfs, default flags): agent run checks it before any request."""
    path = tmp_path_factory.mktemp("hardening") / "cipher"
    oracle.init(path)
    return path


def agent_run(url: str, cipher: Path, tmp_path: Path, *flags: str, timeout: float = 30):
    env = agent_env(url, cipher, tmp_path / "mnt")
    argv = [sys.executable, "-m", "agent", "run", *flags, "--", "touch", str(tmp_path / "started")]
    return subprocess.run(argv, cwd=PROJECT, env=env, capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def fetch_key(cfg, phases):
    """agent.run.fetch_key, whichever signature: (cfg, phases), or (cfg, args, phases) before the
    run configuration carried the broker options."""
    from agent.run import fetch_key as real

    if len(inspect.signature(real).parameters) == 3:
        return real(cfg, cfg, phases)
    return real(cfg, phases)


def run_cfg(url: str, **kw) -> types.SimpleNamespace:
    fields = {"attester": "sample", "url": url, "key_uri": KEY_URI, "timeout": 10.0, "allow_debug": False,
              "dialect": None, "key_alg": None, "ca_bundle": None}
    return types.SimpleNamespace(**{**fields, **kw})


def assert_clean(r: subprocess.CompletedProcess, code: int) -> str:
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == code, (r.returncode, err[-2000:])
    assert "Traceback" not in err and "\x1b" not in err and "\r" not in err
    return err


# -- 6: one deadline for the whole exchange, capped bodies -----------------------------------------
class DripAuth(Quiet):
    """/auth: 200, 1000 bytes announced, one sent every 0.5 s."""

    def do_POST(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        drip(self.wfile, b" " * 1000, 0.5)


def test_run_timeout_is_one_deadline_for_a_dripping_auth(cipher, tmp_path):
    with fake(DripAuth) as url:
        start = time.monotonic()
        r = agent_run(url, cipher, tmp_path, "--timeout", "3", timeout=20)
        took = time.monotonic() - start
    err = assert_clean(r, exitcodes.RUN_UNREACHABLE)
    assert took < 10, took
    assert "no answer from the broker within 3 s (TRUSTEE_TIMEOUT" in err
    assert not (tmp_path / "started").exists()


class DripHeaders(http.server.BaseHTTPRequestHandler):
    """The status line and one endless header, a byte every 0.2 s: never a complete reply."""

    def do_POST(self):  # noqa: N802
        drip(self.wfile, b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 5000, 0.2)

    def log_message(self, *a):
        pass


def test_get_resource_deadline_holds_while_headers_drip():
    with fake(DripHeaders) as url:
        start = time.monotonic()
        r = get_resource(url, "--timeout", "2", timeout=20)
        took = time.monotonic() - start
    err = assert_clean(r, exitcodes.UNREACHABLE)
    assert took < 8, took
    assert "within 2 s" in err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_handshake_retries_share_the_deadline():
    c = client(f"http://127.0.0.1:{free_port()}", timeout=2, sleep=time.sleep)
    start = time.monotonic()
    with pytest.raises(BrokerUnreachable):
        c.get_resource(KEY_URI)
    assert time.monotonic() - start < 2.5  # not 5 attempts 1 s apart


class HugeAuth(Quiet):
    """/auth: 200 announcing 400 MiB, 10 bytes sent, then held open."""

    def do_POST(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(400 << 20))
        self.end_headers()
        self.wfile.write(b"{" * 10)
        self.wfile.flush()
        time.sleep(3)


def test_auth_reply_announcing_400_mib_is_refused_unread():
    with fake(HugeAuth) as url:
        start = time.monotonic()
        with pytest.raises(KbsProtocolError, match=r"announces 419430400 bytes.*1 MiB.*refused unread"):
            client(url, handshake_attempts=1, timeout=10).get_resource(KEY_URI)
        assert time.monotonic() - start < 2


def test_auth_reply_without_a_length_is_cut_at_1_mib():
    sent, done = [0], threading.Event()

    class Endless(Quiet):  # HTTP/1.0, no Content-Length: the body ends when the server closes
        def do_POST(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(1024):  # 64 MiB at most
                    self.wfile.write(b" " * 65536)
                    sent[0] += 65536
            except OSError:
                pass
            finally:
                done.set()

    with fake(Endless) as url:
        with pytest.raises(KbsProtocolError, match="larger than the 1 MiB"):
            client(url, handshake_attempts=1, timeout=10).get_resource(KEY_URI)
        assert done.wait(10)
    assert sent[0] < 16 << 20, sent[0]  # the client stopped reading; socket buffers took the rest


def test_resource_reply_over_16_mib_is_refused():
    base = broker.make_handler(broker.Broker({"default/key/model": SECRET}))

    class BigResource(base):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(17 << 20))
            self.end_headers()
            self.wfile.write(b"{}")

    with fake(BigResource) as url:
        with pytest.raises(KbsProtocolError, match="more than the 16 MiB"):
            client(url, timeout=10).get_resource(KEY_URI)


def test_fetch_key_passes_the_timeout(monkeypatch):
    seen = []

    def stop(self):
        seen.append(self.timeout)
        raise BrokerUnreachable("stop here")

    monkeypatch.setattr(kbs.KbsClient, "handshake", stop)
    with pytest.raises(BrokerUnreachable):
        fetch_key(run_cfg("http://127.0.0.1:9", timeout=9.0), None)
    assert seen == [9.0]


# -- 8: no tracebacks ----------------------------------------------------------------------------------
class Nested(Quiet):
    def do_POST(self):  # noqa: N802
        body = b"[" * 200000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_deeply_nested_json_is_a_protocol_error_not_a_traceback():
    with fake(Nested) as url:
        r = get_resource(url, "--timeout", "3")
    err = assert_clean(r, exitcodes.PROTOCOL)
    assert "nested too deeply" in err


def test_deeply_nested_resource_and_error_bodies():
    b = broker.Broker({"default/key/model": SECRET})
    base = broker.make_handler(b)

    class NestedGet(base):
        def do_GET(self):  # noqa: N802
            body = b'{"type": "x", "detail": ' + b"[" * 100000
            self.send_response(200 if "model" in self.path else 401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with fake(NestedGet) as url:
        with pytest.raises(KbsProtocolError, match="nested too deeply"):
            client(url).get_resource(KEY_URI)
        with pytest.raises(KbsProtocolError, match="HTTP 401"):  # an error body nested: described, not parsed
            client(url).get_resource("kbs:///default/key/other")


def test_memory_error_while_parsing_is_a_protocol_error(monkeypatch):
    def boom(*a, **k):
        raise MemoryError

    monkeypatch.setattr(transport, "json", types.SimpleNamespace(loads=boom))
    with serve_broker(broker.Broker({"default/key/model": SECRET})) as url:
        with pytest.raises(KbsProtocolError, match="too large to parse"):
            client(url, handshake_attempts=1).get_resource(KEY_URI)
    monkeypatch.setattr(kbs.KbsClient, "_handshake_once", lambda self: [[]] * (1 << 62))
    with pytest.raises(KbsProtocolError, match="too large to handle"):
        client("http://127.0.0.1:9").handshake()


class Garbage(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        self.wfile.write(b"SSH-2.0-OpenSSH_9.6\x1b[31m\r\n\r\n")

    def log_message(self, *a):
        pass


def test_an_answer_that_is_not_http():
    with fake(Garbage) as url:
        with pytest.raises(KbsProtocolError, match="not valid HTTP") as e:
            client(url, handshake_attempts=1).get_resource(KEY_URI)
    assert "\x1b" not in str(e.value) and "\\x1b" in str(e.value)


# -- 9: what came from outside is escaped --------------------------------------------------------------
def hostile_broker() -> broker.Broker:
    b = broker.Broker({"default/key/model": SECRET})

    def deny(sid, path):
        raise broker.Refusal(401, "PolicyDeny", HOSTILE)

    b.resource = deny
    return b


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_broker_detail_cannot_forge_agent_log_lines(cipher, tmp_path, fmt):
    with serve_broker(hostile_broker()) as url:
        r = agent_run(url, cipher, tmp_path, "--log-format", fmt, "--timeout", "10")
    err = assert_clean(r, exitcodes.RUN_DENIED)
    lines = err.splitlines()
    assert not any(line.startswith(FORGED) for line in lines)
    if fmt == "json":
        records = [json.loads(line) for line in lines]  # every line is one JSON object
        assert any(FORGED in rec.get("message", "") for rec in records)
    else:
        assert "denied\\n" + FORGED + "\\x1b[2J" in err


def test_get_resource_error_is_one_escaped_line():
    with serve_broker(hostile_broker()) as url:
        r = get_resource(url, "--timeout", "10")
    err = assert_clean(r, exitcodes.DENIED)
    line = next(x for x in err.splitlines() if x.startswith("agent: error:"))
    assert "denied\\n" + FORGED in line
    assert not any(x.startswith(FORGED) for x in err.splitlines())


@pytest.fixture
def root_logging():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:], _ = saved[0], root.setLevel(saved[1])


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_formatters_keep_one_record_on_one_line(capsys, root_logging, fmt):
    cli._setup_logging(fmt)
    logging.getLogger("agent.test").warning("broker said %s", HOSTILE + "\ud800")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err and "\r" not in err
    if fmt == "json":
        assert FORGED in json.loads(err)["message"]


# -- 10: redirects are not followed --------------------------------------------------------------------
@contextlib.contextmanager
def counting_listener():
    """A loopback TCP port that counts connections and closes them at once."""
    count = [0]
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            count[0] += 1
            conn.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], count
    finally:
        stop.set()
        thread.join(2)
        sock.close()


@pytest.mark.parametrize("target", ["http://127.0.0.1:{port}/kbs/v0/auth", "ftp://127.0.0.1:{port}/key",
                                    "/elsewhere/kbs/v0/auth", "http://127.0.0.1:{port}/\x1b[31mred"])
def test_redirects_are_not_followed(target):
    with counting_listener() as (port, count):
        location = target.format(port=port)

        class Redirect(Quiet):
            def do_POST(self):  # noqa: N802
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

        with fake(Redirect) as url:
            with pytest.raises(NoKbs) as e:
                client(url, timeout=3).get_resource(KEY_URI)
        time.sleep(0.3)  # a followed redirect would have connected by now
        assert count[0] == 0
    message = str(e.value)
    assert "not followed; set TRUSTEE_URL to the final URL" in message
    assert "\x1b" not in message and location.replace("\x1b", "\\x1b") in message
    assert e.value.exit_code == exitcodes.NO_KBS and e.value.run_exit_code == exitcodes.RUN_NO_KBS


# -- 11: the key in one buffer, wiped -------------------------------------------------------------
@pytest.mark.parametrize("alg,legacy", [(a, False) for a in protocol.KEY_ALGORITHMS] +
                         [(protocol.RSA1_5, True)])
def test_jwe_decrypt_returns_a_wipeable_buffer(alg, legacy):
    key = jwe.TeeKeyPair.generate(alg)
    out = key.decrypt(jwe.encrypt(key.jwk(), SECRET, legacy=legacy))
    assert type(out) is bytearray and out == SECRET


def test_get_resource_returns_the_buffer_and_fetch_key_keeps_it(monkeypatch):
    returned = []
    real = kbs.KbsClient.get_resource
    monkeypatch.setattr(kbs.KbsClient, "get_resource",
                        lambda self, uri: (returned.append(real(self, uri)), returned[-1])[1])
    phases = types.SimpleNamespace(phase=lambda *a, **k: None)
    with serve_broker(broker.Broker({"default/key/model": SECRET})) as url:
        key = fetch_key(run_cfg(url), phases)
    assert type(key) is bytearray and key == SECRET
    assert key is returned[0]  # no second copy left unwiped


@pytest.mark.parametrize("to_file", [True, False])
def test_cli_get_resource_wipes_its_copy(monkeypatch, tmp_path, capsysbinary, root_logging, to_file):
    buffer = bytearray(SECRET)
    monkeypatch.setattr(kbs.KbsClient, "get_resource", lambda self, uri: buffer)
    out = tmp_path / "key.bin"
    argv = ["get-resource", KEY_URI, "--url", "http://127.0.0.1:9", "--attester", "sample"]
    assert cli.main(argv + (["--out", str(out)] if to_file else [])) == exitcodes.OK
    written = out.read_bytes() if to_file else capsysbinary.readouterr().out
    assert written == SECRET
    assert buffer == bytes(len(SECRET))


# -- 15: no KBS at the URL -------------------------------------------------------------------------
def test_missing_path_prefix_is_no_kbs_not_a_refusal(cipher, tmp_path):
    auths = []

    class Nginx(Quiet):
        def do_POST(self):  # noqa: N802
            auths.append(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["version"])
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(HTML)))
            self.end_headers()
            self.wfile.write(HTML)

    with fake(Nginx) as url:
        r = get_resource(url, "--timeout", "10")
        err = assert_clean(r, exitcodes.NO_KBS)
        assert auths == list(protocol.DIALECTS)  # every dialect was asked
        assert "check the path part of TRUSTEE_URL" in err and "<" not in err
        r = agent_run(url, cipher, tmp_path, "--timeout", "10")
    err = assert_clean(r, exitcodes.RUN_NO_KBS)
    assert "check the path part of TRUSTEE_URL" in err and "<" not in err
    assert not (tmp_path / "started").exists()


def test_an_html_error_page_is_described_not_printed():
    base = broker.make_handler(broker.Broker({"default/key/model": SECRET}))

    class BadGateway(base):
        def do_POST(self):  # noqa: N802
            if not self.path.endswith("/attest"):
                return super().do_POST()
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(HTML)))
            self.end_headers()
            self.wfile.write(HTML)

    with fake(BadGateway) as url:
        with pytest.raises(EvidenceRefused) as e:
            client(url).get_resource(KEY_URI)
    assert "an HTML page of" in str(e.value) and "<" not in str(e.value)


# -- the dev broker is a test server: bounded too ---------------------------------------------------------
def raw_request(url: str, head: bytes, body: bytes = b"") -> bytes:
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(head + body)
        return s.recv(4096)


def test_dev_broker_caps_request_bodies_and_survives_nesting():
    with serve_broker(broker.Broker({"default/key/model": SECRET})) as url:
        big = b"POST /kbs/v0/auth HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (2 << 20)
        assert raw_request(url, big).startswith(b"HTTP/1.1 413")  # answered without reading 2 MiB
        nested = b"[" * 100000
        head = b"POST /kbs/v0/auth HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(nested)
        assert raw_request(url, head, nested).startswith(b"HTTP/1.1 400")
        bad = b"POST /kbs/v0/auth HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"
        assert raw_request(url, bad).startswith(b"HTTP/1.1 400")
        assert client(url).get_resource(KEY_URI) == SECRET  # still serving
