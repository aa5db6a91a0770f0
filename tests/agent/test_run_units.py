"""Unit tests of the agent run package without a mount: the backend registry (mount command lines,
key bytes, the mount child's exit code -> agent error, copy mode, what is checked before the
key), the run exit code of every AgentError, KbsClient.probe() against the dev broker, and the
command line's choices, which must come from the one registry or constant tuple each.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import secrets
import sys
from pathlib import Path

import pytest

import agent.errors as agent_errors
from agent import attesters, b64, binding, broker, cli, exitcodes, jwe, protocol
from agent.attesters import tdx as tdx_attester
from agent.errors import (
    AgentError,
    BrokerUnreachable,
    ConfigurationError,
    ModelRejected,
    MountFailed,
    VersionMismatch,
    WrongKey,
)
from agent.kbs import KbsClient
from agent.run import BACKENDS, DEFAULT_METHOD, METHODS, RunConfig
from agent.run.backends import GocryptfsBackend, SamBackend
from cryptfs import exitcodes as cx
from cryptfs.core import exitcodes as core_exitcodes
from sam import exitcodes as sx
from tests.support import serve_broker

KEY_URI = "kbs:///default/key/model"
DIGEST_A = "sha256:" + "a" * 64


def config(cipher_dir: Path | str, mount_path: Path | str, method: str = "gocryptfs",
           expect_digest: str | None = None) -> RunConfig:
    return RunConfig(True, "http://127.0.0.1:9", KEY_URI, method, str(cipher_dir), str(mount_path),
                     expect_digest=expect_digest)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plain")
    (root / "sub").mkdir()
    (root / "config.json").write_bytes(b'{"model_type": "llama"}\n')
    (root / "sub" / "weights.bin").write_bytes(secrets.token_bytes(70_000))
    return root


@pytest.fixture(scope="module")
def gocryptfs_dir(plain, tmp_path_factory) -> tuple[Path, bytes]:
    from cryptfs.config import FsParams
    from cryptfs.encrypt import encrypt_tree

    cipher = tmp_path_factory.mktemp("gocryptfs") / "cipher"
    password = b"pw-" + secrets.token_hex(8).encode()
    encrypt_tree(str(plain), str(cipher), password, FsParams(), 10, progress=False)
    return cipher, password


@pytest.fixture(scope="module")
def sam_package(plain, tmp_path_factory) -> tuple[Path, bytes, str]:
    from sam.pack import pack

    key = b"k-" + secrets.token_hex(8).encode()
    result = pack(str(plain), key, "model-key-0001", str(tmp_path_factory.mktemp("sam")), scrypt_logn=10,
                  progress=False)
    return Path(result.out_dir), key, result.digest


# -- the registry --------------------------------------------------------------------------------
def test_the_registry_is_what_encryption_method_accepts():
    assert tuple(BACKENDS) == METHODS == ("gocryptfs", "sam")
    assert BACKENDS == {"gocryptfs": GocryptfsBackend, "sam": SamBackend}
    assert DEFAULT_METHOD == "gocryptfs" and RunConfig(True).method == DEFAULT_METHOD
    for name, cls in BACKENDS.items():
        assert cls.name == name


def test_resolve_takes_the_method_from_the_registry(tmp_path):
    env = {"TRUSTEE_URL": "http://127.0.0.1:9", "DECRYPTION_KEY_URI": KEY_URI,
           "ENCRYPTED_MODEL_PATH": str(tmp_path)}
    args = argparse.Namespace()
    assert RunConfig.resolve(args, env).backend().__class__ is GocryptfsBackend
    assert RunConfig.resolve(args, {**env, "ENCRYPTION_METHOD": "SAM"}).backend().__class__ is SamBackend
    assert RunConfig.resolve(argparse.Namespace(method="sam"), {**env, "ENCRYPTION_METHOD": "gocryptfs"}
                             ).method == "sam"  # the flag wins
    with pytest.raises(ConfigurationError, match="expected gocryptfs or sam") as e:
        RunConfig.resolve(args, {**env, "ENCRYPTION_METHOD": "veracrypt"})
    assert e.value.run_exit_code == exitcodes.RUN_CONFIG
    with pytest.raises(ConfigurationError, match="expected fuse or copy"):
        RunConfig.resolve(args, {**env, "MOUNT_MODE": "disk"})


@pytest.mark.parametrize("method", ["gocryptfs", "sam"])
def test_expected_digest_is_the_backends_business(tmp_path, method):
    env = {"TRUSTEE_URL": "http://127.0.0.1:9", "DECRYPTION_KEY_URI": KEY_URI, "ENCRYPTION_METHOD": method,
           "ENCRYPTED_MODEL_PATH": str(tmp_path), "EXPECTED_MODEL_DIGEST": f" {DIGEST_A}\n"}
    assert RunConfig.resolve(argparse.Namespace(), env).expect_digest == DIGEST_A  # both methods pin
    with pytest.raises(ConfigurationError, match="64 lowercase hex digits"):
        RunConfig.resolve(argparse.Namespace(), {**env, "EXPECTED_MODEL_DIGEST": "sha256:abc"})


def test_gocryptfs_mount_command(tmp_path, gocryptfs_dir):
    cipher, _ = gocryptfs_dir
    backend = config(cipher, tmp_path / "m").backend()
    # before the key: the tree is measured, gocryptfs.conf's flags held to GOCRYPTFS_FLAGS
    digest = backend.model_digest()
    assert backend.prepare() == {"flags": "HKDF,GCMIV128,DirIV,EMENames,LongNames,Raw64", "digest": digest,
                                 "pinned": False}
    assert backend.mount_command(5, 7) == [  # the mount serves the tree that was measured, nothing else
        sys.executable, "-m", "cryptfs", "mount", "--fg", "--allow_other", "--passfile", "/dev/fd/5",
        "--notify-fd", "7", "--no-holes", "--expect-digest", digest, str(cipher), str(tmp_path / "m")]


def test_sam_mount_command_pins_the_digest(tmp_path, sam_package):
    pkg, _, digest = sam_package
    pinned = config(pkg, tmp_path / "m", "sam", DIGEST_A).backend()
    assert pinned.mount_command(5, 7) == [
        sys.executable, "-m", "sam", "mount", "--fg", "--allow_other", "--key-file", "/dev/fd/5",
        "--notify-fd", "7", "--expect-digest", DIGEST_A, str(pkg), str(tmp_path / "m")]
    unpinned = config(pkg, tmp_path / "m", "sam").backend()
    assert "--expect-digest" not in unpinned.mount_command(5, 7)
    # once the package was opened, the mount serves exactly the one whose digest was logged
    assert unpinned.prepare() == {"digest": digest, "pinned": False}
    assert unpinned.mount_command(5, 7)[10:12] == ["--expect-digest", digest]


@pytest.mark.parametrize("value, flags", [
    (None, []), ("on", ["--warmup"]), ("1", ["--warmup"]), ("off", []), ("0", []),
    ("8G", ["--warmup-budget", "8G"]), ("50%", ["--warmup-budget", "50%"]),
])
def test_model_warmup_reaches_the_mount(tmp_path, gocryptfs_dir, value, flags):
    """MODEL_WARMUP=on (or a budget) makes agent run's mount warm up; off, or unset, does not."""
    cipher, _ = gocryptfs_dir
    env = {"TRUSTEE_URL": "http://127.0.0.1:9", "DECRYPTION_KEY_URI": KEY_URI,
           "ENCRYPTED_MODEL_PATH": str(cipher), "MODEL_MOUNT_PATH": str(tmp_path / "m")}
    if value is not None:
        env["MODEL_WARMUP"] = value
    cfg = RunConfig.resolve(argparse.Namespace(), env)
    command = cfg.backend().mount_command(5, 7)
    tail = command[command.index("--notify-fd") + 2:-2]
    assert [a for a in tail if a.startswith("--warmup")] + \
        ([tail[tail.index("--warmup-budget") + 1]] if "--warmup-budget" in tail else []) == flags


