"""python -m agent run end to end: dev broker (both dialects), a cipher dir made by real gocryptfs.

Nothing starts without the key; the key is in neither the command's environment nor its argv
nor the agent's log; signals reach the command; the mount always goes away.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from agent import broker, exitcodes
from tests.agent.support import (
    agent_env,
    assert_never_started,
    dev_broker,
    marker_cmd,
    probe_cmd,
    run_agent,
)
from tests.support import PROJECT, fuse_mounts, make_sample_tree, serve_broker, snapshot


@pytest.fixture(scope="module")
def model(oracle, tmp_path_factory):
    """A plaintext tree and its ciphertext written through a real gocryptfs mount, password random."""
    tmp = tmp_path_factory.mktemp("model")
    password = ("pw-" + secrets.token_hex(12)).encode()
    pwfile = tmp / "password"
    pwfile.write_bytes(password + b"\n")
    plain = make_sample_tree(tmp / "plain")
    (plain / "sparse").unlink()  # agent run mounts with --no-holes: a model has no sparse files
    cipher = tmp / "cipher"
    oracle.init(cipher, pwfile)
    with oracle.mount(cipher, tmp / "g", pwfile) as g:
        subprocess.run(["cp", "-a", f"{plain}/.", str(g)], check=True)
    return plain, cipher, pwfile, password


@pytest.mark.parametrize("dialect", ["0.4.0", "0.1.0"])
def test_command_sees_the_tree_and_its_code_passes_through(model, tmp_path, dialect):
    plain, cipher, pwfile, password = model
    out, mnt = tmp_path / "probe.json", tmp_path / "mnt"
    with dev_broker({"default/key/model": pwfile.read_bytes()}, dialect) as url:
        r = run_agent(agent_env(url, cipher, mnt, PROBE_OUT=str(out), CODE="42"), *probe_cmd())
    assert r.returncode == 42, r.stderr.decode()
    seen = json.loads(out.read_text())
    want = {os.fsdecode(k): hashlib.sha256(v[2]).hexdigest()
            for k, v in snapshot(plain, times=False).items() if v[0] == "file"}
    assert seen["files"] == want  # every file, byte for byte (by SHA-256)
    assert seen["argv"][1:] == ["arg with space", "$HOME"]
    secret = password.decode()
    assert secret not in json.dumps(seen["env"]) and secret not in seen["cmdline"]
    assert secret not in r.stderr.decode(errors="replace") and secret not in r.stdout.decode(errors="replace")
    for phase in ("handshake", "key", "unlock+mount", "ready", "unmounted"):
        assert f"phase {phase}:" in r.stderr.decode()
    assert os.path.realpath(mnt) not in fuse_mounts()


def test_json_log_format(model, tmp_path):
    _, cipher, pwfile, _ = model
    with dev_broker({"default/key/model": pwfile.read_bytes()}) as url:
        env = agent_env(url, cipher, tmp_path / "mnt", PROBE_OUT=str(tmp_path / "p.json"))
        r = subprocess.run([sys.executable, "-m", "agent", "run", "--log-format", "json", "--",
                            *probe_cmd()], env=env, cwd=PROJECT, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stderr.decode().splitlines() if line.startswith("{")]
    phases = [rec["phase"] for rec in records if "phase" in rec]
    assert phases[:3] == ["config", "measure", "handshake"] and "ready" in phases
    assert all("seconds" in rec for rec in records if "phase" in rec)


def test_denied(model, tmp_path):
    _, cipher, pwfile, _ = model
    policy = broker.Policy(deny_resources=("default/key/*",))
    with dev_broker({"default/key/model": pwfile.read_bytes()}, policy=policy) as url:
        r = run_agent(agent_env(url, cipher, tmp_path / "mnt"), *marker_cmd(tmp_path / "started"))
    assert_never_started(r, tmp_path / "started", tmp_path / "mnt", exitcodes.RUN_DENIED)


def test_wrong_key(model, tmp_path):
    _, cipher, _, _ = model
    with dev_broker({"default/key/model": b"not the password\n"}) as url:
        r = run_agent(agent_env(url, cipher, tmp_path / "mnt"), *marker_cmd(tmp_path / "started"))
    assert_never_started(r, tmp_path / "started", tmp_path / "mnt", exitcodes.RUN_WRONG_KEY)
    assert b"does not unlock" in r.stderr


def test_missing_key(model, tmp_path):
    _, cipher, _, _ = model
    with dev_broker({}) as url:
        r = run_agent(agent_env(url, cipher, tmp_path / "mnt"), *marker_cmd(tmp_path / "started"))
    assert_never_started(r, tmp_path / "started", tmp_path / "mnt", exitcodes.RUN_NOT_FOUND)


def test_broker_down(model, tmp_path):
    _, cipher, _, _ = model
    env = agent_env("http://127.0.0.1:9", cipher, tmp_path / "mnt")
    r = run_agent(env, *marker_cmd(tmp_path / "started"))
    assert_never_started(r, tmp_path / "started", tmp_path / "mnt", exitcodes.RUN_UNREACHABLE)


@pytest.mark.parametrize("change,code", [
    ({"DECRYPTION_KEY_URI": "kbs:///only/two"}, exitcodes.RUN_CONFIG),
    ({"DECRYPTION_KEY_URI": ""}, exitcodes.RUN_CONFIG),  # partial: the rest is set
    ({"ENCRYPTION_METHOD": "veracrypt"}, exitcodes.RUN_CONFIG),
    ({"ENCRYPTED_MODEL_PATH": "/nonexistent/cipher"}, exitcodes.RUN_CONFIG),
])
def test_bad_configuration(model, tmp_path, change, code):
    _, cipher, _, _ = model
    r = run_agent(agent_env("http://127.0.0.1:9", cipher, tmp_path / "mnt", **change),
                  *marker_cmd(tmp_path / "started"))
    assert_never_started(r, tmp_path / "started", tmp_path / "mnt", code)


def test_busy_mount_point(model, tmp_path):
    _, cipher, pwfile, _ = model
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (mnt / "something").write_bytes(b"x")
    with dev_broker({"default/key/model": pwfile.read_bytes()}) as url:
        r = run_agent(agent_env(url, cipher, mnt), *marker_cmd(tmp_path / "started"))
    assert r.returncode == exitcodes.RUN_MOUNT
    assert not (tmp_path / "started").exists()
    assert (mnt / "something").read_bytes() == b"x"


def test_plain_mode_just_runs_the_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TRUSTEE_URL", "DECRYPTION_KEY_URI",
                                                            "ENCRYPTED_MODEL_PATH", "MODEL_MOUNT_PATH",
                                                            "ENCRYPTION_METHOD")}
    r = subprocess.run([sys.executable, "-m", "agent", "run", "--", "sh", "-c", "exit 5"], env=env,
                       cwd=PROJECT, capture_output=True, timeout=60)
    assert r.returncode == 5
    r = subprocess.run([sys.executable, "-m", "agent", "run", "--", "/nonexistent/cmd"], env=env,
                       cwd=PROJECT, capture_output=True, timeout=60)
    assert r.returncode == exitcodes.RUN_COMMAND_NOT_FOUND


def wait_for(pred, timeout=30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_sigterm_reaches_the_command_and_the_mount_goes_away(model, tmp_path):
    _, cipher, pwfile, _ = model
    mnt, ready, got = tmp_path / "mnt", tmp_path / "ready", tmp_path / "got-term"
    script = (f"trap 'touch {got}; exit 143' TERM; touch {ready}; "
              "while :; do sleep 0.1; done")
    with dev_broker({"default/key/model": pwfile.read_bytes()}) as url:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--", "sh", "-c", script],
                                env=agent_env(url, cipher, mnt), cwd=PROJECT, stderr=subprocess.PIPE)
        try:
            assert wait_for(ready.exists), "the command never started"
            assert os.path.realpath(mnt) in fuse_mounts()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 143
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert got.exists()
    assert os.path.realpath(mnt) not in fuse_mounts()


def test_killing_the_mount_daemon_stops_the_command(model, tmp_path):
    _, cipher, pwfile, _ = model
    mnt, ready = tmp_path / "mnt", tmp_path / "ready"
    with dev_broker({"default/key/model": pwfile.read_bytes()}) as url:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--", "sh", "-c",
                                 f"touch {ready}; while :; do sleep 0.1; done"],
                                env=agent_env(url, cipher, mnt), cwd=PROJECT, stderr=subprocess.PIPE)
        try:
            assert wait_for(ready.exists)
            daemon = [p for p in _children(proc.pid) if b"cryptfs" in _cmdline(p)]
            assert daemon, "no mount daemon among the agent's children"
            os.kill(daemon[0], signal.SIGKILL)
            assert proc.wait(30) == exitcodes.RUN_MOUNT_DIED
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert wait_for(lambda: os.path.realpath(mnt) not in fuse_mounts(), 10)


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b") ", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def test_check_validates_without_fetching_the_key(model, tmp_path):
    _, cipher, pwfile, _ = model
    b = broker.Broker({"default/key/model": pwfile.read_bytes()}, "0.4.0", broker.Policy())
    released = []
    real = b.resource
    b.resource = lambda sid, path: (released.append(path), real(sid, path))[1]
    with serve_broker(b) as url:
        env = agent_env(url, cipher, tmp_path / "mnt")
        r = subprocess.run([sys.executable, "-m", "agent", "check"], env=env, cwd=PROJECT,
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
        out = r.stdout.decode()
        assert "FAIL" not in out and "speaks KBS protocol 0.4.0" in out and "/dev/fuse" in out
        env["ATTESTER"] = "auto"  # no TEE here: check names what it looked for
        r = subprocess.run([sys.executable, "-m", "agent", "check", "--attester", "auto"], env=env,
                           cwd=PROJECT, capture_output=True, timeout=60)
        assert r.returncode == exitcodes.RUN_ATTESTER
        assert "FAIL attester" in r.stdout.decode() and "configfs-tsm" in r.stdout.decode()
    assert released == []


def test_copy_mode_decrypts_into_ram(model, tmp_path):
    plain, cipher, pwfile, _ = model
    target = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="cryptfs-copy-test-"))
    target.rmdir()
    out = tmp_path / "probe.json"
    try:
        with dev_broker({"default/key/model": pwfile.read_bytes()}) as url:
            env = agent_env(url, cipher, target, PROBE_OUT=str(out), MOUNT_MODE="copy")
            r = run_agent(env, *probe_cmd())
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        seen = json.loads(out.read_text())
        want = {os.fsdecode(k) for k, v in snapshot(plain, times=False).items() if v[0] == "file"}
        assert set(seen["files"]) == want
        env = agent_env("http://127.0.0.1:9", cipher, tmp_path / "disk", MOUNT_MODE="copy")
        r = run_agent(env, "true")  # not RAM-backed: refused before anything else
        assert r.returncode == exitcodes.RUN_CONFIG and b"not tmpfs" in r.stderr
    finally:
        shutil.rmtree(target, ignore_errors=True)
