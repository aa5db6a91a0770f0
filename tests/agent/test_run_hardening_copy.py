"""agent run under mistakes, part two: MOUNT_MODE=copy leaves no plaintext, a stop before the
command leaves nothing, and the container wiring (a command given as one string, a variable for
every flag) fails before the key. Part one: test_run_hardening.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from agent import exitcodes
from tests.agent.support import (
    agent,
    agent_env,
    as_nobody,
    assert_never_started,
    counting_broker,
    encrypt,
    make_plain,
    marker_cmd,
    zero_second_block,
)
from tests.support import PROJECT, fuse_mounts

KEY = "default/key/model"
LOOP = "trap 'exit 143' TERM; trap 'exit 130' INT; touch {ready}; while :; do sleep 0.1; done"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hardening-copy")
    plain = make_plain(tmp / "plain")
    return plain, encrypt(plain, tmp / "cipher"), b"pw-hardening\n"


@pytest.fixture
def shm():
    """A fresh directory in /dev/shm (tmpfs) whose ``model`` child does not exist yet."""
    parent = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="agent-hardening-"))
    try:
        yield parent / "model"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def copy_env(url: str, cipher: Path, target: Path, **extra) -> dict:
    return agent_env(url, cipher, target, MOUNT_MODE="copy", **extra)


def wait_for(pred, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def agent_process(env: dict, *command: str):
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--", *command], env=env, cwd=PROJECT,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


# -- 13: the plaintext goes away on every way out, and a leftover is found before the key ---------
@pytest.mark.parametrize("code", [0, 3])
def test_copy_mode_removes_the_plaintext_when_the_command_exits(model, tmp_path, shm, code):
    _, cipher, secret = model
    seen = tmp_path / "seen"
    with counting_broker({KEY: secret}) as (url, _):
        r = agent(copy_env(url, cipher, shm), command=("sh", "-c", f"ls {shm} > {seen}; exit {code}"))
    assert r.returncode == code, r.stderr.decode()[-2000:]
    assert seen.read_text().split() == ["config.json", "model.safetensors", "sub"]
    assert not shm.exists()
    assert b"phase plaintext removed" in r.stderr


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_copy_mode_removes_the_plaintext_when_the_agent_is_stopped(model, tmp_path, shm, sig, code):
    _, cipher, secret = model
    ready = tmp_path / "ready"
    with counting_broker({KEY: secret}) as (url, _), \
            agent_process(copy_env(url, cipher, shm), "sh", "-c", LOOP.format(ready=ready)) as proc:
        assert wait_for(ready.exists), "the command never started"
        assert (shm / "config.json").exists()
        proc.send_signal(sig)
        assert proc.wait(30) == code
    assert not shm.exists()


def test_copy_mode_into_an_empty_directory_keeps_the_directory(model, shm):
    _, cipher, secret = model
    shm.mkdir()  # e.g. a tmpfs volume: the directory is the operator's, the files are ours
    with counting_broker({KEY: secret}) as (url, _):
        r = agent(copy_env(url, cipher, shm), command=("test", "-f", str(shm / "config.json")))
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert shm.is_dir() and os.listdir(shm) == []


def test_copy_mode_refuses_a_leftover_before_the_key(model, tmp_path, shm):
    _, cipher, secret = model
    shm.mkdir()
    (shm / "config.json").write_bytes(b"left by a killed agent")
    with counting_broker({KEY: secret}) as (url, calls):
        r = agent(copy_env(url, cipher, shm), command=marker_cmd(tmp_path / "started"))
        assert_never_started(r, tmp_path / "started", shm, exitcodes.RUN_CONFIG)
        assert b"is not empty" in r.stderr
        c = agent(copy_env(url, cipher, shm), sub="check")
        assert c.returncode == exitcodes.RUN_CONFIG and "FAIL copy target" in c.stdout.decode()
    assert "resource" not in calls  # check probes the broker (auth), run asked nothing
    assert (shm / "config.json").read_bytes() == b"left by a killed agent"  # not ours: left alone


# -- 1c/2 in copy mode: no holes, no FIFOs, no links leaving the tree ------------------------------
def test_copy_mode_refuses_an_all_zero_block(model, tmp_path, shm):
    _, cipher, secret = model
    holed = tmp_path / "holed"
    shutil.copytree(cipher, holed)
    zero_second_block(holed)
    with counting_broker({KEY: secret}) as (url, _):
        r = agent(copy_env(url, holed, shm), command=marker_cmd(tmp_path / "started"))
    assert_never_started(r, tmp_path / "started", shm, exitcodes.RUN_MOUNT)
    assert b"all-zero block" in r.stderr
    assert not shm.exists()


def test_copy_mode_writes_no_fifo_and_no_external_link(oracle, tmp_path, shm):
    cipher = tmp_path / "cipher"
    oracle.init(cipher)
    with oracle.mount(cipher, tmp_path / "g") as g:
        (g / "config.json").write_bytes(b"{}\n")
        os.symlink("/etc/hostname", g / "outside")
        os.symlink("config.json", g / "inside")
    seen = tmp_path / "seen"
    with counting_broker({KEY: b"test\n"}) as (url, _):
        r = agent(copy_env(url, cipher, shm), command=("sh", "-c", f"ls -A {shm} > {seen}"))
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert seen.read_text().split() == ["config.json", "inside"]
    # a FIFO in the cipher tree: the tree cannot be measured, so it is refused before the key
    with oracle.mount(cipher, tmp_path / "g") as g:
        os.mkfifo(g / "fifo")
    with counting_broker({KEY: b"test\n"}) as (url, calls):
        r = agent(copy_env(url, cipher, shm), command=("touch", str(tmp_path / "started")))
    assert_never_started(r, tmp_path / "started", shm, exitcodes.RUN_CONFIG)
    assert calls == [] and b"cannot be measured" in r.stderr


# -- 14: check, in copy mode, needs no FUSE -----------------------------------------------------
def test_check_in_copy_mode_does_not_need_dev_fuse(model, shm):
    _, cipher, secret = model
    with counting_broker({KEY: secret}) as (url, calls):
        env = {**copy_env(url, cipher, shm), "PYTHONPATH": str(PROJECT)}
        r = subprocess.run([*as_nobody(), sys.executable, "-m", "agent", "check"], env=env, cwd=PROJECT,
                           capture_output=True, timeout=60)  # a user that cannot open /dev/fuse
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()[-2000:]
    assert "/dev/fuse" not in out and "libfuse3" not in out and "ok   copy target" in out
    assert "resource" not in calls


# -- a stop before the command unwinds the run ---------------------------------------------------
@pytest.mark.parametrize("mode", ["fuse", "copy"])
def test_a_stop_while_the_key_is_fetched_leaves_nothing(model, tmp_path, shm, mode):
    _, cipher, secret = model
    asked, release = threading.Event(), threading.Event()

    def slow(b):
        real = b.resource
        b.resource = lambda *a: (asked.set(), release.wait(30), real(*a))[2]

    mnt = shm if mode == "copy" else tmp_path / "mnt"
    started = marker_cmd(tmp_path / "started")
    with counting_broker({KEY: secret}, hook=slow) as (url, _), \
            agent_process(agent_env(url, cipher, mnt, MOUNT_MODE=mode), *started) as proc:
        try:
            assert asked.wait(30), "the agent never asked for the key"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 143
        finally:
            release.set()
        err = proc.stderr.read()
    assert b"stopped by SIGTERM before the command started" in err and b"Traceback" not in err
    assert not (tmp_path / "started").exists() and not shm.exists()
    assert os.path.realpath(mnt) not in fuse_mounts()


# -- 18: container wiring -------------------------------------------------------------------------
def test_a_command_given_as_one_string_fails_before_the_key(model, tmp_path):
    _, cipher, secret = model
    with counting_broker({KEY: secret}) as (url, calls):
        r = agent(agent_env(url, cipher, tmp_path / "mnt"), command=("python server.py --port 8000",))
        assert r.returncode == exitcodes.RUN_USAGE
        assert b"sh -c 'python server.py --port 8000'" in r.stderr
    assert calls == []
    plain = {k: v for k, v in os.environ.items() if k not in ("TRUSTEE_URL", "DECRYPTION_KEY_URI")}
    assert agent(plain, command=("exit 3",)).returncode == exitcodes.RUN_USAGE  # without a mount too
    assert agent(plain, command=("sh", "-c", "exit 3")).returncode == 3


def test_every_variable_stands_for_its_flag(model, tmp_path):
    _, cipher, secret = model
    mnt = tmp_path / "mnt"
    with counting_broker({KEY: secret}) as (url, _):
        env = agent_env(url, cipher, mnt)
        assert agent({**env, "KBS_DIALECT": "0.1.0"}).returncode == exitcodes.RUN_VERSION_MISMATCH
        assert agent({**env, "KBS_DIALECT": "0.1.0"}, "--dialect", "0.4.0").returncode == 0  # the flag wins
        assert agent({**env, "MOUNT_MODE": "copy"}).returncode == exitcodes.RUN_CONFIG  # mnt is not tmpfs
        assert agent({**env, "MOUNT_MODE": "copy"}, "--mount-mode", "fuse").returncode == 0
        assert agent({**env, "KEY_ALG": "RSA-OAEP-256"}).returncode == 0
        for var, value in (("TRUSTEE_TIMEOUT", "soon"), ("TRUSTEE_TIMEOUT", "0"), ("ALLOW_DEBUG", "maybe"),
                           ("TRUSTEE_CA_BUNDLE", "/nonexistent.pem"), ("KEY_ALG", "DES"),
                           ("LOG_FORMAT", "xml"), ("TRUSTEE_REQUIRE_TLS", "2")):
            r = agent({**env, var: value}, command=marker_cmd(tmp_path / "started"))
            assert_never_started(r, tmp_path / "started", mnt, exitcodes.RUN_CONFIG)
            assert var.encode() in r.stderr, var