@pytest.mark.parametrize("value", ["lots", "0G", "150%"])
def test_a_bad_model_warmup_is_a_configuration_error(tmp_path, gocryptfs_dir, value):
    cipher, _ = gocryptfs_dir
    env = {"TRUSTEE_URL": "http://127.0.0.1:9", "DECRYPTION_KEY_URI": KEY_URI,
           "ENCRYPTED_MODEL_PATH": str(cipher), "MODEL_WARMUP": value}
    with pytest.raises(ConfigurationError, match="MODEL_WARMUP"):
        RunConfig.resolve(argparse.Namespace(), env)


def test_key_bytes():
    go = GocryptfsBackend(RunConfig(True))
    assert go.key_bytes(bytearray(b"secret")) == b"secret\n"
    assert go.key_bytes(bytearray(b"secret\nsecond line\n")) == b"secret\n"  # -passfile: the first line
    with pytest.raises(ConfigurationError, match="first line is empty") as e:
        go.key_bytes(bytearray(b"\nsecret"))
    assert e.value.run_exit_code == exitcodes.RUN_CONFIG
    sam = SamBackend(RunConfig(True, method="sam"))
    assert sam.key_bytes(bytearray(b"k-0123456789\n")) == b"k-0123456789\n"  # exact bytes
    assert sam.key_bytes(bytearray(b"k-0123456789")) == b"k-0123456789"
    with pytest.raises(ConfigurationError, match="4 to 128 bytes"):
        sam.key_bytes(bytearray(b"abc"))


