"""agent run under attack and under mistakes (issue "Hold under attack and under mistakes").

Each test runs the agent's CLI as a container would and checks two things: the refusal comes
before the key is released (the broker counts what it was asked), and nothing is left behind
(no mount removed that the agent did not make, no plaintext in tmpfs). Copy mode, signals and
the container wiring are in test_run_hardening_copy.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent import cli, exitcodes
from agent.run.config import ENV
from cryptfs.core.version import VERSION
from cryptfs.cryptocore import XCHACHA
from sam.pack import pack
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
from tests.support import PROJECT, cryptfs_mount

KEY = "default/key/model"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hardening")
    plain = make_plain(tmp / "plain")
    return plain, encrypt(plain, tmp / "cipher"), b"pw-hardening\n"


def set_flags(cipher: Path, flags: list[str]) -> None:
    conf = cipher / "gocryptfs.conf"
    obj = json.loads(conf.read_text())
    obj["FeatureFlags"] = flags
    conf.write_text(json.dumps(obj))


# -- 1b: only gocryptfs' default flags, the rest when GOCRYPTFS_FLAGS allows it -----------------
def test_a_conf_rewritten_to_plaintextnames_is_refused_before_the_key(model, tmp_path):
    _, cipher, secret = model
    forged = tmp_path / "forged"
    shutil.copytree(cipher, forged)
    set_flags(forged, ["HKDF", "GCMIV128", "PlaintextNames"])  # what a bucket writer would do
    with counting_broker({KEY: secret}) as (url, calls):
        env = agent_env(url, forged, tmp_path / "mnt")
        r = agent(env, command=marker_cmd(tmp_path / "started"))
        assert_never_started(r, tmp_path / "started", tmp_path / "mnt", exitcodes.RUN_CONFIG)
        err = r.stderr.decode()
        assert "PlaintextNames" in err and "GOCRYPTFS_FLAGS" in err
        c = agent(env, sub="check")
        assert c.returncode == exitcodes.RUN_CONFIG and "FAIL cipher dir" in c.stdout.decode()
        assert "PlaintextNames" in c.stdout.decode()
    assert "resource" not in calls


@pytest.mark.parametrize("params,flag", [({"content": XCHACHA}, "XChaCha20Poly1305"),
                                         ({"diriv": False}, "DeterministicNames"),
                                         ({"plaintext_names": True}, "PlaintextNames")])
def test_other_flags_need_gocryptfs_flags(tmp_path, params, flag):
    plain = make_plain(tmp_path / "plain")
    cipher = encrypt(plain, tmp_path / "cipher", **params)
    mnt, out = tmp_path / "mnt", tmp_path / "seen"
    with counting_broker({KEY: b"pw-hardening\n"}) as (url, calls):
        env = agent_env(url, cipher, mnt)
        r = agent(env, command=marker_cmd(tmp_path / "started"))
        assert_never_started(r, tmp_path / "started", mnt, exitcodes.RUN_CONFIG)
        err = r.stderr.decode()
        assert f"feature flag {flag} is not allowed" in err and "GOCRYPTFS_FLAGS" in err
        assert calls == []  # refused before any request
        listing = ("sh", "-c", f"ls {mnt} > {out}")
        r = agent({**env, "GOCRYPTFS_FLAGS": f"LongNameMax, {flag.lower()}"}, command=listing)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        r = agent(env, "--gocryptfs-flags", flag, command=listing)  # the flag does the same
        assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert out.read_text().split() == ["config.json", "model.safetensors", "sub"]


def test_unknown_gocryptfs_flags_token(model, tmp_path):
    _, cipher, _ = model
    r = agent(agent_env("http://127.0.0.1:9", cipher, tmp_path / "mnt", GOCRYPTFS_FLAGS="FIDO2"))
    assert r.returncode == exitcodes.RUN_CONFIG and b"GOCRYPTFS_FLAGS: unknown flag 'FIDO2'" in r.stderr


# -- 1c/2: no holes through the mount ------------------------------------------------------------
def test_the_mount_refuses_an_all_zero_block(model, tmp_path):
    plain, cipher, secret = model
    holed = tmp_path / "holed"
    shutil.copytree(cipher, holed)
    zero_second_block(holed)
    mnt, out = tmp_path / "mnt", tmp_path / "read"
    read = ("import os, sys\ntry:\n    open(os.path.join(sys.argv[1], 'model.safetensors'), 'rb').read()\n"
            "    r = 'read'\nexcept OSError as e:\n    r = e.errno\nopen(sys.argv[2], 'w').write(str(r))")
    with counting_broker({KEY: secret}) as (url, _):
        r = agent(agent_env(url, holed, mnt), command=(sys.executable, "-c", read, str(mnt), str(out)))
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert out.read_text() == "5"  # EIO, not 4 KiB of zeros
    assert b"all-zero block" in r.stderr


# -- 3: plain http -------------------------------------------------------------------------------
def test_http_broker_warns_once_and_require_tls_refuses_it(model, tmp_path):
    _, cipher, secret = model
    with counting_broker({KEY: secret}) as (url, calls):
        env = agent_env(url, cipher, tmp_path / "mnt")
        r = agent(env)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        lines = [line for line in r.stderr.decode().splitlines() if "plain http" in line]
        assert len(lines) == 1 and "WARNING" in lines[0]
        assert "TRUSTEE_CA_BUNDLE" in lines[0] and "EXPECTED_MODEL_DIGEST" in lines[0]
        del calls[:]
        for extra, args in (({"TRUSTEE_REQUIRE_TLS": "1"}, ()), ({}, ("--require-tls",))):
            r = agent({**env, **extra}, *args, command=marker_cmd(tmp_path / "started"))
            assert_never_started(r, tmp_path / "started", tmp_path / "mnt", exitcodes.RUN_CONFIG)
            assert b"TRUSTEE_REQUIRE_TLS" in r.stderr
        c = agent({**env, "TRUSTEE_REQUIRE_TLS": "yes"}, sub="check")
        assert c.returncode == exitcodes.RUN_CONFIG
        assert calls == []  # not one request
        assert "warn TRUSTEE_URL" in agent(env, sub="check").stdout.decode()


# -- 12: never unmount what this run did not mount -----------------------------------------------
@pytest.fixture
def other_cipher(tmp_path):
    return encrypt(make_plain(tmp_path / "other-plain"), tmp_path / "other", b"test")


@contextlib.contextmanager
def tmpfs_mount(mnt: Path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.mark.parametrize("kind", ["gocryptfs", "cryptfs", "tmpfs"])
def test_an_existing_mount_is_never_unmounted(model, tmp_path, oracle, other_cipher, kind):
    _, cipher, secret = model
    mnt = tmp_path / "mnt"
    existing = {"gocryptfs": lambda: oracle.mount(other_cipher, mnt), "tmpfs": lambda: tmpfs_mount(mnt),
                "cryptfs": lambda: cryptfs_mount(other_cipher, mnt)}[kind]
    with existing(), counting_broker({KEY: secret}) as (url, calls):
        before = mounted(mnt)
        r = agent(agent_env(url, cipher, mnt), command=marker_cmd(tmp_path / "started"))
        assert r.returncode == exitcodes.RUN_MOUNT, r.stderr.decode()[-2000:]
        assert b"already a mount point" in r.stderr and not (tmp_path / "started").exists()
        assert mounted(mnt) == before  # still there, still the same one
        assert calls == []  # refused before the key
        c = agent(agent_env(url, cipher, mnt), sub="check")
        assert c.returncode == exitcodes.RUN_MOUNT and "FAIL mount point" in c.stdout.decode()


def mounted(path: Path) -> str | None:
    """The /proc/self/mountinfo line of the mount at ``path`` (its ID and source), or None."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if line.split()[4] == target:
                return line
    return None


