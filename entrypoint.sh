#!/bin/sh
# Container entrypoint: attest, fetch the model key, mount the model, then run the container's
# command (the EAS command) under the agent, which passes its exit code and signals through.
# The ENTRYPOINT is in exec form, so the container's command arrives here as "$@", word for word;
# give it as separate words (a whole command line in ONE argument is refused before the key is
# fetched, with a sh -c hint). Configuration comes from the environment: docs/agent.md
# ("python -m agent run"); the image: docs/container.md. AGENT_PYTHON is the agent's
# interpreter (the image's venv, /opt/agent-venv/bin/python).
set -eu
if [ "$#" -eq 0 ]; then
    echo "usage: entrypoint.sh COMMAND [ARGS...]  (e.g. python webui/webui_server.py --model-path=/mnt/model)" >&2
    exit 2
fi
PYTHON="${AGENT_PYTHON:-python3}"
exec "$PYTHON" -m agent run -- "$@"
