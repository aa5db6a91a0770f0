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


def test_a_command_given_as_one_string_gets_the_sh_c_hint():
    # what a platform does with a command field taken as one string: one argv element
    r = subprocess.run([str(ENTRYPOINT), "python server.py --port 8000"], env=env(), capture_output=True,
                       timeout=60)
    assert r.returncode == 124 and b"sh -c 'python server.py --port 8000'" in r.stderr


def stages(text: str) -> list[str]:
    """The Dockerfile's build stages (from each FROM to the next): comments dropped, continued lines
    joined."""
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    joined = re.sub(r"\s*\\\n\s*", " ", code)
    parts = re.split(r"^(?=FROM )", joined, flags=re.M)
    return [p for p in parts if p.startswith("FROM ")]


def runs(stage: str) -> str:
    return " ".join(re.findall(r"^RUN (.+)$", stage, re.M))


def test_dockerfile_static():
    text = (PROJECT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=eas-registry-vpc\.cn-hangzhou\.cr\.aliyuncs\.com/pai-eas/"
                     r"chat-llm-webui:3\.0-vllm$", text, re.M)
    assert re.search(r"^#.*region", text, re.M | re.I)  # says to replace the region
    entry = re.findall(r"^ENTRYPOINT (.+)$", text, re.M)
    assert len(entry) == 1 and json.loads(entry[0]) == ["/usr/local/bin/entrypoint.sh"]  # exec form
    assert not re.search(r"^CMD ", text, re.M)  # the EAS command stays the container command
    ignored = [p.strip() for p in (PROJECT / ".dockerignore").read_text().splitlines()
               if p.strip() and not p.startswith("#")]
    copies = [line.split() for line in re.findall(r"^COPY (.+)$", text, re.M)]
    for *sources, _ in copies:
        if sources[0].startswith("--from="):
            continue  # from the builder stage, not the build context
        for src in sources:
            assert (PROJECT / src).exists(), f"COPY source {src} missing"
            assert not any(fnmatch.fnmatch(src, p.removeprefix("**/")) for p in ignored), \
                f"COPY source {src} is excluded by .dockerignore"
    assert ["entrypoint.sh", "/usr/local/bin/entrypoint.sh"] in copies
    assert os.access(ENTRYPOINT, os.X_OK)
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")


def test_dockerfile_is_multi_stage_and_ships_no_compiler():
    builder, final = stages((PROJECT / "Dockerfile").read_text())
    assert re.match(r"FROM \$\{BASE_IMAGE\} AS builder$", builder, re.M)
    assert re.match(r"FROM \$\{BASE_IMAGE\}$", final, re.M)
    assert re.search(r"apt-get install [^&]*\bgcc\b[^&]*\blibssl-dev\b", runs(builder))
    assert re.search(r"pip wheel [^&]*--wheel-dir /wheels /src", runs(builder))
    assert "_blocks" in runs(builder)  # the build fails rather than ship the slow block path
    final_runs = runs(final)
    assert re.search(r"apt-get install [^&]*\bfuse3\b[^&]*\blibssl3\b", final_runs)
    for build_only in ("gcc", "libc6-dev", "libssl-dev", "build-essential", "/src"):
        assert build_only not in final, f"{build_only} in the final image"
    assert re.search(r"^COPY --from=builder /wheels ", final, re.M)
    assert re.search(r"--no-index --find-links /tmp/agent-wheels confidential-model-serving", final_runs)


def test_dockerfile_installs_into_a_venv():
    builder, final = stages((PROJECT / "Dockerfile").read_text())
    for stage in (builder, final):
        assert "python3 -m venv /opt/agent-venv" in runs(stage)
        # never pip into the system Python (PEP 668 bases refuse it, and it is the model server's)
        assert not re.search(r"python3? -m pip |(?<![/\w-])pip3? install", runs(stage))
    assert re.search(r"/opt/agent-venv/bin/pip install ", runs(final))
    assert re.search(r"^ENV AGENT_PYTHON=/opt/agent-venv/bin/python\b", final, re.M)
    # appended: `python` in the EAS command must stay the model server's interpreter
    assert re.search(r'PATH="\$\{PATH\}:/opt/agent-venv/bin"', final)