CRYPTFS_MOUNT_EXITS = {  # the mount child's code -> (error class, run code, what the message names)
    cx.PASSWORD_INCORRECT: (WrongKey, exitcodes.RUN_WRONG_KEY, "does not unlock ENCRYPTED_MODEL_PATH"),
    cx.CONFIG: (MountFailed, exitcodes.RUN_MOUNT, "no usable gocryptfs.conf"),
    cx.CIPHERDIR: (MountFailed, exitcodes.RUN_MOUNT, "ENCRYPTED_MODEL_PATH is not a directory"),
    cx.MOUNTPOINT: (MountFailed, exitcodes.RUN_MOUNT, "--device /dev/fuse and CAP_SYS_ADMIN"),
    cx.INTEGRITY: (MountFailed, exitcodes.RUN_MOUNT, "see the messages above"),
    99: (MountFailed, exitcodes.RUN_MOUNT, "see the messages above"),
}
SAM_MOUNT_EXITS = {
    sx.WRONG_KEY: (WrongKey, exitcodes.RUN_WRONG_KEY, "does not unlock the Sam package"),
    sx.DIGEST_MISMATCH: (ModelRejected, exitcodes.RUN_MODEL_REJECTED, "EXPECTED_MODEL_DIGEST pins"),
    sx.INTEGRITY: (ModelRejected, exitcodes.RUN_MODEL_REJECTED, "fails authentication"),
    sx.MANIFEST: (MountFailed, exitcodes.RUN_MOUNT, "no usable .sam/manifest.json"),
    sx.PACKAGE: (MountFailed, exitcodes.RUN_MOUNT, "ENCRYPTED_MODEL_PATH is not a directory"),
    sx.KEY_READ: (MountFailed, exitcodes.RUN_MOUNT, "the key from the broker is empty"),
    sx.MOUNTPOINT: (MountFailed, exitcodes.RUN_MOUNT, "--device /dev/fuse and CAP_SYS_ADMIN"),
    99: (MountFailed, exitcodes.RUN_MOUNT, "see the messages above"),
}