# -- 14: check what run needs, in its mode; configuration errors are 112 --------------------------
def test_check_and_run_need_libfuse3(model, tmp_path):
    _, cipher, secret = model
    with counting_broker({KEY: secret}) as (url, calls):
        env = agent_env(url, cipher, tmp_path / "mnt", FUSE_LIBRARY_PATH="/nonexistent/libfuse3.so.3")
        c = agent(env, sub="check")
        assert c.returncode == exitcodes.RUN_MOUNT
        line = next(x for x in c.stdout.decode().splitlines() if "libfuse3" in x)
        assert line.startswith("FAIL") and "MOUNT_MODE=copy" in line
        r = agent(env, command=marker_cmd(tmp_path / "started"))
        assert_never_started(r, tmp_path / "started", tmp_path / "mnt", exitcodes.RUN_MOUNT)
        assert b"MOUNT_MODE=copy" in r.stderr
    assert "resource" not in calls


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "kbs.example.com", "ftp://kbs.example.com", "http://"])
def test_a_broker_url_without_http_scheme_is_a_configuration_error(model, tmp_path, url):
    _, cipher, _ = model
    env = agent_env(url, cipher, tmp_path / "mnt")
    c = agent(env, sub="check")
    assert c.returncode == exitcodes.RUN_CONFIG and c.stdout.decode().startswith("FAIL configuration")
    assert "TRUSTEE_URL" in c.stdout.decode()
    r = agent(env, command=marker_cmd(tmp_path / "started"))
    assert_never_started(r, tmp_path / "started", tmp_path / "mnt", exitcodes.RUN_CONFIG)


