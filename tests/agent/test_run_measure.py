"""Measured launch in agent run: the events it measures before the key, MEASURE, MODEL_ID, the
pinned gocryptfs mount (EXPECTED_MODEL_DIGEST, a tree changed after measuring), ``agent
reference``, and the dev broker releasing the key only for the registered model.

The ``system`` attester measures into a software register (a file here), so the whole chain
runs without a TEE: the log the agent writes is parsed and replayed to the register, and the
dev broker replays it again and applies Trustee's PAI rule.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from agent import broker, exitcodes
from agent.measure import Event, SystemRegister, parse_events, replay
from cryptfs.digest import tree_digest
from sam.pack import pack
from sam.package import Package
from tests.agent.support import agent, agent_env, assert_never_started, encrypt, make_plain, marker_cmd
from tests.support import PROJECT, fuse_mounts, serve_broker

KEY = "default/key/model"
SECRET = b"pw-hardening\n"
SAM_KEY = b"k-measured-launch"
OTHER = "sha256:" + "b" * 64


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return make_plain(tmp_path_factory.mktemp("measure") / "plain")


@pytest.fixture(scope="module")
def model(plain):
    """The gocryptfs tree (never changed: tests that change a tree copy it first)."""
    return encrypt(plain, plain.parent / "cipher")


@pytest.fixture(scope="module")
def sam_pkg(plain):
    return Path(pack(str(plain), SAM_KEY, "measure-key-01", str(plain.parent), scrypt_logn=10,
                     progress=False).out_dir)


@pytest.fixture
def system(tmp_path):
    """ATTESTER=system with its register and log under tmp_path (neither exists yet)."""
    return {"ATTESTER": "system", "SYSTEM_MEASURE_REGISTER": str(tmp_path / "run" / "register"),
            "AAEL_PATH": str(tmp_path / "run" / "eventlog")}


def registered(digest: str, model_id: str = "model") -> broker.Policy:
    """The PAI rule with ``digest`` registered for ``model_id``: a measured model that is not
    registered is denied the key (as in Trustee), so every measured run needs its reference."""
    return broker.Policy(reference={f"measurement.model.{model_id}": [digest]})


@contextlib.contextmanager
def watching_broker(resources: dict, policy: broker.Policy | None = None, on=None):
    """The dev broker; yields its URL and the calls it answered. ``on[name]()`` runs when call
    ``name`` (auth, attest, resource) arrives, before it is answered."""
    b = broker.Broker(resources, "0.4.0", policy or broker.Policy())
    calls: list[str] = []
    for name in ("auth", "attest", "resource"):
        real = getattr(b, name)

        def hooked(*a, _n=name, _r=real):
            calls.append(_n)
            if on and _n in on:
                on[_n]()
            return _r(*a)
        setattr(b, name, hooked)
    with serve_broker(b) as url:
        yield url, calls


@contextlib.contextmanager
def silent_listener():
    """A port that accepts TCP connections but never answers; yields (url, contacted())."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)

    def contacted() -> bool:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", contacted
    finally:
        sock.close()


def events_of(env: dict) -> list[Event]:
    """The events in AAEL_PATH, checked to replay to the system register."""
    path = Path(env["AAEL_PATH"])
    events = parse_events(path.read_bytes()) if path.exists() else []
    assert replay(events) == SystemRegister(env["SYSTEM_MEASURE_REGISTER"]).read()
    return events


def expected_texts(model_id: str, digest: str, command: list[str], mnt: Path, method: str,
                   mode: str = "fuse") -> list[str]:
    """The two event texts, written out independently of agent.run.launch."""
    content = json.dumps({"argv": command, "mount": str(mnt), "method": method, "mode": mode},
                         separators=(",", ":"), ensure_ascii=False)
    return [f'trustiflux.alibaba.com pai/load-model {{"model-id":"{model_id}","hash":"{digest}"}}',
            f"cryptfs.agent run/command {content}"]


