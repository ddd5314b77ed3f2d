# syntax=docker/dockerfile:1
# ortserve: a KServe v2 / Triton server (gRPC and REST) for ONNX models (onnxruntime), reading a Triton model
# repository.
#
# CPU image (default; python:3.11-slim, onnxruntime from the `serve` extra):
#   docker build -t ortserve:cpu .
#   docker run --rm -p 8000-8002:8000-8002 -v "$PWD/model_repository:/models:ro" ortserve:cpu
#
# CUDA image (nvidia/cuda runtime with cuDNN 9, onnxruntime-gpu from the `gpu` extra; the two onnxruntime
# wheels cannot be installed together, so the variant picks one):
#   docker build -t ortserve:cuda --build-arg VARIANT=gpu .
#   docker run --rm --gpus all -p 8000-8002:8000-8002 -v "$PWD/model_repository:/models:ro" ortserve:cuda
#
# Needs BuildKit (the default builder since Docker 23): it builds only the base stage that VARIANT names.
# Arguments replace the CMD below, so repeat its flags when adding one, e.g. `docker run ... ortserve:cpu
# --model-repository /models --grpc-address 0.0.0.0 --http-address 0.0.0.0 --metrics-address 0.0.0.0
# --model-control-mode explicit`, or set ORTSERVE_<FLAG> environment variables instead (flags win). Move the
# gRPC port with ORTSERVE_GRPC_PORT (not --grpc-port) so that the health check follows it; with
# --grpc-use-ssl, replace the HEALTHCHECK (it speaks plaintext).

# cpu | gpu
ARG VARIANT=cpu

# --- base images: one per variant, each with a Python >= 3.10 and the pip extra that matches it ---
FROM python:3.11.11-slim-bookworm AS base-cpu
ENV ORTSERVE_EXTRA=serve

FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04 AS base-gpu
ENV ORTSERVE_EXTRA=gpu
# Ubuntu 22.04's python3 is 3.10; its exact build is fixed by the pinned base tag, not by an apt version pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

# --- build: install ortserve and its serving dependencies into a venv, from the package folders only ---
# base-${VARIANT} is one of the two stages above, whose FROM lines pin their tags.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos/ protos/
COPY export/ export/
COPY serve/ serve/
COPY clients/ clients/
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir ".[${ORTSERVE_EXTRA}]"

# --- runtime: the venv, a non-root user, nothing else ---
# base-${VARIANT} again (a local stage with pinned tags), so the venv's interpreter path is the same.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# A fixed numeric UID so that Kubernetes' runAsNonRoot can verify it without a runAsUser.
RUN groupadd --system --gid 10001 ortserve \
    && useradd --system --uid 10001 --gid ortserve --no-create-home --shell /usr/sbin/nologin ortserve \
    && mkdir /models
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /models

# 8000: KServe v2 REST, 8001: gRPC (inference.GRPCInferenceService, grpc.health.v1), 8002: Prometheus metrics.
EXPOSE 8000 8001 8002

# Healthy means ServerReady over the server's own protocol (no curl in the image); exits non-zero otherwise.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, grpc; from ortserve.protos import grpc_service_pb2 as pb, grpc_service_pb2_grpc as rpc; stub = rpc.GRPCInferenceServiceStub(grpc.insecure_channel('127.0.0.1:' + (os.environ.get('ORTSERVE_GRPC_PORT') or '8001'))); sys.exit(0 if stub.ServerReady(pb.ServerReadyRequest(), timeout=4).ready else 1)"]

# The image binds all interfaces; the server's own default is 127.0.0.1.
ENTRYPOINT ["ortserve", "serve"]
CMD ["--model-repository", "/models", "--grpc-address", "0.0.0.0", "--http-address", "0.0.0.0", "--metrics-address", "0.0.0.0"]
