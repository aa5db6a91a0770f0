"""``python -m agent demo``: the whole confidential-serving flow on a laptop, in one command.

No TEE and no network: it makes a small Hugging Face-style model (config, tokenizer files, a
few-MB ``model.safetensors`` generated deterministically), encrypts it in the gocryptfs format
(or packs it as a Sam package pinned by its digest, ``--method sam``), starts the dev broker on
loopback holding the random key, and runs ``agent run`` with the
sample attester and a command that loads every tensor through the mount and compares it with
the plaintext. Everything it creates is removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from .errors import UsageError
from .run.backends import BACKENDS, DEFAULT_METHOD

KEY_PATH = "default/key/demo-model"
STOP_GRACE = 30  # seconds agent run gets to stop its command and unmount after a signal


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the whole flow locally: encrypt, broker, attest, mount, load",
                       description=__doc__.splitlines()[0])
    p.add_argument("--keep", action="store_true", help="leave the mount up until Ctrl-C to look around")
    p.add_argument("--size-mb", type=int, default=8, help="size of model.safetensors (default 8)")
    p.add_argument("--workdir", help="parent of the temporary work directory (default: the system's)")
    p.add_argument("--method", choices=tuple(BACKENDS), default=DEFAULT_METHOD,
                   help="encrypt with gocryptfs (default) or pack a Sam package pinned by its digest")


def make_model(path: str, size_mb: int) -> None:
    """A tiny Llama-shaped model directory; the same bytes on every run (seeded)."""
    import numpy as np
    from safetensors.numpy import save_file

    os.makedirs(path)
    hidden = 256
    rng = np.random.default_rng(20261126)
    layers = max(1, (size_mb << 20) // (4 * 4 * hidden * hidden))
    tensors = {"model.embed_tokens.weight": rng.standard_normal((512, hidden), dtype=np.float32)}
    for i in range(layers):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[f"model.layers.{i}.self_attn.{proj}.weight"] = rng.standard_normal(
                (hidden, hidden), dtype=np.float32)
        tensors[f"model.layers.{i}.input_layernorm.weight"] = np.ones(hidden, dtype=np.float16)
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "np"})
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "num_hidden_layers": layers, "num_attention_heads": 4, "vocab_size": 512}
    _write_json(os.path.join(path, "config.json"), config)
    _write_json(os.path.join(path, "tokenizer_config.json"), {"model_max_length": 2048, "tokenizer_class":
                                                             "PreTrainedTokenizerFast"})
    vocab = {f"tok{i}": i for i in range(512)}
    tokenizer = {"version": "1.0", "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "tok0"}}
    _write_json(os.path.join(path, "tokenizer.json"), tokenizer)


def fuse_usable() -> bool:
    """libfuse3, fusermount3 and /dev/fuse: what the mount needs (else the demo copies into RAM)."""
    import ctypes.util

    if not (ctypes.util.find_library("fuse3") and shutil.which("fusermount3")):
        return False
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError:
        return False
    return True


def _write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)


class Steps:
    def __init__(self):
        self.t0 = self.last = time.monotonic()

    def done(self, what: str) -> None:
        now = time.monotonic()
        print(f"demo: {what} ({now - self.last:.2f} s)", flush=True)
        self.last = now


class _Stopped(BaseException):
    """A signal arrived before ``agent run`` was started: unwind through ``finally``."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _Signals:
    """SIGINT, SIGTERM and SIGHUP while the demo runs.

    ``agent run`` runs in its own session, so a terminal's Ctrl-C reaches only the demo, which
    forwards it (by PID) exactly once, as does ``kill -INT``/``kill -TERM`` of the demo's PID;
    the agent then stops its command and unmounts. Before the agent is started a signal aborts
    the demo through its ``finally``; during cleanup it is only remembered.
    """

    HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.child: subprocess.Popen | None = None
        self.received: int | None = None
        self.starting = False  # between fork and knowing the child's PID: only remember
        self.cleaning = False
        self._previous = {}

    def __enter__(self) -> _Signals:
        for sig in self.HANDLED:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        self.received = self.received or signum
        if self.child is not None and self.child.poll() is None:
            try:
                os.kill(self.child.pid, signum)
            except ProcessLookupError:
                pass
        elif self.child is None and not (self.starting or self.cleaning):
            raise _Stopped(signum)


def cmd_demo(args) -> int:
    if args.size_mb < 1 or args.size_mb > 1024:
        raise UsageError("--size-mb must be between 1 and 1024")
    with _Signals() as signals:
        try:
            return _demo(args, signals)
        except _Stopped as e:
            print(f"demo: stopped by {signal.Signals(e.signum).name}; everything it made was removed",
                  flush=True)
            return 128 + e.signum