def copy_tree(cipher: Path, tmp_path: Path) -> Path:
    target = tmp_path / "cipher"
    shutil.copytree(cipher, target, symlinks=True)
    return target


def largest(cipher: Path) -> Path:
    """The cipher file of model.safetensors (the largest plaintext file)."""
    files = [p for p in cipher.rglob("*") if p.is_file() and not p.name.startswith("gocryptfs.")]
    return max(files, key=lambda p: p.stat().st_size)


def reference(*args: str) -> subprocess.CompletedProcess:
    """``python -m agent reference ARGS``, as the owner runs it."""
    return subprocess.run([sys.executable, "-m", "agent", "reference", *args], cwd=PROJECT,
                          capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


# -- what run measures, and when -----------------------------------------------------------------
def test_run_measures_the_model_and_the_command_before_the_key(model, tmp_path, system):
    mnt, marker = tmp_path / "mnt", tmp_path / "started"
    seen_at: dict[str, list[str]] = {}
    env = agent_env("", model, mnt, **system)

    def snapshot(name: str):
        return lambda: seen_at.setdefault(name, [e.text for e in events_of(env)])
    digest = tree_digest(str(model)).digest
    hooks = {"auth": snapshot("auth"), "resource": snapshot("resource")}
    with watching_broker({KEY: SECRET}, registered(digest), hooks) as (url, calls):
        r = agent({**env, "TRUSTEE_URL": url}, command=tuple(marker_cmd(marker)))
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert marker.exists() and calls == ["auth", "attest", "resource"]
    want = expected_texts("model", digest, marker_cmd(marker), mnt, "gocryptfs")  # model: the key URI's tag
    assert seen_at["auth"] == want  # both events, before the first request reached the broker
    assert seen_at["resource"] == want and [e.text for e in events_of(env)] == want  # and nothing after
    assert all(e.mr_index == 1 for e in events_of(env))
    assert "phase measure: " in r.stderr.decode() and f"model_id=model hash={digest}" in r.stderr.decode()


@pytest.mark.parametrize("how", ["env", "flag"])
def test_model_id_from_model_id_overrides_the_tag(model, tmp_path, system, how):
    env = agent_env("", model, tmp_path / "mnt", **system)
    args: tuple[str, ...] = ()
    if how == "env":
        env["MODEL_ID"] = "qwen2.5-7b"
    else:
        args = ("--model-id", "qwen2.5-7b")
    with watching_broker({KEY: SECRET}, registered(tree_digest(str(model)).digest, "qwen2.5-7b")) as (url, _):
        r = agent({**env, "TRUSTEE_URL": url}, *args)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    content = json.loads(events_of(env)[0].content)
    assert content == {"model-id": "qwen2.5-7b", "hash": tree_digest(str(model)).digest}


def test_a_bad_model_id_is_a_configuration_error(model, tmp_path, system):
    with silent_listener() as (url, contacted):
        r = agent(agent_env(url, model, tmp_path / "mnt", MODEL_ID="has space", **system))
        assert not contacted()
    assert r.returncode == exitcodes.RUN_CONFIG and b"MODEL_ID='has space'" in r.stderr


def test_measure_required_without_a_register_stops_before_any_request(model, tmp_path):
    mnt, marker = tmp_path / "mnt", tmp_path / "started"
    with silent_listener() as (url, contacted):
        r = agent(agent_env(url, model, mnt, ATTESTER="sample", MEASURE="required",
                            AAEL_PATH=str(tmp_path / "eventlog")), command=tuple(marker_cmd(marker)))
        assert not contacted(), "the broker was contacted"
    assert_never_started(r, marker, mnt, exitcodes.RUN_ATTESTER)
    assert b"MEASURE=required, but the model cannot be measured" in r.stderr
    assert not (tmp_path / "eventlog").exists()


def test_measure_required_with_a_register_runs(model, tmp_path, system):
    with watching_broker({KEY: SECRET}, registered(tree_digest(str(model)).digest)) as (url, _):
        r = agent(agent_env(url, model, tmp_path / "mnt", **system), "--measure", "required")
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert len(events_of(system)) == 2


def test_measure_off_measures_nothing(model, tmp_path, system):
    with watching_broker({KEY: SECRET}) as (url, _):
        r = agent(agent_env(url, model, tmp_path / "mnt", MEASURE="off", **system))
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert not Path(system["AAEL_PATH"]).exists() and not Path(system["SYSTEM_MEASURE_REGISTER"]).exists()
    assert b"measure=off events=0" in r.stderr


def test_measure_auto_without_a_register_warns_and_runs(model, tmp_path):
    with watching_broker({KEY: SECRET}) as (url, _):
        r = agent(agent_env(url, model, tmp_path / "mnt", AAEL_PATH=str(tmp_path / "eventlog")))
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert b"NOT measured" in r.stderr and b"measure=auto events=0" in r.stderr
    assert not (tmp_path / "eventlog").exists()


def test_sam_measures_the_package_digest(sam_pkg, tmp_path, system):
    mnt = tmp_path / "mnt"
    digest = Package.open(str(sam_pkg)).digest
    with watching_broker({KEY: SAM_KEY}, registered(digest)) as (url, _):
        r = agent(agent_env(url, sam_pkg, mnt, ENCRYPTION_METHOD="sam", **system), command=("true",))
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert [e.text for e in events_of(system)] == expected_texts("model", digest, ["true"], mnt, "sam")


# -- EXPECTED_MODEL_DIGEST and the pinned mount for gocryptfs -------------------------------------
def test_expected_model_digest_pins_a_gocryptfs_tree(model, tmp_path):
    digest = tree_digest(str(model)).digest
    mnt, marker = tmp_path / "mnt", tmp_path / "started"
    with watching_broker({KEY: SECRET}) as (url, calls):
        r = agent(agent_env(url, model, mnt, EXPECTED_MODEL_DIGEST=digest), command=tuple(marker_cmd(marker)))
        assert r.returncode == 0 and marker.exists(), r.stderr.decode()[-2000:]
        marker.unlink()
        del calls[:]
        r = agent(agent_env(url, model, mnt, EXPECTED_MODEL_DIGEST=OTHER), command=tuple(marker_cmd(marker)))
        assert calls == [], "the broker was asked for the key"
    assert_never_started(r, marker, mnt, exitcodes.RUN_MODEL_REJECTED)
    assert f"tree digest {digest} is not the EXPECTED_MODEL_DIGEST {OTHER}".encode() in r.stderr


def flip_mode(path: Path) -> None:
    """A change the tree digest sees and gocryptfs alone does not: a permission bit."""
    os.chmod(path, stat.S_IMODE(path.stat().st_mode) ^ 0o004)


@pytest.mark.parametrize("mode", ["fuse", "copy"])
def test_a_tree_changed_after_measuring_is_not_served(model, tmp_path, mode):
    """Changed between the measurement and the mount (while the key is released): refused, 123."""
    cipher = copy_tree(model, tmp_path)
    mnt = tmp_path / "mnt"
    if mode == "copy":
        mnt = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="agent-measure-")) / "model"
    marker = tmp_path / "started"
    try:
        with watching_broker({KEY: SECRET}, on={"resource": lambda: flip_mode(largest(cipher))}) as (url, _):
            r = agent(agent_env(url, cipher, mnt, MOUNT_MODE=mode), command=tuple(marker_cmd(marker)))
        assert_never_started(r, marker, mnt, exitcodes.RUN_MODEL_REJECTED)
        assert b"changed after it was measured" in r.stderr or b"measured at start" in r.stderr
        assert not mnt.exists() or not os.listdir(mnt)
    finally:
        if mode == "copy":
            shutil.rmtree(mnt.parent, ignore_errors=True)


