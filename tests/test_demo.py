"""python -m agent demo: the whole flow, and nothing left behind (mount, process, files, secret)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

from conftest import PROJECT, fuse_mounts

from agent import demo


def test_demo_succeeds_and_cleans_up(tmp_path):
    r = subprocess.run([sys.executable, "-m", "agent", "demo", "--size-mb", "2", "--workdir", str(tmp_path)],
                       cwd=PROJECT, capture_output=True, timeout=180)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "demo: SUCCESS" in out and "all identical to the plaintext" in out
    assert list(tmp_path.iterdir()) == []  # the work dir is gone
    assert not [m for m in fuse_mounts() if m.startswith(str(tmp_path))]


def test_demo_never_prints_the_password(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(demo.secrets, "token_urlsafe", lambda n: "SECRET-PASSWORD-MARKER-1234")
    code = demo.cmd_demo(SimpleNamespace(keep=False, size_mb=1, workdir=str(tmp_path)))
    out, err = capfd.readouterr()
    assert code == 0, out + err
    assert "SECRET-PASSWORD-MARKER" not in out + err
    assert list(tmp_path.iterdir()) == []


def test_demo_keep_until_ctrl_c(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "agent", "demo", "--keep", "--size-mb", "1", "--workdir",
                             str(tmp_path)], cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline().decode()
            lines.append(line)
            if "stays up" in line or not line:
                break
        assert any("stays up" in x for x in lines), lines
        mounts = [m for m in fuse_mounts() if m.startswith(str(tmp_path))]
        assert len(mounts) == 1 and os.listdir(mounts[0])  # a user can look around
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert list(tmp_path.iterdir()) == []
    assert not [m for m in fuse_mounts() if m.startswith(str(tmp_path))]