@pytest.mark.parametrize("method,table", [("gocryptfs", CRYPTFS_MOUNT_EXITS), ("sam", SAM_MOUNT_EXITS)])
def test_mount_exit_codes_map_to_agent_errors(method, table):
    assert cx.PASSWORD_INCORRECT == sx.WRONG_KEY == 12  # one wrong-key code for both formats
    backend = BACKENDS[method](RunConfig(True, method=method))
    tool = {"gocryptfs": "cryptfs", "sam": "sam"}[method]
    for code, (cls, run_code, words) in table.items():
        error = backend.mount_failure(code)
        assert type(error) is cls, code
        assert error.run_exit_code == run_code, code
        assert words in str(error), (code, str(error))
        verb = "refused" if cls is ModelRejected else "failed"
        assert str(error).startswith(f"mount {verb} ({tool} exit {code}): "), str(error)
        assert isinstance(error, MountFailed) == (cls is not ModelRejected)
        if isinstance(error, MountFailed):
            assert error.mount_code == code and error.wrong_key == (run_code == exitcodes.RUN_WRONG_KEY)


def test_a_sam_package_other_than_the_pinned_one_is_rejected_before_the_key(tmp_path, sam_package):
    pkg, _, digest = sam_package
    backend = config(pkg, tmp_path / "m", "sam", DIGEST_A).backend()
    with pytest.raises(ModelRejected, match=digest) as e:
        backend.prepare()
    assert e.value.run_exit_code == exitcodes.RUN_MODEL_REJECTED
    with pytest.raises(ModelRejected):
        backend.describe()
    pinned = config(pkg, tmp_path / "m", "sam", digest).backend()
    assert pinned.prepare() == {"digest": digest, "pinned": True}
    assert pinned.describe() == (f"key ID model-key-0001, 2 files, digest {digest} (matches "
                                 "EXPECTED_MODEL_DIGEST)")
    with pytest.raises(ConfigurationError, match="not a usable Sam package"):
        config(tmp_path, tmp_path / "m", "sam").backend().prepare()


def test_gocryptfs_describe(tmp_path, gocryptfs_dir):
    cipher, _ = gocryptfs_dir
    detail = config(cipher, tmp_path / "m").backend().describe()
    assert detail.startswith("gocryptfs.conf readable, flags ") and detail.endswith("(not pinned)")
    assert "scrypt N=1024, tree digest sha256:" in detail
    with pytest.raises(ConfigurationError, match="gocryptfs.conf") as e:
        config(tmp_path, tmp_path / "m").backend().describe()
    assert e.value.run_exit_code == exitcodes.RUN_CONFIG


def test_gocryptfs_copy_into(tmp_path, plain, gocryptfs_dir):
    cipher, password = gocryptfs_dir
    backend = config(cipher, tmp_path / "m").backend()
    with pytest.raises(WrongKey) as e:
        backend.copy_into(bytearray(b"not the password"), str(tmp_path / "wrong"))
    assert e.value.run_exit_code == exitcodes.RUN_WRONG_KEY and e.value.mount_code == cx.PASSWORD_INCORRECT
    backend.copy_into(bytearray(password + b"\nignored second line"), str(tmp_path / "out"))
    assert files(tmp_path / "out") == files(plain)


def test_sam_copy_into(tmp_path, plain, sam_package):
    pkg, key, digest = sam_package
    with pytest.raises(WrongKey, match="does not unlock the Sam package") as e:
        config(pkg, tmp_path / "m", "sam").backend().copy_into(bytearray(b"not-the-key"), str(tmp_path / "w"))
    assert e.value.run_exit_code == exitcodes.RUN_WRONG_KEY
    with pytest.raises(ModelRejected):  # re-checked against the pin when it is read
        config(pkg, tmp_path / "m", "sam", DIGEST_A).backend().copy_into(bytearray(key), str(tmp_path / "r"))
    backend = config(pkg, tmp_path / "m", "sam", digest).backend()
    backend.copy_into(bytearray(key + b"\n"), str(tmp_path / "o"))
    assert files(tmp_path / "o") == files(plain)


