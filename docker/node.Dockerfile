# syntax=docker/dockerfile:1.7
#
# openmaas GPU node image: the node agent (`python -m compute.agent`) on top of the
# official vLLM image (CUDA, PyTorch, vLLM and nvidia-ml-py already inside). One container
# per GPU host; the agent pulls its desired state from the portal and starts/stops
# `vllm serve` (and CPU `transformers` engine) replicas as child processes.
#
# Build from the repository root:
#     docker build -f docker/node.Dockerfile -t openmaas-node .
#
# Run on a GPU host (NVIDIA driver + NVIDIA Container Toolkit installed):
#     docker run -d --name openmaas-node --restart unless-stopped \
#         --gpus all --ipc host --init --network host \
#         -e OPENMAAS_NODE_TOKEN=<token from `manage.py create_node_token NAME`> \
#         -v openmaas-agent:/var/lib/openmaas-agent \
#         openmaas-node \
#         --portal https://maas.example.com --address 10.0.0.21 --bind-host 10.0.0.21
#
#   --gpus all      every GPU of the host is offered to the pool (NVML inventory).
#   --ipc host      vLLM's tensor-parallel workers share memory through /dev/shm
#                   (or give --shm-size=16g instead).
#   --init          a PID 1 that reaps orphaned engine worker processes.
#   --network host  replicas listen on free ports chosen at start, and the portal's web
#                   processes connect to http://<--address>:<port> directly; a bridge
#                   network cannot publish ports that are not known in advance.
#   -v …:/var/lib/openmaas-agent   ($OPENMAAS_AGENT_DIR) the model cache (one directory
#                   per model revision, sha256-verified), replica logs and vLLM/Triton
#                   compile caches. Keep it on a volume: models are tens of GB and are
#                   fetched again after every container re-creation otherwise. A host
#                   directory must be writable by uid 10001 (chown 10001:10001 DIR).
#
# Network needs of a node: outbound HTTPS to the portal (--portal) and to the object
# store (S3_PUBLIC_ENDPOINT: model files come as presigned URLs); no database, broker or
# S3 credentials ever reach it. Inbound: the portal's web containers must reach the
# replica ports on --address, so bind (--bind-host) a private/VPN interface and allow
# only the portal there: replicas are plain HTTP and do not check API keys.

ARG VLLM_VERSION=0.33.0
ARG VLLM_IMAGE=vllm/vllm-openai:v${VLLM_VERSION}
FROM ${VLLM_IMAGE}

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# openmaas lives in its own virtual environment that still sees the image's packages
# (torch, vLLM, transformers, nvidia-ml-py), so they are not installed twice: a .pth file
# adds the site-packages of the image's python3 (system or venv, whichever the vLLM
# image uses) after the venv's own. The platform's `datasets` package (a Django app) thus
# never overwrites a Hugging Face `datasets` in the image (the two share a top-level name).
RUN python3 -m venv /opt/openmaas/venv \
    && python3 -c "import site; print('import site; ' + '; '.join(f'site.addsitedir({p!r})' for p in site.getsitepackages()))" \
        > "$(/opt/openmaas/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/openmaas-image-packages.pth" \
    && /opt/openmaas/venv/bin/python -m pip install --upgrade pip "setuptools>=69" wheel
ENV PATH=/opt/openmaas/venv/bin:$PATH

COPY pyproject.toml /tmp/openmaas/pyproject.toml
COPY docker/requirements.py /tmp/openmaas/requirements.py
# [project.dependencies] + the `gpu` extra (vllm, nvidia-ml-py), minus the embedded local
# stack; whatever the vLLM image already satisfies is kept as it is.
RUN python /tmp/openmaas/requirements.py /tmp/openmaas/pyproject.toml --extra gpu \
        > /tmp/openmaas/requirements.txt \
    && pip install -r /tmp/openmaas/requirements.txt

COPY . /tmp/openmaas/src
RUN pip install --no-deps /tmp/openmaas/src \
    && rm -rf /tmp/openmaas \
    && python -c "import importlib.util as u, compute.agent.core, pynvml; assert u.find_spec('vllm')"

RUN useradd --uid 10001 --create-home --home-dir /home/openmaas --shell /usr/sbin/nologin \
        openmaas \
    && mkdir -p /var/lib/openmaas-agent \
    && chown openmaas:openmaas /var/lib/openmaas-agent

# OPENMAAS_NODE_TOKEN (required) is given at run time (-e, an env file, or a secret);
# never bake it into the image. Models come only from the portal's object store, so the
# engines never call out to a model hub, and vLLM's usage statistics stay off.
ENV OPENMAAS_AGENT_DIR=/var/lib/openmaas-agent \
    HOME=/home/openmaas \
    XDG_CACHE_HOME=/var/lib/openmaas-agent/cache \
    HF_HUB_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1

VOLUME ["/var/lib/openmaas-agent"]
WORKDIR /var/lib/openmaas-agent
USER openmaas

# The agent has no HTTP endpoint of its own; the portal tracks its heartbeats.
HEALTHCHECK NONE

ENTRYPOINT ["python", "-m", "compute.agent"]
CMD ["--help"]