def test_the_mount_refuses_a_file_swapped_while_mounted(model, tmp_path):
    """Tampering after the mount: config.json's ciphertext copied over model.safetensors' (which
    gocryptfs alone serves as config.json's bytes) is EIO; the untouched file still reads."""
    cipher = copy_tree(model, tmp_path)
    mnt, out = tmp_path / "mnt", tmp_path / "out.json"
    top = [p for p in cipher.iterdir() if p.is_file() and not p.name.startswith("gocryptfs.")]
    small = min(top, key=lambda p: p.stat().st_size)  # config.json's
    script = ("import json, os, shutil, sys\n"
              "small, large, mnt, out = sys.argv[1:]\n"
              "shutil.copyfile(small, large)\n"
              "res = {}\n"
              "for name in ('model.safetensors', 'config.json'):\n"
              "    try:\n"
              "        res[name] = len(open(os.path.join(mnt, name), 'rb').read())\n"
              "    except OSError as e:\n"
              "        res[name] = -e.errno\n"
              "json.dump(res, open(out, 'w'))\n")
    with watching_broker({KEY: SECRET}) as (url, _):
        r = agent(agent_env(url, cipher, mnt), command=(sys.executable, "-c", script, str(small),
                                                        str(largest(cipher)), str(mnt), str(out)))
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert json.loads(out.read_text()) == {"model.safetensors": -5, "config.json": 24}  # EIO; untouched
    assert os.path.realpath(mnt) not in fuse_mounts()