# -- errors carry their run code -----------------------------------------------------------------
# agent/run.py's run_exit_code() table before the errors carried their codes (125: not listed)
OLD_RUN_CODES = {
    "AgentError": 125, "UsageError": 124, "QuoteError": 125, "QuoteVerificationError": 125,
    "AttesterError": 113, "KbsError": 125, "BrokerUnreachable": 114, "VersionMismatch": 115,
    "EvidenceRefused": 116, "PolicyDenied": 117, "ResourceNotFound": 118, "KbsProtocolError": 119,
    "ConfigurationError": 112, "MountFailed": 120, "WrongKey": 121, "ModelRejected": 123,
    "CommandNotFound": 127, "CommandNotExecutable": 126,
    "MeasurementError": 113, "MeasurementUnavailable": 113,  # attester failures (agent/measure)
    "NoKbs": 111,  # no KBS at TRUSTEE_URL (404 on /auth, a redirect): the run range's newest code
}


def _subclasses(cls: type) -> set[type]:
    out = {cls}
    for sub in cls.__subclasses__():
        out |= _subclasses(sub)
    return out


def test_every_agent_error_carries_the_old_tables_run_code():
    classes = {c for c in _subclasses(AgentError) if c.__module__.startswith("agent")}
    assert {c.__name__ for c in classes} == set(OLD_RUN_CODES), "a new AgentError needs its run code here"
    for cls in classes:
        assert cls("message").run_exit_code == OLD_RUN_CODES[cls.__name__], cls.__name__
        assert getattr(agent_errors, cls.__name__) is cls  # all live in agent/errors.py
    assert set(OLD_RUN_CODES.values()) <= set(exitcodes.ALL.values())
    assert all(111 <= code <= 127 for code in OLD_RUN_CODES.values())  # 111: RUN_NO_KBS
    # the wrong key is its own class; a MountFailed with code 12 is what a backend never makes
    assert WrongKey("m", 12).wrong_key and not MountFailed("m").wrong_key


def test_the_shared_exit_codes_come_from_cryptfs_core():
    for name in ("OK", "ERROR", "USAGE", "INTERRUPTED"):
        assert getattr(exitcodes, name) == getattr(core_exitcodes, name)
    assert "MOUNTPOINT" not in exitcodes.ALL and "INTEGRITY" not in exitcodes.ALL  # not agent codes
    assert list(exitcodes.ALL.values()) == sorted(exitcodes.ALL.values())


# -- KbsClient.probe ------------------------------------------------------------------------------
@pytest.mark.parametrize("dialect", protocol.BROKER_DIALECTS)
def test_probe_names_the_dialect_and_fetches_nothing(dialect):
    b = broker.Broker({"default/key/model": b"secret\n"}, dialect, broker.Policy())
    calls = []
    for name in ("attest", "resource"):
        real = getattr(b, name)
        setattr(b, name, lambda *a, _n=name, _r=real: (calls.append(_n), _r(*a))[1])
    with serve_broker(b) as url:
        client = KbsClient(url, attesters.SampleAttester())
        assert client.probe() == dialect
        assert client.dialect == dialect and not client.attested
        assert KbsClient(url, attesters.SampleAttester(), dialect=dialect).probe() == dialect
        other = next(d for d in protocol.DIALECTS if d != dialect)
        with pytest.raises(VersionMismatch) as e:
            KbsClient(url, attesters.SampleAttester(), dialect=other).probe()
        assert e.value.run_exit_code == exitcodes.RUN_VERSION_MISMATCH
        # after a probe the client still fetches normally (a fresh handshake)
        assert client.get_resource(KEY_URI) == b"secret\n"
    assert calls == ["attest", "resource"]  # only the last get_resource attested and fetched


def test_probe_of_a_broker_that_is_down():
    with pytest.raises(BrokerUnreachable) as e:
        KbsClient("http://127.0.0.1:9", attesters.SampleAttester()).probe()
    assert e.value.run_exit_code == exitcodes.RUN_UNREACHABLE


# -- one place for the names ----------------------------------------------------------------------
def _options(parser: argparse.ArgumentParser, command: str) -> dict[str, argparse.Action]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {opt: a for a in sub.choices[command]._actions for opt in a.option_strings}


