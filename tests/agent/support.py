"""Helpers of the agent run tests (tests/agent/test_run*.py): the probe command, the agent's
environment, running it, and the never-started check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agent import broker
from tests.support import PROJECT, fuse_mounts, serve_broker

# The command: report what it sees (argv, environment, the tree's files) and exit with $CODE.
PROBE = r"""
import json, os, sys, hashlib
root = os.environ["MODEL_MOUNT_PATH"]
files = {}
for d, _, names in os.walk(root):
    for n in names:
        p = os.path.join(d, n)
        if not os.path.islink(p):
            files[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
json.dump({"argv": sys.argv, "env": dict(os.environ), "files": files,
           "cmdline": open("/proc/self/cmdline", "rb").read().decode(errors="replace")},
          open(os.environ["PROBE_OUT"], "w"))
sys.exit(int(os.environ.get("CODE", "0")))
"""



def dev_broker(resources: dict, dialect="0.4.0", policy=None):
    return serve_broker(broker.Broker(resources, dialect, policy or broker.Policy()))


def agent_env(url: str, cipher: Path, mnt: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TRUSTEE_URL", "DECRYPTION_KEY_URI", "ENCRYPTED_MODEL_PATH", "MODEL_MOUNT_PATH",
                        "ENCRYPTION_METHOD", "ATTESTER")}
    env.update({"TRUSTEE_URL": url, "DECRYPTION_KEY_URI": "kbs:///default/key/model",
                "ENCRYPTED_MODEL_PATH": str(cipher), "MODEL_MOUNT_PATH": str(mnt), "ATTESTER": "sample",
                "ENCRYPTION_METHOD": "gocryptfs"})
    env.update(extra)
    return env


def run_agent(env: dict, *command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", "run", "--", *command], env=env, cwd=PROJECT,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def probe_cmd() -> list[str]:
    return [sys.executable, "-c", PROBE, "arg with space", "$HOME"]


def assert_never_started(r, marker: Path, mnt: Path, code: int) -> None:
    assert r.returncode == code, (r.returncode, r.stderr.decode()[-2000:])
    assert not marker.exists(), "the command started"
    assert os.path.realpath(mnt) not in fuse_mounts()
    assert b"Traceback" not in r.stderr


def marker_cmd(marker: Path) -> list[str]:
    return ["sh", "-c", f"touch {marker}"]