# -- the owner's side: agent reference --------------------------------------------------------------
def tagged(text: str) -> bytes:
    """The tagged event the register is extended with the SHA-384 of: "AAEL" (LE), N, the text."""
    data = text.encode("utf-8")
    return struct.pack("<II", 0x4141454C, len(data)) + data


def decode_message(text: str) -> dict:
    """The payload of an RVPS sample message, its envelope checked (keys, version, type)."""
    message = json.loads(text)
    assert list(message) == ["version", "type", "payload"]
    assert message["version"] == "0.1.0" and message["type"] == "sample"
    return json.loads(base64.b64decode(message["payload"], validate=True))


@pytest.mark.parametrize("method", ["gocryptfs", "sam"])
def test_reference_prints_what_the_run_measures(model, sam_pkg, tmp_path, system, method):
    path, secret = (model, SECRET) if method == "gocryptfs" else (sam_pkg, SAM_KEY)
    # even without require_model_event the PAI rule judges every load-model event: register it
    digest = tree_digest(str(model)).digest if method == "gocryptfs" else Package.open(str(sam_pkg)).digest
    with watching_broker({KEY: secret}, registered(digest)) as (url, _):
        r = agent(agent_env(url, path, tmp_path / "mnt", ENCRYPTION_METHOD=method, **system))
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    measured = events_of(system)[0]
    assert json.loads(measured.content)["hash"] == digest
    out = tmp_path / "rv.json"
    ref = reference(str(path), "--key-uri", f"kbs:///{KEY}", "--out", str(out))
    assert ref.returncode == 0, ref.stderr.decode()
    text = ref.stdout.decode()
    assert measured.text in text and measured.digest.hex() in text  # the event and its SHA-384
    message_line = next(line for line in text.splitlines() if line.startswith('{"version"'))
    assert decode_message(message_line) == {"measurement.model.model": [digest]}
    assert out.read_text() == message_line + "\n"
    # --json, and --model-id instead of the key URI
    js = reference(str(path), "--model-id", "model", "--method", method, "--json")
    obj = json.loads(js.stdout)
    assert obj["hash"] == digest and obj["model_id"] == "model" and obj["method"] == method
    assert obj["events"] == [{"domain": measured.domain, "operation": measured.operation,
                              "content": measured.content, "text": measured.text,
                              "sha384": hashlib.sha384(tagged(measured.text)).hexdigest()}]
    assert obj["rvps_message"] == message_line and obj["gateway_body"] == {"message": message_line}