def _demo(args, signals: _Signals) -> int:
    from cryptfs.config import FsParams
    from cryptfs.core.mount import mounted_paths
    from cryptfs.encrypt import encrypt_tree

    from . import broker
    from .run.config import ENV

    steps = Steps()
    work = tempfile.mkdtemp(prefix="agent-demo-", dir=args.workdir)
    plain, cipher, mnt = (os.path.join(work, n) for n in ("model", "model.enc", "mnt"))
    server = None
    ram_dir = None
    try:
        make_model(plain, args.size_mb)
        steps.done(f"made a {args.size_mb} MiB Hugging Face-style model in {plain}")
        password = secrets.token_urlsafe(24).encode()
        method = getattr(args, "method", DEFAULT_METHOD)
        if method == "sam":
            cipher, secret, pin = _pack_sam(plain, work, password, steps)
        else:
            encrypt_tree(plain, cipher, password, FsParams(), 16, progress=False)
            steps.done(f"encrypted it in the gocryptfs v2 format (scrypt N=2^16) into {cipher}")
            secret, pin = password + b"\n", {}
        # The broker runs in this process: the key goes from memory to memory, never to disk.
        server = broker.serve(broker.Broker({KEY_PATH: secret}, "0.4.0"), "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        steps.done(f"dev key broker on {url} holds the key as kbs:///{KEY_PATH}")
        env = {k: v for k, v in os.environ.items() if k not in ENV.values()}
        env.update({"TRUSTEE_URL": url, "DECRYPTION_KEY_URI": f"kbs:///{KEY_PATH}",
                    "ENCRYPTION_METHOD": method, "ENCRYPTED_MODEL_PATH": cipher,
                    "MODEL_MOUNT_PATH": mnt, "ATTESTER": "sample", **pin})
        if not fuse_usable() and os.path.isdir("/dev/shm"):
            mnt = ram_dir = os.path.join(tempfile.mkdtemp(prefix="agent-demo-", dir="/dev/shm"), "model")
            env.update({"MOUNT_MODE": "copy", "MODEL_MOUNT_PATH": mnt})
            print("demo: FUSE is not usable here (apt-get install fuse3, /dev/fuse): using MOUNT_MODE=copy, "
                  f"decrypting into the RAM-backed {mnt} instead of mounting", flush=True)
        check = [sys.executable, "-m", "agent.demo_check", mnt, plain] + (["--wait"] if args.keep else [])
        print("demo: running  python -m agent run -- python -m agent.demo_check ...  (sample attester: "
              "expect its warning)", flush=True)
        code = _run_agent(env, check, signals)
        steps.done(f"agent run finished with exit code {code}")
        if code == 0:
            total = time.monotonic() - steps.t0
            print("demo: SUCCESS: the model was served only after attestation and key release, read "
                  f"through the decrypting mount, and matched the plaintext ({total:.1f} s in all)",
                  flush=True)
        else:
            print(f"demo: FAILED with exit code {code} (see the messages above)", flush=True)
        return code
    finally:
        signals.cleaning = True
        if server is not None:
            server.shutdown()
            server.server_close()
        if os.path.realpath(mnt) in mounted_paths():
            subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        if ram_dir:
            shutil.rmtree(os.path.dirname(ram_dir), ignore_errors=True)


def _pack_sam(plain: str, work: str, key: bytes, steps: Steps) -> tuple[str, bytes, dict]:
    """Pack as a model owner would (default scrypt cost); the run pins the digest it printed."""
    from sam.pack import pack

    result = pack(plain, key, "demo-model-key", work, progress=False)
    steps.done(f"packed it as a Sam package (scrypt N=2^17) into {result.out_dir}, digest {result.digest}")
    return result.out_dir, key, {"EXPECTED_MODEL_DIGEST": result.digest}


def _run_agent(env: dict, command: list[str], signals: _Signals) -> int:
    """``agent run`` in its own session; signals to the demo are forwarded to it (see _Signals).

    If it has not finished STOP_GRACE seconds after a signal, it and every process under it (the
    mount daemon, the command) are killed by PID, and the caller's ``finally`` unmounts.
    """
    signals.starting = True
    try:
        proc = signals.child = subprocess.Popen([sys.executable, "-m", "agent", "run", "--", *command],
                                                env=env, start_new_session=True)
    finally:
        signals.starting = False
    if signals.received is not None:  # arrived while it was being started
        os.kill(proc.pid, signals.received)
    deadline = None
    try:
        while True:
            try:
                code = proc.wait(0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            if signals.received is not None and deadline is None:
                deadline = time.monotonic() + STOP_GRACE
            if deadline is not None and time.monotonic() > deadline:
                print(f"demo: agent run did not stop within {STOP_GRACE} s of the signal; killing it",
                      flush=True)
                _kill_tree(proc.pid)
                code = proc.wait()
                break
    finally:
        if proc.poll() is None:  # an exception on the way: never leave it running
            _kill_tree(proc.pid)
            proc.wait()
    return 128 - code if code < 0 else code


def _kill_tree(pid: int) -> None:
    """SIGKILL pid and its descendants (found through /proc), each by its PID."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
