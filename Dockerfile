# colorize-service image. CPU build by default; the CUDA build is `--build-arg FLAVOR=cuda`
# (docker-compose.gpu.yml does that). Weights are not in the image unless BAKE_WEIGHTS=1:
# the default image serves the exemplar engine and tells clients how to fetch the others.
#
#   docker build -t colorize-service:cpu .
#   docker build -t colorize-service:cuda --build-arg FLAVOR=cuda .
#   docker build -t colorize-service:cpu-weights --build-arg BAKE_WEIGHTS=1 .
#
# Only classic Dockerfile syntax is used (no RUN --mount), so the legacy builder that
# docker-compose v1 drives also works; BuildKit skips the stages the chosen FLAVOR does not need.

# Tags are pinned; pin the digests too (`@sha256:...`) where builds must be reproducible.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
# The CUDA base supplies the container-toolkit wiring (NVIDIA_* variables, compat libraries);
# the torch wheel brings its own CUDA runtime, whose version must match TORCH_CUDA below.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
ARG FLAVOR=cpu

# --- the package as a wheel (pure Python, so it installs under either base's interpreter) ---
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN python -m pip wheel --no-deps --wheel-dir /wheels .

# --- the interpreter each flavour runs on ---
FROM ${PYTHON_IMAGE} AS python-cpu

FROM ${CUDA_IMAGE} AS python-cuda
# Ubuntu's python3 (3.12 on 24.04; the package needs >= 3.10) with venv for the deps stage.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

# --- a virtual environment with torch pinned first, then the package and its dependencies ---
FROM python-${FLAVOR} AS deps
ARG FLAVOR
# The same torch as scripts/_venv.sh; a floating requirement would pull several GB of CUDA
# wheels into the CPU image, or a different build than the one CI tested.
ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu128
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN case "$FLAVOR" in \
        cpu) index=https://download.pytorch.org/whl/cpu ;; \
        cuda) index="https://download.pytorch.org/whl/${TORCH_CUDA}" ;; \
        *) echo "FLAVOR must be cpu or cuda, got '$FLAVOR'" >&2; exit 1 ;; \
    esac \
    && pip install "torch==${TORCH_VERSION}" --index-url "$index"
COPY --from=wheel /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels

# --- optional: checkpoints baked into the image (needs network access at build time) ---
FROM deps AS weights
ARG BAKE_WEIGHTS=0
RUN mkdir -p /weights \
    && if [ "$BAKE_WEIGHTS" = "1" ]; then \
        colorize-service fetch-weights --weights-dir /weights --no-progress; \
    elif [ "$BAKE_WEIGHTS" != "0" ]; then \
        echo "BAKE_WEIGHTS must be 0 or 1, got '$BAKE_WEIGHTS'" >&2; exit 1; \
    fi

# --- the runtime image ---
FROM python-${FLAVOR} AS runtime
# A numeric UID: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 colorize \
    && useradd --system --uid 10001 --gid colorize --home-dir /home/colorize --create-home \
        --shell /usr/sbin/nologin colorize
COPY --from=deps /opt/venv /opt/venv
# Owned by the service user so `fetch-weights` can fill a fresh named volume: Docker copies
# this directory (baked weights included) into an empty named volume on first mount.
COPY --from=weights --chown=10001:10001 /weights /weights
# PYTORCH_CUDA_ALLOC_CONF: expandable segments let the caching allocator grow and shrink one
# mapping instead of carving fixed blocks, so fragmentation stays low and reserved-but-unused
# memory stays close to allocated. The admission budget counts the driver's view of the device,
# so memory stranded in fragmented blocks would make it refuse jobs that would fit. (Newer
# PyTorch also reads PYTORCH_ALLOC_CONF; this name is its alias, honoured by torch 2.13.)
# No effect on the CPU build.
# MALLOC_ARENA_MAX=2: glibc's per-thread arenas kept ~45 MiB of RSS after a load test that two
# arenas do not (docs/reliability.md), and the CPU budget is computed from RSS.
ENV PATH=/opt/venv/bin:$PATH \
    MALLOC_ARENA_MAX=2 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    COLORIZE_HOST=0.0.0.0 \
    COLORIZE_PORT=8000 \
    COLORIZE_WEIGHTS_DIR=/weights \
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
VOLUME ["/weights"]
WORKDIR /home/colorize
USER 10001:10001
EXPOSE 8000
# /livez, not /readyz: a container without weights is alive and serves the exemplar engine;
# readiness belongs to the orchestrator (Kubernetes probes /readyz itself). Python, not curl,
# because the slim image has no curl; the port follows COLORIZE_PORT.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('COLORIZE_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["colorize-service"]
# Host and port come from COLORIZE_HOST/COLORIZE_PORT above (the same as
# `serve --host 0.0.0.0 --port 8000`), so one `-e COLORIZE_PORT=...` moves the server and the
# health check together. `docker run IMAGE fetch-weights` runs the other subcommand.
CMD ["serve"]
