"""entrypoint.sh run directly (no image can be built here), and the Dockerfile checked statically."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import signal
import subprocess
import sys
import time

from tests.support import PROJECT

ENTRYPOINT = PROJECT / "entrypoint.sh"
SECURE_VARS = ("TRUSTEE_URL", "DECRYPTION_KEY_URI", "ENCRYPTION_METHOD", "ENCRYPTED_MODEL_PATH",
               "MODEL_MOUNT_PATH")


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if k not in SECURE_VARS}
    e["AGENT_PYTHON"] = sys.executable  # the venv's interpreter, as python3 is in an image
    e["PYTHONPATH"] = str(PROJECT)
    return e


def test_exit_codes_pass_through():
    for code in (0, 3, 42):
        r = subprocess.run([str(ENTRYPOINT), "sh", "-c", f"exit {code}"], env=env(), capture_output=True,
                           timeout=60)
        assert r.returncode == code, r.stderr


def test_arguments_survive_exactly():
    args = ["with space", "it's \"quoted\"", "$HOME", "", "new\nline", "--flag=x", "-o", "--", "*", "\\n"]
    show_argv = "import json, sys; print(json.dumps(sys.argv[1:]))"
    r = subprocess.run([str(ENTRYPOINT), sys.executable, "-c", show_argv, *args], env=env(),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == args


def test_no_arguments_is_a_usage_error():
    r = subprocess.run([str(ENTRYPOINT)], env=env(), capture_output=True, timeout=30)
    assert r.returncode == 2 and b"usage" in r.stderr


def test_sigterm_reaches_the_command(tmp_path):
    ready, got = tmp_path / "ready", tmp_path / "got"
    script = f"trap 'touch {got}; exit 143' TERM; touch {ready}; while :; do sleep 0.1; done"
    proc = subprocess.Popen([str(ENTRYPOINT), "sh", "-c", script], env=env(), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists()
        proc.send_signal(signal.SIGTERM)  # to the entrypoint's PID: exec made it the agent
        assert proc.wait(30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _pids_naming(tmp_path):  # whatever the failure, leave no command running
            os.kill(pid, signal.SIGKILL)
    assert got.exists()


def _pids_naming(path) -> list[int]:
    needle = os.fsencode(str(path))
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if needle in f.read():
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def test_dockerfile_static():
    text = (PROJECT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=eas-registry-vpc\.cn-hangzhou\.cr\.aliyuncs\.com/pai-eas/"
                     r"chat-llm-webui:3\.0-vllm$", text, re.M)
    assert re.search(r"^#.*region", text, re.M | re.I)  # says to replace the region
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    runs = " ".join(re.findall(r"^RUN (.+)$", re.sub(r"\\\n", " ", text), re.M))  # continued lines joined
    assert re.search(r"apt-get install [^&]*\bfuse3\b", runs)
    assert re.search(r"pip install [^&]*/opt/agent", runs)  # the project itself is installed
    entry = re.findall(r"^ENTRYPOINT (.+)$", text, re.M)
    assert len(entry) == 1 and json.loads(entry[0]) == ["/usr/local/bin/entrypoint.sh"]  # exec form
    assert not re.search(r"^CMD ", text, re.M)  # the EAS command stays the container command
    ignored = [p.strip() for p in (PROJECT / ".dockerignore").read_text().splitlines()
               if p.strip() and not p.startswith("#")]
    copies = [line.split() for line in re.findall(r"^COPY (.+)$", text, re.M)]
    for *sources, _ in copies:
        for src in sources:
            assert (PROJECT / src).exists(), f"COPY source {src} missing"
            assert not any(fnmatch.fnmatch(src, p.removeprefix("**/")) for p in ignored), \
                f"COPY source {src} is excluded by .dockerignore"
    assert ["entrypoint.sh", "/usr/local/bin/entrypoint.sh"] in copies
    assert os.access(ENTRYPOINT, os.X_OK)
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
