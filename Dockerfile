# syntax=docker/dockerfile:1
# avatar-relay: session-token broker and Host Mode relay for SpatialReal AvatarKit avatars.
#
#   docker build -t avatar-relay .
#   docker run -p 8080:8080 avatar-relay                          # emulator mode (no credentials)
#   docker run -p 8080:8080 --env-file .env avatar-relay          # real SpatialReal
#
# No secret is baked in: configuration comes from the environment at run time (see .env.example).
# tests/deploy/test_image.py replays this file's install and start commands in a fresh venv.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ghcr.io/astral-sh/uv:0.13.8 AS uv

# --- builder: resolve nothing, install exactly what uv.lock says into /opt/venv ---
FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# Dependencies first, so this layer is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock README.md ./
# The client distribution (clients/python) is a workspace member: the server imports its codec.
COPY clients/python/pyproject.toml clients/python/README.md ./clients/python/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace
COPY app ./app
COPY clients/python/avatar_relay_client ./clients/python/avatar_relay_client
# --no-editable: the venv holds a real copy of the package, so /src is not needed at run time.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# --- runtime: the venv and an unprivileged user, nothing else ---
FROM ${PYTHON_IMAGE} AS runtime
# espeak-ng: the demo agent's text-to-speech engine (the server runs without it, demo agent off).
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends espeak-ng \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 avatar \
    && useradd --system --uid 10001 --gid avatar --no-create-home --shell /usr/sbin/nologin avatar
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8080
# An empty working directory: no .env is read from the image, only the real environment.
WORKDIR /srv
USER 10001:10001
EXPOSE 8080
# Liveness only (/healthz); readiness (/readyz) is for load balancers and Kubernetes.
# The slim image has no curl, so Python does the request.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=4)"]
# SIGTERM starts a graceful drain: readiness 503, relay conversations in flight finish
# (DRAIN_TIMEOUT_SECONDS, 30 s), sessions handed over (<= 5 s), then up to 15 s for the rest
# (app/server.py): give the container a grace period above 50 s.
STOPSIGNAL SIGTERM
CMD ["avatar-relay", "serve"]
