# Layers the init agent onto a model-server image. The EAS command stays the container
# command: the entrypoint attests, fetches the key, mounts the model at MODEL_MOUNT_PATH and
# then runs it. Replace the region (cn-hangzhou) with yours.
ARG BASE_IMAGE=eas-registry-vpc.cn-hangzhou.cr.aliyuncs.com/pai-eas/chat-llm-webui:3.0-vllm
FROM ${BASE_IMAGE}

# fuse3 for the mount; gcc and the OpenSSL headers build the C block path (Debian/Ubuntu
# bases; on other bases install the equivalents: fuse3, gcc, openssl-devel).
RUN apt-get update \
    && apt-get install -y --no-install-recommends fuse3 gcc libc6-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml setup.py README.md LICENSE /opt/agent/
COPY cryptfs /opt/agent/cryptfs
COPY agent /opt/agent/agent
COPY sam /opt/agent/sam
RUN python3 -m pip install --no-cache-dir /opt/agent

COPY entrypoint.sh /usr/local/bin/entrypoint.sh
RUN chmod 0755 /usr/local/bin/entrypoint.sh

ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
