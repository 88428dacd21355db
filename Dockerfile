# The service image: `docker compose up` builds it; deploy/k8s/ runs it.

# python:3.11-slim (Python 3.11.16 on Debian trixie), pinned by its multi-arch index digest:
# a rebuild gets the same base until someone bumps the tag and the digest together. A build
# argument, so that where no registry is reachable the container test builds this same file on
# a local stand-in with the same Python minor version (tests/podman.py).
ARG BASE_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7
FROM ${BASE_IMAGE} AS base

# Builder: the hash-locked runtime requirements in a virtual environment: the service and LiteRT,
# no TensorFlow (the workers run the LiteRT artifacts exported beside each SavedModel). Every
# requirement is a binary wheel, so no compiler is needed; the stage keeps pip's work out of the
# runtime image.
FROM base AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
# --no-deps: the lock lists every dependency, each with its hashes (make lock writes it). Then
# the installers venv put in leave: nothing imports setuptools at run time, and pip, removing
# itself last, is not needed to run.
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes --no-deps \
        --requirement /tmp/requirements.lock \
    && /opt/venv/bin/python -m pip uninstall --yes setuptools pip

# Runtime: the venv, the entry script, the service and the shipped model; nothing else.
FROM base AS runtime
# The base's own Python ships pip, setuptools and wheel (python:3.11-slim does; the test's
# Debian stand-in has none): the service never runs them, so they leave as well.
RUN if python -m pip --version >/dev/null 2>&1; then \
        python -m pip uninstall --yes --no-cache-dir setuptools wheel pip; \
    fi
# /tmp is the one writable path (a tmpfs in docker-compose.yml, an emptyDir in deploy/k8s/):
# the metrics directory, temporary files and HOME (the user has none) all live there, so
# the root filesystem can be mounted read-only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    PROMETHEUS_MULTIPROC_DIR=/tmp/fmnist-metrics \
    PORT=8000 \
    FMNIST_GRPC_PORT=8001 \
    FMNIST_METRICS_PORT=9100
RUN groupadd --system --gid 10001 fmnist \
    && useradd --system --uid 10001 --gid fmnist --no-create-home --shell /usr/sbin/nologin fmnist
WORKDIR /app
# Copied as root and left root-owned: the service user reads its code and model, never changes them.
COPY --from=builder /opt/venv /opt/venv
COPY bin/ bin/
COPY service/ service/
COPY models/ models/
USER 10001:10001
# REST, gRPC (both services and grpc.health.v1 on one port, in every worker), metrics.
EXPOSE 8000 8001 9100
# Ready, not merely alive: the model is loaded and warmed up (GET /readyz answers 200).
# Python's standard library makes the request, so the image needs no curl. The start period
# covers a cold start several times over on a busy node (docs/benchmarks.md, "The image").
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/readyz', timeout=4)"]
# The entry script of `make serve` and the end-to-end tests: it empties the metrics directory,
# then execs gunicorn, which as PID 1 gets SIGTERM and drains in-flight requests.
CMD ["bin/serve"]
