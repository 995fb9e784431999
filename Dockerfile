# syntax=docker/dockerfile:1
# The QuSec inference service.
#
#   CPU (default):  docker build -t qusec .
#   CUDA:           docker build --build-arg VARIANT=cuda \
#                       --build-arg TORCH_PIP_ARGS="--index-url <a CUDA wheel index>" -t qusec:cuda .
#
# Installs as the README does: torch==2.13.0 first (TORCH_PIP_ARGS picks the wheel
# source), cleverhans 4.0.0 without its TensorFlow metadata and torchattacks 3.5.1
# without its torchvision metadata (the admin jobs' attacks), then the project itself,
# without the test extras. The bundled checkpoints are copied in; compose mounts them
# read-only over the same path instead.

ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.4.1-base-ubuntu22.04

FROM ${PYTHON_IMAGE} AS base-cpu

FROM ${CUDA_IMAGE} AS base-cuda
# Ubuntu's python3.11 packages follow the distribution's security updates; pinning
# them would stop that.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
ARG TORCH_PIP_ARGS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
WORKDIR /app

RUN python3.11 -m venv /opt/venv
# TORCH_PIP_ARGS holds pip options (not packages), split into words on purpose;
# hadolint reads it as an unpinned package.
# hadolint ignore=SC2086,DL3013
RUN pip install ${TORCH_PIP_ARGS} torch==2.13.0 \
    && pip install --no-deps cleverhans==4.0.0 torchattacks==3.5.1

COPY pyproject.toml README.md ./
COPY models ./models
COPY training ./training
COPY robustness ./robustness
COPY service ./service
# The project itself, at the version of this checkout.
# hadolint ignore=DL3013
RUN pip install . && rm -rf /app/build
COPY checkpoints ./checkpoints
# The evaluation subsets the robustness check uses by default.
COPY data/eval ./data/eval

# A checkpoint written locally may be owner-only (0600); the service user must read it.
# /var/lib/qusec holds the robustness-job database; compose mounts a volume there.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin qusec \
    && chmod -R a+rX /app/checkpoints /app/data \
    && mkdir -p /var/lib/qusec \
    && chown 10001 /var/lib/qusec
USER 10001

ENV QUSEC_HOST=0.0.0.0 \
    QUSEC_PORT=8000 \
    QUSEC_CHECKPOINTS=/app/checkpoints/mnist-tq2,/app/checkpoints/cifar10-tq4 \
    QUSEC_EVAL_DIR=/app/data/eval \
    QUSEC_ROBUSTNESS_DB=/var/lib/qusec/robustness-jobs.sqlite3 \
    QUSEC_DEVICE=auto \
    QUSEC_WORKERS=2
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "service.healthcheck"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service"]
