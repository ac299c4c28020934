# syntax=docker/dockerfile:1
# goodmem-operator image: `make image` (needs a Docker engine with BuildKit).
# Two stages: the builder makes wheels for the project and its runtime dependencies; the final
# stage installs only those wheels, offline, with no compiler, no pip cache and, at the end, no pip.
# Runs as 65532:65532 and writes nothing to the image, so readOnlyRootFilesystem works (deploy/).

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
# The project's wheel plus a wheel for every runtime dependency (the [test] extra is not installed).
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="goodmem-operator" \
      org.opencontainers.image.description="Manages GoodMem LLM registry entries as LLM custom resources" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    TMPDIR=/tmp
# The wheels come in through a bind mount: they never become a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels goodmem-operator \
 && pip uninstall --yes pip \
 && rm -rf /root/.cache
USER 65532:65532
EXPOSE 8081
ENTRYPOINT ["goodmem-operator"]