def test_reference_needs_a_model_id_and_an_encrypted_model(model, plain):
    r = reference(str(model))
    assert r.returncode == exitcodes.USAGE and b"--model-id" in r.stderr
    r = reference(str(plain), "--model-id", "m")
    assert r.returncode == exitcodes.USAGE and b"give --method" in r.stderr
    r = reference(str(model), "--model-id", "two words")
    assert r.returncode == exitcodes.USAGE and b"--model-id='two words'" in r.stderr
    r = reference(str(model), "--key-uri", "kbs://default/key/model")
    assert r.returncode == exitcodes.USAGE and b"did you mean kbs:///default/key/model" in r.stderr
    r = reference(str(model), "--model-id", "m", "--method", "sam")
    assert r.returncode == exitcodes.ERROR and b"set ENCRYPTION_METHOD=gocryptfs" in r.stderr
    r = reference(str(model), "--model-id", "m", "--key-uri", f"kbs:///{KEY}")
    assert r.returncode == exitcodes.USAGE


# -- end to end: the dev broker checks the reference ------------------------------------------------
def test_the_broker_releases_the_key_for_the_registered_model_only(model, tmp_path, system):
    rv = tmp_path / "rv.json"
    assert reference(str(model), "--key-uri", f"kbs:///{KEY}", "--out", str(rv)).returncode == 0
    registered = broker.Policy.load(None, [str(rv)], require_model_event=True)
    mnt, marker = tmp_path / "mnt", tmp_path / "started"
    with watching_broker({KEY: SECRET}, registered) as (url, _):
        r = agent(agent_env(url, model, mnt, **system), command=tuple(marker_cmd(marker)))
    assert r.returncode == 0 and marker.exists(), r.stderr.decode()[-2000:]


@pytest.mark.parametrize("case", ["other-digest", "other-model-id", "unmeasured"])
def test_the_broker_denies_the_key_for_another_model(model, tmp_path, system, case):
    digest = tree_digest(str(model)).digest
    reference_values = {"measurement.model.model": [OTHER if case == "other-digest" else digest]}
    policy = broker.Policy(reference=reference_values, require_model_event=True)
    extra = {"other-model-id": {"MODEL_ID": "another-model"}, "unmeasured": {"MEASURE": "off"}}.get(case, {})
    mnt, marker = tmp_path / "mnt", tmp_path / "started"
    with watching_broker({KEY: SECRET}, policy) as (url, calls):
        r = agent(agent_env(url, model, mnt, **system, **extra), command=tuple(marker_cmd(marker)))
    assert_never_started(r, marker, mnt, exitcodes.RUN_DENIED)
    assert calls[:3] == ["auth", "attest", "resource"]  # denied at the key (a retry may follow)
    why = {"other-digest": f'model-id "model" hash "{digest}": not among'.encode(),
           "other-model-id": b'model-id "another-model" hash',
           "unmeasured": b"measure=off events=0"}[case]
    assert b"PolicyDeny" in r.stderr and why in r.stderr


# -- agent check says whether run could measure ------------------------------------------------------
def test_check_reports_the_tree_digest_and_the_measurement(model, tmp_path, system):
    digest = tree_digest(str(model)).digest
    with watching_broker({KEY: SECRET}) as (url, calls):
        env = agent_env(url, model, tmp_path / "mnt", EXPECTED_MODEL_DIGEST=digest)
        ok = agent({**env, **system}, "--measure", "required", sub="check")
        required = agent({**env, "MEASURE": "required"}, sub="check")  # sample: no register
        auto = agent(env, sub="check")
    assert ok.returncode == 0, ok.stdout.decode()
    out = ok.stdout.decode()
    assert f"tree digest {digest} (matches EXPECTED_MODEL_DIGEST)" in out
    assert "ok   measurement (MEASURE=required, model-id model): software register file" in out
    assert required.returncode == exitcodes.RUN_ATTESTER
    assert "FAIL measurement (MEASURE=required, model-id model)" in required.stdout.decode()
    assert auto.returncode == 0 and "warn measurement (MEASURE=auto" in auto.stdout.decode()
    assert set(calls) == {"auth"}  # the probe only: no attestation, no key
    assert not Path(system["AAEL_PATH"]).exists()  # and nothing measured
