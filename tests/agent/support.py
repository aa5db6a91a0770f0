"""Helpers of the agent run tests (tests/agent/test_run*.py): the probe command, the agent's
environment, running it, and the never-started check; for the hardening tests a broker that
counts what it was asked, a small model, a tampered block and a non-root user."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent import broker
from cryptfs.config import FsParams
from cryptfs.encrypt import encrypt_tree
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


# -- the hardening tests (test_run_hardening*.py) --------------------------------------------
@contextlib.contextmanager
def counting_broker(resources: dict, dialect: str = "0.4.0", hook=None):
    """The dev broker; yields its URL and the list of the calls it answered (auth, attest, resource).

    ``hook(broker)`` may wrap its methods first (e.g. to make the key release slow)."""
    b = broker.Broker(resources, dialect, broker.Policy())
    if hook is not None:
        hook(b)
    calls: list[str] = []
    for name in ("auth", "attest", "resource"):
        real = getattr(b, name)
        setattr(b, name, lambda *a, _n=name, _r=real: (calls.append(_n), _r(*a))[1])
    with serve_broker(b) as url:
        yield url, calls


def agent(env: dict, *args: str, command: tuple[str, ...] = ("true",), sub: str = "run",
          timeout: float = 120) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "agent", sub, *args] + (["--", *command] if sub == "run" else [])
    return subprocess.run(argv, env=env, cwd=PROJECT, capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def make_plain(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_bytes(b'{"model_type": "llama"}\n')
    (root / "model.safetensors").write_bytes(os.urandom(3 * 4096 + 100))
    (root / "sub" / "tokenizer.json").write_bytes(b"{}\n")
    return root


def encrypt(plain: Path, cipher: Path, password: bytes = b"pw-hardening", **params) -> Path:
    encrypt_tree(str(plain), str(cipher), password, FsParams(**params), 10, progress=False)
    return cipher


def zero_second_block(cipher: Path) -> None:
    """Zero the second 4 KiB block of the largest cipher file (model.safetensors)."""
    files = [p for p in cipher.rglob("*") if p.is_file() and p.name != "gocryptfs.conf"]
    target = max(files, key=lambda p: p.stat().st_size)
    with open(target, "r+b") as f:
        f.seek(18 + 4096 + 32)  # header, then block 0 (4096 + 32 bytes of nonce and tag)
        f.write(bytes(4096 + 32))


def as_nobody() -> list[str]:
    """Run as uid 65534 that may still read root's files (not write them, not open /dev/fuse)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=+dac_read_search",
            "--ambient-caps=+dac_read_search"]
