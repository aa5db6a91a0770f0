"""Time to ready of ``python -m agent run`` on loopback, with and without the scrypt cost.

Encrypts a small model with the default scrypt cost (N=2^16, as model owners do), serves the
password from the dev broker on loopback, runs ``agent run --log-format json -- true`` several
times and reads the phase records. scrypt is timed on its own (in process, same parameters) so
that "ready minus scrypt" is the agent's own overhead: attestation, key release, mount.

    python bench/ready.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import broker  # noqa: E402
from cryptfs.config import ConfFile  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ready-bench-") as tmp:
        work = Path(tmp)
        password = secrets.token_hex(16).encode() + b"\n"
        (work / "pw").write_bytes(password)
        (work / "plain").mkdir()
        (work / "plain" / "model.safetensors").write_bytes(os.urandom(4 << 20))
        subprocess.run([sys.executable, "-m", "cryptfs", "encrypt", "-q", "--passfile", str(work / "pw"),
                        str(work / "plain"), str(work / "cipher")], check=True, cwd=ROOT)
        conf = ConfFile.load(str(work / "cipher" / "gocryptfs.conf"))
        scrypt = []
        for _ in range(args.runs):
            t = time.perf_counter()
            conf.unlock(password.strip())
            scrypt.append(time.perf_counter() - t)
        b = broker.Broker({"default/key/model": password}, "0.4.0")
        server = broker.serve(b, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        env = {**os.environ, "TRUSTEE_URL": f"http://127.0.0.1:{server.server_address[1]}",
               "DECRYPTION_KEY_URI": "kbs:///default/key/model",
               "ENCRYPTED_MODEL_PATH": str(work / "cipher"), "MODEL_MOUNT_PATH": str(work / "mnt"),
               "ATTESTER": "sample"}
        ready, phases_all = [], []
        try:
            for _ in range(args.runs):
                cmd = [sys.executable, "-m", "agent", "run", "--log-format", "json", "--", "true"]
                r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, check=True)
                phases = {}
                for line in r.stderr.decode().splitlines():
                    if line.startswith("{") and '"phase"' in line:
                        rec = json.loads(line)
                        phases[rec["phase"]] = rec
                ready.append(phases["ready"]["since_start"])
                phases_all.append({k: v["seconds"] for k, v in phases.items()})
        finally:
            server.shutdown()
            server.server_close()
    med_ready, med_scrypt = statistics.median(ready), statistics.median(scrypt)
    print(f"runs: {args.runs}")
    print(f"time to ready (agent start -> mount ready), median: {med_ready:.3f} s  {sorted(ready)}")
    print(f"scrypt N={conf.scrypt.n} in process, median:          {med_scrypt:.3f} s")
    excl = med_ready - med_scrypt
    print(f"time to ready excluding scrypt:                  {excl:.3f} s (target <= 0.5 s)")
    for name in ("config", "handshake", "key", "unlock+mount"):
        print(f"  phase {name:<13} median {statistics.median(p[name] for p in phases_all):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