def test_the_protocol_constants():
    assert protocol.DIALECTS == ("0.4.0", "0.1.0", "0.2.0", "0.1.1")  # docs/agent.md's probe order
    assert protocol.LATEST == "0.4.0" and protocol.BROKER_DIALECTS == ("0.4.0", "0.1.0")
    assert set(protocol.LEGACY_DIALECTS) < set(protocol.DIALECTS)
    assert set(protocol.BROKER_DIALECTS) <= set(protocol.DIALECTS)
    assert protocol.KEY_ALGORITHMS == ("ECDH-ES+A256KW", "RSA-OAEP-256", "RSA1_5")
    assert protocol.DEFAULT_KEY_ALG == protocol.KEY_ALGORITHMS[0] and protocol.LEGACY_KEY_ALG == "RSA1_5"
    # the modules that used to keep their own lists
    assert binding.DIALECTS is attesters.DIALECTS is protocol.DIALECTS
    assert jwe.ALGORITHMS is protocol.KEY_ALGORITHMS
    assert set(tdx_attester.CCEL_FORM_BY_DIALECT) == set(protocol.DIALECTS)
    assert tdx_attester.CCEL_FORM_BY_DIALECT["0.4.0"] == "trimmed"
    assert {tdx_attester.CCEL_FORM_BY_DIALECT[d] for d in protocol.DIALECTS if d != "0.4.0"} == {"raw"}


def test_the_attester_registry(caplog):
    assert attesters.ATTESTERS == {"tdx": attesters.TdxAttester, "system": attesters.SystemAttester,
                                   "sample": attesters.SampleAttester}
    assert attesters.CHOICES == ("auto", "tdx", "system", "sample")
    for name, cls in attesters.ATTESTERS.items():
        assert cls.name == name
        with caplog.at_level(logging.WARNING):
            assert type(attesters.select(name, {})) is cls
    assert "THIS IS NOT ATTESTATION" in caplog.text  # sample warns loudly


def test_the_cli_choices_come_from_the_registries():
    parser = cli.build_parser()
    for command in ("run", "check", "get-resource"):
        opts = _options(parser, command)
        assert tuple(opts["--attester"].choices) == attesters.CHOICES
        assert tuple(opts["--dialect"].choices) == protocol.DIALECTS
        assert tuple(opts["--key-alg"].choices) == protocol.KEY_ALGORITHMS
        assert protocol.DEFAULT_KEY_ALG in opts["--key-alg"].help
        assert ", ".join(protocol.DIALECTS[1:]) in opts["--dialect"].help
    opts = _options(parser, "broker")
    assert tuple(opts["--dialect"].choices) == protocol.BROKER_DIALECTS
    assert opts["--dialect"].default == protocol.LATEST
    opts = _options(parser, "demo")
    assert tuple(opts["--method"].choices) == tuple(BACKENDS) and opts["--method"].default == DEFAULT_METHOD
    assert all(name in _options(parser, "run")["--method"].help for name in BACKENDS)


# -- base64 ---------------------------------------------------------------------------------------
def test_one_base64_pair():
    data = bytes(range(256)) + os.urandom(31)
    assert b64.b64encode(data) == base64.b64encode(data).decode()
    assert b64.b64decode(b64.b64encode(data)) == data
    assert b64.b64url_encode(data) == base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    assert b64.b64url_decode(b64.b64url_encode(data), "x") == data
    for bad in ("not base64!", "YWJj" + "\n" + "ZA", "YQ"):  # foreign characters, missing padding
        with pytest.raises(ValueError):
            b64.b64decode(bad)
    for bad in ("a+b/", "a", "abc!"):
        with pytest.raises(ValueError, match="member"):
            b64.b64url_decode(bad, "member")
    with pytest.raises(jwe.JweError, match="iv"):  # the JWE's decoder is the same one, as a JweError
        jwe.b64url_decode("a+b/", "iv")
