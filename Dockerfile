# syntax=docker/dockerfile:1
# goodmem-operator image: `make image` (Docker with BuildKit, or podman).
# Two stages: the builder makes wheels for the project and its runtime dependencies and installs only those,
# offline, into a virtual environment; the final stage is the base plus that environment: no compiler, no
# wheel, no pip cache and no pip.
# Runs as 65532:65532 and writes nothing to the image, so readOnlyRootFilesystem works (deploy/).
#
# The base is a build argument. Any image with python3 (3.11+) and its venv module works: the public
# Python image by default; `make image` builds from a Debian base made by mmdebstrap where Docker Hub
# cannot be reached (dev/goodmem_devcluster/image.py).

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# A CA bundle for pip (a path inside the build, e.g. one bind-mounted from the host with `podman build -v`).
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
# The project's wheel plus a wheel for every runtime dependency (the [test] extra is not installed).
RUN python3 -m venv /opt/build && /opt/build/bin/pip wheel --wheel-dir /wheels .
# The virtual environment the final stage copies: only those wheels, offline; then no pip (nor the setuptools a
# 3.11 venv carries). kubernetes (37) ships a second, asyncio copy of its whole client, kubernetes.aio: 68 MB with
# its bytecode, a fifth of the image, that neither the operator nor kopf imports (tests/e2e/test_image.py checks
# that it is gone and that the operator runs).
RUN python3 -m venv /opt/goodmem-operator \
 && /opt/goodmem-operator/bin/pip install --no-cache-dir --no-index --find-links=/wheels goodmem-operator \
 && /opt/goodmem-operator/bin/pip uninstall --yes pip setuptools \
 && rm -rf /opt/goodmem-operator/lib/python3*/site-packages/kubernetes/aio

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="goodmem-operator" \
      org.opencontainers.image.description="Manages GoodMem LLM registry entries as LLM custom resources" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LANG=C.UTF-8 \
    HOME=/tmp \
    TMPDIR=/tmp \
    PATH=/opt/goodmem-operator/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Only the installed venv comes over (same base, so its python3 link holds): no wheel, no build tool. Not a
# bind mount of the builder's /wheels: buildah (podman build) cannot mount a stage it took from its cache.
COPY --from=builder /opt/goodmem-operator /opt/goodmem-operator
# The public Python image's own pip goes too (a Debian base has none).
RUN if /usr/local/bin/python3 -m pip --version >/dev/null 2>&1; then /usr/local/bin/python3 -m pip uninstall --yes pip; fi
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["goodmem-operator"]
