# syntax=docker/dockerfile:1
#
# authsidecar image: a builder stage makes a wheel of the project and installs it, with its
# dependencies, into /opt/venv; the final stage copies only that venv onto the same slim base.
#
#   docker build -t authsidecar:0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --rm -p 8080:8080 -p 9464:9464 \
#     -v "$PWD/authsidecar.yaml:/etc/authsidecar/authsidecar.yaml:ro" authsidecar:0.1.0
#
# Configuration: a YAML file mounted at /etc/authsidecar/authsidecar.yaml plus AUTHSIDECAR_*
# environment overrides (secrets as *_FILE paths or injected variables). With no file to mount
# (ECS), run `serve` alone and pass every key through the environment.

# Both stages use the same base: the venv's interpreter links point at its /usr/local/bin/python3.11.
# Release builds should also pin the digest: --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar/ sidecar/
# pip builds the wheel in an isolated environment (setuptools, per pyproject's build-system), then
# installs it and its dependencies (pyproject's version ranges) into the venv. pip byte-compiles
# everything here, so nothing needs writing under the read-only root filesystem at run time.
RUN python -m venv /opt/venv \
 && python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/python -m pip install --no-cache-dir /wheels/authsidecar-*.whl

FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="authsidecar" \
      org.opencontainers.image.description="OIDC / AWS Cognito auth proxy that runs as a sidecar next to an app container" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# A fixed numeric UID/GID: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 authsidecar \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin authsidecar

# Root-owned and so read-only for the runtime user.
COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 10001:10001
# 8080: the proxied port (listen.port); 9464: /healthz, /readyz, /metrics (admin.port).
EXPOSE 8080 9464

# Liveness only (/healthz): /readyz also waits for the provider's signing keys, and an unhealthy
# container is restarted, which would not bring a provider back. Slim images have no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=3)"]

ENTRYPOINT ["authsidecar"]
CMD ["serve", "--config", "/etc/authsidecar/authsidecar.yaml"]
