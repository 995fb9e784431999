# syntax=docker/dockerfile:1
# The QuSec inference service.
#
# CPU (the default): the CPU build of torch on a Debian bookworm Python image. Only PyTorch's
# CPU wheel index carries `torch==2.13.0+cpu`, so name it (this file names no index hosts):
#
#   docker build --build-arg TORCH_PIP_ARGS="--extra-index-url <PyTorch's CPU wheel index>" \
#       -t qusec:cpu .
#
# Podman (and buildah): add --format docker, or the HEALTHCHECK below is dropped (the OCI image
# format has no health check):
#
#   podman build --format docker \
#       --build-arg TORCH_PIP_ARGS="--extra-index-url <PyTorch's CPU wheel index>" -t qusec:cpu .
#
# CUDA is one switch, another base and another torch requirement (and the wheel index that
# carries it; the plain `torch==2.13.0` on the default index is a CUDA build):
#
#   docker build --build-arg BASE_IMAGE=docker.io/nvidia/cuda:12.4.1-base-ubuntu22.04 \
#       --build-arg TORCH_REQUIREMENT=torch==2.13.0 -t qusec:cuda .
#
# Pip options reach every pip install below: PIP_INDEX_URL, PIP_EXTRA_INDEX_URL,
# PIP_FIND_LINKS and PIP_TRUSTED_HOST as build arguments (pip reads them from the
# environment), a CA bundle as the build secret `pip_ca` (for a TLS-intercepting proxy), and a
# whole pip.conf (credentials belong there, never in build arguments, which the image history
# records) as the build secret `pip_conf`:
#
#   docker build --secret id=pip_ca,src=/path/to/ca-bundle.crt \
#       --build-arg PIP_INDEX_URL=<your mirror> ... .
#
# Installs as the README does: torch first, cleverhans 4.0.0 without its TensorFlow metadata
# and torchattacks 3.5.1 without its torchvision metadata (the admin jobs' attacks), then the
# project itself, without the test extras. The bundled checkpoints are the image's own; mount
# others at another path and name them in QUSEC_CHECKPOINTS (docs/service.md, "Containers").

# Any base with python3.11, or a Debian/Ubuntu base that can install it (the step below).
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE_IMAGE}

# Bases without python3.11 (the CUDA one) get it from their distribution, whose security
# updates pinning would stop.
# hadolint ignore=DL3008
RUN if ! command -v python3.11 >/dev/null 2>&1; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3.11 python3.11-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
WORKDIR /app
RUN python3.11 -m venv /opt/venv

# Build-time only: pip reads these from the environment; empty ones are ignored.
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_FIND_LINKS=""
ARG PIP_TRUSTED_HOST=""
# The torch build: the local version label makes pip refuse any other build rather than pull
# a multi-GB CUDA one. TORCH_PIP_ARGS: pip options for this line only (its wheel index).
ARG TORCH_REQUIREMENT="torch==2.13.0+cpu"
ARG TORCH_PIP_ARGS=""

# TORCH_PIP_ARGS holds pip options (not packages), split into words on purpose; hadolint
# reads it as an unpinned package.
# hadolint ignore=SC2086,DL3013
RUN --mount=type=secret,id=pip_ca --mount=type=secret,id=pip_conf \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi \
    && pip install ${TORCH_PIP_ARGS} "${TORCH_REQUIREMENT}" \
    && pip install --no-deps cleverhans==4.0.0 torchattacks==3.5.1

# Readable by the service user whatever the checkout's umask (755: the mode every builder
# applies alike; files and directories share it).
COPY --chmod=755 pyproject.toml README.md ./
COPY --chmod=755 models ./models
COPY --chmod=755 training ./training
COPY --chmod=755 robustness ./robustness
COPY --chmod=755 service ./service
# The project itself, at the version of this checkout.
# hadolint ignore=DL3013
RUN --mount=type=secret,id=pip_ca --mount=type=secret,id=pip_conf \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi \
    && pip install . \
    && rm -rf /app/build

# /var/lib/qusec holds the robustness-job database; compose mounts a volume there.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin qusec \
    && mkdir -p /var/lib/qusec \
    && chown 10001 /var/lib/qusec
# The bundled checkpoints (a local one may be owner-only, 0600) and the evaluation subsets the
# robustness check uses by default, owned by root and readable by the service user.
COPY --chmod=755 checkpoints ./checkpoints
COPY --chmod=755 data/eval ./data/eval
# The published robustness reports of the bundled models (JSON only, without docs/results/
# extra's narrower runs): until a qualifying check of a model finishes, its robustness figures
# come from the report made on its weights (docs/service.md, "Published reports").
COPY --chmod=755 docs/results/*.json ./docs/results/
COPY --chmod=755 docs/results/adversarial/*.json ./docs/results/adversarial/
COPY --chmod=755 docs/results/resnet/*.json ./docs/results/resnet/
USER 10001

ENV QUSEC_HOST=0.0.0.0 \
    QUSEC_PORT=8000 \
    QUSEC_CHECKPOINTS=/app/checkpoints/mnist-pgd,/app/checkpoints/cifar10-resnet20-fgsm,/app/checkpoints/cifar10-resnet20,/app/checkpoints/mnist-tq2,/app/checkpoints/cifar10-tq4 \
    QUSEC_EVAL_DIR=/app/data/eval \
    QUSEC_PUBLISHED_REPORTS=/app/docs/results \
    QUSEC_ROBUSTNESS_DB=/var/lib/qusec/robustness-jobs.sqlite3 \
    QUSEC_DEVICE=auto \
    QUSEC_WORKERS=2
EXPOSE 8000
# The health check exits 0 once the service is ready.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "service.healthcheck"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service"]
