# syntax=docker/dockerfile:1
# Fireside in one image, for both roles (the command picks):
#   gateway: fireside serve --host 0.0.0.0 --port 8000 [--workers worker:50051,...]
#   worker:  fireside worker --host 0.0.0.0 --port 50051 --metrics-port 8001 [--model /models/X]
# A CUDA build: docker build --build-arg TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" .
# The image runs as uid 10001 with a read-only root: /data (the data directory) is a volume,
# /tmp a tmpfs or emptyDir.

# ---- 1. The chat page: Svelte + TypeScript, built into fireside/web_dist ----
# Node 20.19 or newer (Vite 8); the 20 tag follows the newest 20.x.
FROM node:20-bookworm-slim AS web
WORKDIR /src/web
# The lock file alone first: `npm ci` is cached until the dependencies change.
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

# ---- 2. Python: torch, the package and (when the checkout has them) the ggml kernels ----
FROM python:3.11-slim-bookworm AS python
# Torch is pinned as the Makefile pins it (TORCH_SPEC); the CPU build by default, since the
# CUDA wheels add gigabytes a CPU host never uses.
ARG TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# A compiler and CMake for scripts/build-kernels.sh (ggml's quantized matmuls); this stage only.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake ninja-build \
    && rm -rf /var/lib/apt/lists/*
# TORCH_SPEC carries its own pin (and an index): split into words on purpose.
# hadolint ignore=DL3013,SC2086
RUN python -m venv /opt/venv \
    && pip install $TORCH_SPEC
WORKDIR /app
# The dependencies before the source, so that an edit to the code reuses this layer: the
# package is installed from pyproject.toml with an empty module, then dropped.
COPY pyproject.toml README.md ./
RUN mkdir fireside && touch fireside/__init__.py \
    && pip install . \
    && pip uninstall -y fireside \
    && rm -rf fireside build
COPY fireside/ fireside/
COPY scripts/ scripts/
COPY --from=web /src/fireside/web_dist/ fireside/web_dist/
# The ggml kernels (quantized weights) are compiled for the building machine's CPU, as
# llama.cpp builds them: build the image where it will run, or BUILD_KERNELS=0 for none.
ARG BUILD_KERNELS=1
# Editable, so fireside/ stays at /app: the kernels' library builds in place beside it (only
# the library is kept, not CMake's build tree).
RUN pip install --no-deps -e . \
    && if [ "$BUILD_KERNELS" = 1 ] && [ -f scripts/build-kernels.sh ]; then \
         PYTHON=python bash scripts/build-kernels.sh && rm -rf fireside/kernels/_build/cmake; \
       fi \
    && python -m compileall -q fireside

# ---- 3. The runtime: slim Python, no compiler, no node, a non-root user ----
FROM python:3.11-slim-bookworm AS runtime
# jemalloc: decode runs 5-12% faster under it (fireside/allocator.py); bubblewrap: the python
# tool's sandbox (off, with one warning, where the container may not make namespaces);
# libgomp: the ggml kernels' threads.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libjemalloc2 bubblewrap libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 fireside \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin fireside \
    && mkdir /data \
    && chown 10001:10001 /data \
    && chmod 0700 /data
COPY --from=python /opt/venv /opt/venv
COPY --from=python /app /app
# Everything a process writes goes to /data or /tmp, so the root filesystem can be read-only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    FIRESIDE_DATA_DIR=/data \
    FIRESIDE_LOG_FORMAT=json
VOLUME ["/data"]
WORKDIR /app
USER 10001:10001
# 8000: the gateway (HTTP); 50051: a worker's gRPC; 8001: a worker's /metrics, /livez, /readyz.
EXPOSE 8000 50051 8001
ENTRYPOINT ["fireside"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
