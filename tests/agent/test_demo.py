"""python -m agent demo: the whole flow, and nothing left behind (mount, process, files, secret)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from agent import broker, demo, exitcodes
from tests.support import PROJECT, fuse_mounts


def processes_using(path) -> list[str]:
    """Live processes (not zombies, not this one) whose argv or environment names path."""
    needle = os.fsencode(str(path))
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if needle in cmdline or needle in environ:
            argv = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry}: {argv}")
    return found


def assert_nothing_left(tmp_path) -> None:
    assert list(tmp_path.iterdir()) == []  # the work dir is gone
    assert not [m for m in fuse_mounts() if m.startswith(str(tmp_path))]
    assert processes_using(tmp_path) == []  # no agent run, mount daemon or command


@pytest.mark.parametrize("method", ["gocryptfs", "sam"])
def test_demo_succeeds_and_cleans_up(tmp_path, method):
    r = subprocess.run([sys.executable, "-m", "agent", "demo", "--size-mb", "2", "--workdir", str(tmp_path),
                        "--method", method], cwd=PROJECT, capture_output=True, timeout=120)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "demo: SUCCESS" in out and "all identical to the plaintext" in out
    assert "read 4 files and" in out  # config, tokenizer, tokenizer_config, model.safetensors
    if method == "sam":
        err = r.stderr.decode()
        assert "digest sha256:" in out and "method=sam" in err and "pinned=True" in err
    assert_nothing_left(tmp_path)


def test_demo_never_prints_the_password(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(demo.secrets, "token_urlsafe", lambda n: "SECRET-PASSWORD-MARKER-1234")
    code = demo.cmd_demo(SimpleNamespace(keep=False, size_mb=1, workdir=str(tmp_path)))
    out, err = capfd.readouterr()
    assert code == 0, out + err
    assert "SECRET-PASSWORD-MARKER" not in out + err
    assert_nothing_left(tmp_path)


def test_demo_model_is_deterministic(tmp_path):
    demo.make_model(str(tmp_path / "a"), 1)
    demo.make_model(str(tmp_path / "b"), 1)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "model.safetensors").stat().st_size > 900_000


def test_demo_failure_passes_the_run_code_and_cleans_up(tmp_path, monkeypatch, capfd):
    class WrongKeyBroker(broker.Broker):  # holds a password that does not unlock the model
        def __init__(self, resources, *a, **kw):
            super().__init__({k: b"not-the-password\n" for k in resources}, *a, **kw)

    monkeypatch.setattr(broker, "Broker", WrongKeyBroker)
    code = demo.cmd_demo(SimpleNamespace(keep=False, size_mb=1, workdir=str(tmp_path)))
    out, err = capfd.readouterr()
    assert code == exitcodes.RUN_WRONG_KEY, out + err
    assert f"demo: FAILED with exit code {exitcodes.RUN_WRONG_KEY}" in out and "SUCCESS" not in out
    assert_nothing_left(tmp_path)


def test_demo_signal_before_the_agent_starts(tmp_path, monkeypatch, capfd):
    made = []

    def make_model_then_sigterm(path, size_mb):
        os.makedirs(path)
        made.append(path)
        os.kill(os.getpid(), signal.SIGTERM)  # as if `kill PID` arrived while the model was made
        time.sleep(5)  # the handler interrupts this

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(demo, "make_model", make_model_then_sigterm)
    t = time.monotonic()
    code = demo.cmd_demo(SimpleNamespace(keep=False, size_mb=1, workdir=str(tmp_path)))
    out, _ = capfd.readouterr()
    assert code == 128 + signal.SIGTERM and time.monotonic() - t < 4
    assert made and "stopped by SIGTERM" in out
    assert signal.getsignal(signal.SIGTERM) is before  # the demo's handler is removed again
    assert_nothing_left(tmp_path)


def _start_keep(work, log) -> subprocess.Popen:
    """Start ``demo --keep`` in its own session (a terminal's foreground group); wait for the mount.

    Its output goes to a file, not a pipe: a leftover process holding a pipe open would hang the test.
    """
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "demo", "--keep", "--size-mb", "1",
                                 "--workdir", str(work)], cwd=PROJECT, stdout=out, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + 120
    while "stays up" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "stays up" in log.read_text(), log.read_text()
    mounts = [m for m in fuse_mounts() if m.startswith(str(work))]
    assert len(mounts) == 1 and sorted(os.listdir(mounts[0])) == [
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]  # look around
    return proc


@pytest.mark.parametrize("how", ["ctrl-c", "kill-INT", "kill-TERM"])
def test_demo_keep_until_signalled(tmp_path, how):
    work, log = tmp_path / "work", tmp_path / "demo.log"
    work.mkdir()
    proc = _start_keep(work, log)
    try:
        t = time.monotonic()
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole foreground group
        else:  # the demo's PID only: it must forward the signal itself
            os.kill(proc.pid, signal.SIGINT if how == "kill-INT" else signal.SIGTERM)
        code = proc.wait(60)
        elapsed = time.monotonic() - t
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        left = processes_using(work)
        for line in left:  # never leave them running, even when the test fails
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
    assert left == []
    assert code == 0 and "demo: SUCCESS" in log.read_text(), log.read_text()
    assert elapsed < 20  # forwarded at once, not after the demo's kill timeout
    assert_nothing_left(work)


def test_demo_without_fuse_copies_into_ram(tmp_path, monkeypatch, capfd):
    """A fresh machine without fuse3: the quickstart's demo still runs, via MOUNT_MODE=copy."""
    import os as _os

    monkeypatch.setattr(demo, "fuse_usable", lambda: False)
    before = set(_os.listdir("/dev/shm"))
    code = demo.cmd_demo(SimpleNamespace(keep=False, size_mb=1, workdir=str(tmp_path)))
    out, err = capfd.readouterr()
    assert code == 0, out + err
    assert "MOUNT_MODE=copy" in out and "demo: SUCCESS" in out
    assert set(_os.listdir("/dev/shm")) == before and list(tmp_path.iterdir()) == []
