"""The demo's model-server stand-in: load every tensor through the mount and compare.

``python -m agent.demo_check MOUNT PLAINDIR [--wait]``: loads each ``*.safetensors`` file in
MOUNT with safetensors' own loader, compares every tensor with the plaintext copy, and every
other file byte for byte. Exit 0 when all match. ``--wait`` then waits for SIGINT/SIGTERM
(the demo's ``--keep``), so a user can look around the mount.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def compare(mount: str, plain: str) -> tuple[int, int, list[str]]:
    import numpy as np
    from safetensors import safe_open

    tensors = files = 0
    problems: list[str] = []
    for root, _, names in os.walk(plain):
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(root, name), plain)
            seen = os.path.join(mount, rel)
            if name.endswith(".safetensors"):
                with safe_open(seen, framework="np") as got, safe_open(os.path.join(plain, rel),
                                                                         framework="np") as want:
                    if set(got.keys()) != set(want.keys()):
                        problems.append(f"{rel}: tensor names differ")
                        continue
                    for key in got.keys():
                        tensors += 1
                        if not np.array_equal(got.get_tensor(key), want.get_tensor(key)):
                            problems.append(f"{rel}: tensor {key} differs")
            else:
                with open(seen, "rb") as a, open(os.path.join(plain, rel), "rb") as b:
                    if a.read() != b.read():
                        problems.append(f"{rel}: content differs")
            files += 1
    return files, tensors, problems


def _finish(signum, frame) -> None:
    """Ctrl-C reaches us twice (from the terminal's group and forwarded by the agent): ignore the
    second one instead of dying of it during interpreter shutdown."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    sys.stdout.flush()
    os._exit(0)


def main(argv: list[str]) -> int:
    wait = "--wait" in argv
    args = [a for a in argv if a != "--wait"]
    if len(args) != 2:
        print("usage: python -m agent.demo_check MOUNT PLAINDIR [--wait]", file=sys.stderr)
        return 2
    mount, plain = args
    t = time.monotonic()
    files, tensors, problems = compare(mount, plain)
    for p in problems:
        print(f"demo_check: MISMATCH {p}", flush=True)
    print(f"demo_check: read {files} files and {tensors} tensors through {mount} in "
          f"{time.monotonic() - t:.2f} s: {'all identical to the plaintext' if not problems else 'MISMATCH'}",
          flush=True)
    if problems:
        return 1
    if wait:
        print(f"demo_check: the mount stays up at {mount}; press Ctrl-C to finish", flush=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _finish)
        while True:
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