def test_check_as_non_root_needs_root_for_fuse_not_a_device(model, tmp_path):
    _, cipher, _ = model
    env = {**agent_env("http://127.0.0.1:9", cipher, tmp_path / "mnt"), "PYTHONPATH": str(PROJECT)}
    r = subprocess.run([*as_nobody(), sys.executable, "-m", "agent", "check"], env=env, cwd=PROJECT,
                       capture_output=True, timeout=60)
    line = next(x for x in r.stdout.decode().splitlines() if "/dev/fuse" in x)
    assert line.startswith("FAIL") and "needs root (or CAP_SYS_ADMIN)" in line and "MOUNT_MODE=copy" in line
    assert "--device" not in line


# -- 17: the wrong kind of directory --------------------------------------------------------------
def test_the_wrong_kind_of_model_directory_is_named_before_the_key(model, tmp_path):
    plain, cipher, secret = model
    package = pack(str(plain), b"k-0123456789", "model-key-0001", str(tmp_path), scrypt_logn=10,
                   progress=False).out_dir
    cases = [(plain, "gocryptfs", "looks like a plaintext model"),
             (plain, "sam", "looks like a plaintext model"),
             (package, "gocryptfs", "set ENCRYPTION_METHOD=sam"),
             (cipher, "sam", "set ENCRYPTION_METHOD=gocryptfs"),
             (tmp_path, "sam", "set ENCRYPTED_MODEL_PATH to the package directory")]
    with counting_broker({KEY: secret}) as (url, calls):
        for path, method, words in cases:
            env = agent_env(url, Path(path), tmp_path / "mnt", ENCRYPTION_METHOD=method)
            r = agent(env, command=marker_cmd(tmp_path / "started"))
            assert_never_started(r, tmp_path / "started", tmp_path / "mnt", exitcodes.RUN_CONFIG)
            assert words in r.stderr.decode(), (path, method, r.stderr.decode()[-1000:])
            assert words in agent(env, sub="check").stdout.decode()
    assert "resource" not in calls


# -- 19: hints, JSON logs, --version --------------------------------------------------------------
def test_kbs_uri_with_two_slashes_gets_a_hint(model, tmp_path):
    _, cipher, _ = model
    env = agent_env("http://127.0.0.1:9", cipher, tmp_path / "mnt", DECRYPTION_KEY_URI="kbs://default/key/model")
    r = agent(env)
    assert r.returncode == exitcodes.RUN_CONFIG and b"did you mean kbs:///default/key/model" in r.stderr


def test_json_logs_include_the_mount_daemon(model, tmp_path):
    _, cipher, secret = model
    with counting_broker({KEY: secret}) as (url, _):
        for args, extra in ((("--log-format", "json"), {}), ((), {"LOG_FORMAT": "json"})):
            r = agent(agent_env(url, cipher, tmp_path / "mnt", **extra), *args)
            assert r.returncode == 0, r.stderr.decode()[-2000:]
            records = [json.loads(line) for line in r.stderr.decode().splitlines()]  # every line is JSON
            daemon = [rec for rec in records if rec.get("logger") == "cryptfs.mount"]
            assert any("mounted" in rec["message"] for rec in daemon)
            assert {"ts", "level", "message"} <= set(daemon[0])


def test_version():
    r = subprocess.run([sys.executable, "-m", "agent", "--version"], cwd=PROJECT, capture_output=True,
                       text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"agent {VERSION}"


def test_every_run_flag_has_a_variable():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    for command in ("run", "check"):
        for action in sub.choices[command]._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.dest in ENV, f"{action.option_strings[0]} has no variable"
            assert ENV[action.dest] in action.help, action.option_strings[0]
            assert action.default is None, f"{action.option_strings[0]}: a default would hide the variable"
