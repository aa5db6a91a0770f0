"""agent run with ENCRYPTION_METHOD=sam: the broker's secret is the packer's plaintext key.

The package is served only if the key unlocks it, its manifest authenticates, every file is
present, and (with EXPECTED_MODEL_DIGEST) it is exactly the pinned upload; otherwise the
command never starts and the exit code says why.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from agent import broker, exitcodes
from sam.pack import pack
from tests.agent.support import agent_env, assert_never_started, marker_cmd, probe_cmd, run_agent
from tests.support import PROJECT, fuse_mounts, serve_broker


@pytest.fixture(scope="module")
def sam_model(tmp_path_factory):
    """A small model with a symlinked blob, packed twice (an old and a current package)."""
    tmp = tmp_path_factory.mktemp("sam-model")
    plain = tmp / "plain"
    (plain / "tokenizer").mkdir(parents=True)
    (plain / "config.json").write_text('{"model_type": "llama"}\n')
    (plain / "tokenizer" / "vocab-größe.txt").write_text("a\nb\n")
    (tmp / "blob").write_bytes(secrets.token_bytes(200_000))
    (plain / "model.safetensors").symlink_to(tmp / "blob")
    (plain / "empty").write_bytes(b"")
    key = ("k-" + secrets.token_hex(8)).encode()
    old = pack(str(plain), key, "model-key-old1", str(tmp), scrypt_logn=10, progress=False)
    new = pack(str(plain), key, "model-key-0001", str(tmp), scrypt_logn=10, progress=False)
    want = {}
    for d, _, names in os.walk(plain, followlinks=True):
        for n in names:
            p = os.path.join(d, n)
            want[os.path.relpath(p, plain)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return key, Path(new.out_dir), new.digest, Path(old.out_dir), old.digest, want


def sam_env(url: str, pkg: Path, mnt: Path, **extra) -> dict:
    return agent_env(url, pkg, mnt, **{"ENCRYPTION_METHOD": "sam", **extra})


def test_serves_the_package_to_the_command(sam_model, tmp_path):
    key, pkg, digest, _, _, want = sam_model
    out, mnt = tmp_path / "probe.json", tmp_path / "mnt"
    with serve_broker(broker.Broker({"default/key/model": key}, "0.4.0", broker.Policy())) as url:
        r = run_agent(sam_env(url, pkg, mnt, PROBE_OUT=str(out), CODE="7", EXPECTED_MODEL_DIGEST=digest),
                      *probe_cmd())
    assert r.returncode == 7, r.stderr.decode()[-3000:]
    seen = json.loads(out.read_text())
    assert seen["files"] == want  # every file byte for byte, the symlinked blob included
    stderr = r.stderr.decode(errors="replace")
    assert key.decode() not in json.dumps(seen["env"]) + seen["cmdline"] + stderr
    assert f"digest={digest}" in stderr and "method=sam" in stderr
    assert os.path.realpath(mnt) not in fuse_mounts()


def test_a_trailing_newline_in_the_secret_is_the_key_file_rule(sam_model, tmp_path):
    key, pkg, _, _, _, want = sam_model
    out = tmp_path / "probe.json"
    with serve_broker(broker.Broker({"default/key/model": key + b"\n"}, "0.1.0", broker.Policy())) as url:
        r = run_agent(sam_env(url, pkg, tmp_path / "mnt", PROBE_OUT=str(out)), *probe_cmd())
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    assert json.loads(out.read_text())["files"] == want


def test_an_older_package_is_refused_before_the_key_is_fetched(sam_model, tmp_path):
    key, _, digest, old_pkg, old_digest, _ = sam_model
    assert old_digest != digest
    b = broker.Broker({"default/key/model": key}, "0.4.0", broker.Policy())
    released = []
    real = b.resource
    b.resource = lambda sid, path: (released.append(path), real(sid, path))[1]
    with serve_broker(b) as url:
        r = run_agent(sam_env(url, old_pkg, tmp_path / "mnt", EXPECTED_MODEL_DIGEST=digest),
                      *marker_cmd(tmp_path / "started"))
    assert_never_started(r, tmp_path / "started", tmp_path / "mnt", exitcodes.RUN_MODEL_REJECTED)
    assert old_digest in r.stderr.decode() and released == []


def test_wrong_key(sam_model, tmp_path):
    _, pkg, _, _, _, _ = sam_model
    with serve_broker(broker.Broker({"default/key/model": b"not-the-key"}, "0.4.0", broker.Policy())) as url:
        r = run_agent(sam_env(url, pkg, tmp_path / "mnt"), *marker_cmd(tmp_path / "started"))
    assert_never_started(r, tmp_path / "started", tmp_path / "mnt", exitcodes.RUN_WRONG_KEY)
    assert b"does not unlock the Sam package" in r.stderr


def test_a_secret_too_short_for_sam_is_a_configuration_error(sam_model, tmp_path):
    _, pkg, _, _, _, _ = sam_model
    with serve_broker(broker.Broker({"default/key/model": b"abc"}, "0.4.0", broker.Policy())) as url:
        r = run_agent(sam_env(url, pkg, tmp_path / "mnt"), *marker_cmd(tmp_path / "started"))
    assert_never_started(r, tmp_path / "started", tmp_path / "mnt", exitcodes.RUN_CONFIG)
    assert b"4 to 128 bytes" in r.stderr


def test_a_truncated_file_is_rejected_before_the_mount_appears(sam_model, tmp_path):
    key, pkg, _, _, _, _ = sam_model
    copy = tmp_path / "model-key-0001"
    shutil.copytree(pkg, copy)
    with open(copy / "model.safetensors", "r+b") as f:
        f.truncate(24 + 65536 + 28)  # one whole chunk left: cut at a chunk edge
    with serve_broker(broker.Broker({"default/key/model": key}, "0.4.0", broker.Policy())) as url:
        r = run_agent(sam_env(url, copy, tmp_path / "mnt"), *marker_cmd(tmp_path / "started"))
    assert_never_started(r, tmp_path / "started", tmp_path / "mnt", exitcodes.RUN_MODEL_REJECTED)
    assert b"model.safetensors" in r.stderr


@pytest.mark.parametrize("change,message", [
    ({"ENCRYPTION_METHOD": "gocryptfs", "EXPECTED_MODEL_DIGEST": "sha256:" + "0" * 64},
     b"set ENCRYPTION_METHOD=sam"),
    ({"EXPECTED_MODEL_DIGEST": "sha256:abc"}, b"64 lowercase hex digits"),
    ({"ENCRYPTED_MODEL_PATH": str(PROJECT)}, b"not a usable Sam package"),
])
def test_bad_sam_configuration(sam_model, tmp_path, change, message):
    _, pkg, _, _, _, _ = sam_model
    r = run_agent(sam_env("http://127.0.0.1:9", pkg, tmp_path / "mnt", **change),
                  *marker_cmd(tmp_path / "started"))
    assert_never_started(r, tmp_path / "started", tmp_path / "mnt", exitcodes.RUN_CONFIG)
    assert message in r.stderr


def test_copy_mode_unpacks_into_ram(sam_model, tmp_path):
    key, pkg, digest, _, _, want = sam_model
    target = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="sam-copy-test-"))
    target.rmdir()
    out = tmp_path / "probe.json"
    try:
        with serve_broker(broker.Broker({"default/key/model": key}, "0.4.0", broker.Policy())) as url:
            env = sam_env(url, pkg, target, PROBE_OUT=str(out), MOUNT_MODE="copy",
                          EXPECTED_MODEL_DIGEST=digest)
            r = run_agent(env, *probe_cmd())
        assert r.returncode == 0, r.stderr.decode()[-3000:]
        assert json.loads(out.read_text())["files"] == want
    finally:
        shutil.rmtree(target, ignore_errors=True)


def test_check_shows_the_digest_without_the_key(sam_model, tmp_path):
    key, pkg, digest, old_pkg, _, _ = sam_model
    with serve_broker(broker.Broker({"default/key/model": key}, "0.4.0", broker.Policy())) as url:
        env = sam_env(url, pkg, tmp_path / "mnt", EXPECTED_MODEL_DIGEST=digest)
        r = subprocess.run([sys.executable, "-m", "agent", "check"], env=env, cwd=PROJECT,
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
        assert f"digest {digest} (matches EXPECTED_MODEL_DIGEST)" in r.stdout.decode()
        env["ENCRYPTED_MODEL_PATH"] = str(old_pkg)
        r = subprocess.run([sys.executable, "-m", "agent", "check"], env=env, cwd=PROJECT,
                           capture_output=True, timeout=60)
        assert r.returncode == exitcodes.RUN_MODEL_REJECTED
        assert "FAIL sam package" in r.stdout.decode()
