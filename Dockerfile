# Layers the init agent onto a model-server image. The EAS command stays the container
# command: the entrypoint attests, fetches the key, mounts the model at MODEL_MOUNT_PATH and
# then runs it. Replace the region (cn-hangzhou) with yours.
#
# Two stages: the builder compiles the wheels (gcc and the OpenSSL headers build the C block
# path); the final image gets the wheels and only the runtime libraries (fuse3, libssl3), so no
# compiler ships with the model. The agent lives in its own venv, /opt/agent-venv: pip refuses
# to install into a PEP 668 ("externally managed") system Python, and the model server's
# packages stay untouched. Debian/Ubuntu bases; on others use their package manager (fuse3,
# gcc, openssl-devel / libssl1.1 on older bases).
ARG BASE_IMAGE=eas-registry-vpc.cn-hangzhou.cr.aliyuncs.com/pai-eas/chat-llm-webui:3.0-vllm

FROM ${BASE_IMAGE} AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
# python3 -m venv needs ensurepip, which Debian's python3 has only with python3-venv
RUN python3 -m venv /opt/agent-venv \
    || (apt-get update && apt-get install -y --no-install-recommends python3-venv \
        && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/agent-venv)
COPY pyproject.toml setup.py README.md LICENSE /src/
COPY cryptfs /src/cryptfs
COPY agent /src/agent
COPY sam /src/sam
# the project and its dependencies as wheels; the C block path must really be in ours
RUN /opt/agent-venv/bin/pip wheel --no-cache-dir --wheel-dir /wheels /src \
    && /opt/agent-venv/bin/python -c "import glob, sys, zipfile; w = glob.glob('/wheels/confidential_model_serving-*.whl')[0]; sys.exit(0 if any('_blocks' in n for n in zipfile.ZipFile(w).namelist()) else 'the C block path was not built')"

FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends fuse3 libssl3 \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/agent-venv \
    || (apt-get update && apt-get install -y --no-install-recommends python3-venv \
        && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/agent-venv)
COPY --from=builder /wheels /tmp/agent-wheels
RUN /opt/agent-venv/bin/pip install --no-cache-dir --no-index --find-links /tmp/agent-wheels \
        confidential-model-serving \
    && rm -rf /tmp/agent-wheels

# The agent runs on the venv's interpreter; the venv's bin comes LAST on PATH, so that `agent`,
# `cryptfs` and `sam` are found but `python` in the EAS command is still the model server's.
ENV AGENT_PYTHON=/opt/agent-venv/bin/python \
    PATH="${PATH}:/opt/agent-venv/bin"

COPY entrypoint.sh /usr/local/bin/entrypoint.sh
RUN chmod 0755 /usr/local/bin/entrypoint.sh

ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
