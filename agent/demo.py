"""``python -m agent demo``: the whole confidential-serving flow on a laptop, in one command.

No TEE and no network: it makes a small Hugging Face-style model (config, tokenizer files, a
few-MB ``model.safetensors`` generated deterministically), encrypts it in the gocryptfs format,
starts the dev broker on loopback holding the random password, and runs ``agent run`` with the
sample attester and a command that loads every tensor through the mount and compares it with
the plaintext. Everything it creates is removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

from .errors import UsageError

KEY_PATH = "default/key/demo-model"


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the whole flow locally: encrypt, broker, attest, mount, load",
                       description=__doc__.splitlines()[0])
    p.add_argument("--keep", action="store_true", help="leave the mount up until Ctrl-C to look around")
    p.add_argument("--size-mb", type=int, default=8, help="size of model.safetensors (default 8)")
    p.add_argument("--workdir", help="parent of the temporary work directory (default: the system's)")


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


def cmd_demo(args) -> int:
    from cryptfs.config import FsParams
    from cryptfs.encrypt import encrypt_tree
    from cryptfs.mount import mounted_paths

    from . import broker
    from .run import ENV

    if args.size_mb < 1 or args.size_mb > 1024:
        raise UsageError("--size-mb must be between 1 and 1024")
    steps = Steps()
    work = tempfile.mkdtemp(prefix="agent-demo-", dir=args.workdir)
    plain, cipher, mnt = (os.path.join(work, n) for n in ("model", "model.enc", "mnt"))
    server = None
    try:
        make_model(plain, args.size_mb)
        steps.done(f"made a {args.size_mb} MiB Hugging Face-style model in {plain}")
        password = secrets.token_urlsafe(24).encode()
        encrypt_tree(plain, cipher, password, FsParams(), 16, progress=False)
        steps.done(f"encrypted it in the gocryptfs v2 format (scrypt N=2^16) into {cipher}")
        server = broker.serve(broker.Broker({KEY_PATH: password + b"\n"}, "0.4.0"), "127.0.0.1", 0)
        import threading

        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        steps.done(f"dev key broker on {url} holds the password as kbs:///{KEY_PATH}")
        env = {k: v for k, v in os.environ.items() if k not in ENV.values()}
        env.update({"TRUSTEE_URL": url, "DECRYPTION_KEY_URI": f"kbs:///{KEY_PATH}",
                    "ENCRYPTION_METHOD": "gocryptfs", "ENCRYPTED_MODEL_PATH": cipher,
                    "MODEL_MOUNT_PATH": mnt, "ATTESTER": "sample"})
        check = [sys.executable, "-m", "agent.demo_check", mnt, plain] + (["--wait"] if args.keep else [])
        print("demo: running  python -m agent run -- python -m agent.demo_check ...  (sample attester: "
              "expect its warning)", flush=True)
        code = _run_agent(env, check)
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
        if server is not None:
            server.shutdown()
            server.server_close()
        if os.path.realpath(mnt) in mounted_paths():
            subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def _run_agent(env: dict, command: list[str]) -> int:
    """agent run in a child; on Ctrl-C it gets the SIGINT too and tears its mount down."""
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--", *command], env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
