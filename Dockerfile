# syntax=docker/dockerfile:1
# tenant-operator image: the operator itself, and the dump client that the
# backup Jobs it creates run (they use this same image).
#
#   docker build -t ghcr.io/tenancy-dev/tenant-operator:0.1.0 .
#
# PYTHON_IMAGE is the base of both stages: any Debian-based image with
# python3 and pip on PATH. devenv/images.sh builds on a local Debian bookworm
# base instead of the public image, so no registry is needed:
#   buildah build --build-arg PYTHON_IMAGE=localhost/tenant-operator-base:bookworm-<hash> .
#
# The container runs as UID 10001 with a read-only root filesystem: nothing
# is written outside /tmp (HOME points there; no .pyc files are written).

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: wheels for the project and every dependency ------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml ./
COPY operator/ operator/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime ----------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tenant-operator" \
      org.opencontainers.image.description="Kubernetes operator that provisions SaaS tenants" \
      org.opencontainers.image.licenses="Apache-2.0"

# mariadb-client provides mariadb-dump for the backup Jobs. Debian's
# package versions move with the base image's point releases, so they are
# not pinned here; rebuilding picks up security updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends mariadb-client ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 tenant-operator \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin tenant-operator

COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl \
 && rm -rf /wheels

ENV HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 9090
ENTRYPOINT ["tenant-operator"]
CMD ["run", "--config", "/etc/tenant-operator/config.yaml"]
