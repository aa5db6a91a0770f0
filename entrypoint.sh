#!/bin/sh
# Container entrypoint: attest, fetch the model key, mount the model, then run the container's
# command (the EAS command) under the agent, which passes its exit code and signals through.
# Configuration comes from the environment: see README.md, "python -m agent run".
set -eu
if [ "$#" -eq 0 ]; then
    echo "usage: entrypoint.sh COMMAND [ARGS...]  (e.g. python webui/webui_server.py --model-path=/mnt/model)" >&2
    exit 2
fi
PYTHON="${AGENT_PYTHON:-python3}"
exec "$PYTHON" -m agent run -- "$@"
