# syntax=docker/dockerfile:1
#
# Two images from one file, both built from uv.lock:
#   docker build -t connector-sidecar .                               (the default: the sidecar)
#   docker build --target echo-host -t connector-echo-host .          (the example echo host)
# compose.yaml builds and runs both.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

# ---- build: the locked dependencies, then the workspace packages, into /app/.venv ----------
FROM ${PYTHON_IMAGE} AS build-base
COPY --from=uv /uv /uvx /bin/
# Behind a proxy that re-signs TLS: `--build-arg UV_SYSTEM_CERTS=true` makes uv trust the system
# bundle, and mounting the host's bundle over it for the build only (buildah bud
# `-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro`) adds the proxy's CA.
# A build argument and a build-time mount: neither ends up in an image.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Only the manifests first: the dependency layer is rebuilt when the lock changes, not the code.
COPY pyproject.toml uv.lock README.md ./
COPY contracts/pyproject.toml contracts/pyproject.toml
COPY sidecar/pyproject.toml sidecar/pyproject.toml
COPY sdk/pyproject.toml sdk/pyproject.toml

FROM build-base AS build-sidecar
ARG UV_SYSTEM_CERTS
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-workspace --package connector-sidecar
COPY contracts contracts
COPY sidecar sidecar
COPY sdk sdk
# --no-editable: the packages are installed into the venv, so the runtime needs no source tree.
# chmod: uv leaves its venv lock file writable by everyone; the runtime user must write only /data.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --package connector-sidecar \
    && chmod -R go-w /app/.venv

FROM build-base AS build-echo-host
ARG UV_SYSTEM_CERTS
# The echo host uses the SDK, plus Starlette and Hypercorn (which the sidecar package brings).
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-workspace --all-packages
COPY contracts contracts
COPY sidecar sidecar
COPY sdk sdk
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --all-packages \
    && chmod -R go-w /app/.venv

# ---- runtime: the same Python, no uv, no compilers, a user without privileges ---------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 connector \
    && useradd --system --uid 10001 --gid connector --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin connector \
    && mkdir -p /data \
    && chown connector:connector /data
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
STOPSIGNAL SIGTERM

FROM runtime AS echo-host
COPY --from=build-echo-host /app/.venv /app/.venv
COPY examples /app/examples
ENV ECHO_HOST=0.0.0.0 \
    ECHO_PORT=8000 \
    ECHO_DATA_DIR=/data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ECHO_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["python", "-m", "examples.echo_host"]

# The last stage is what a plain `docker build .` produces: the sidecar.
FROM runtime AS sidecar
COPY --from=build-sidecar /app/.venv /app/.venv
# Inside a container the sidecar must listen on every interface; its data lives on a volume.
ENV SIDECAR_HOST=0.0.0.0 \
    SIDECAR_PORT=8787 \
    SIDECAR_DATA_DIR=/data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8787
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SIDECAR_PORT', '8787'), timeout=2)"]
# Exec form: the sidecar is PID 1's direct child (compose adds init), so SIGTERM reaches it.
ENTRYPOINT ["connector-sidecar"]
CMD ["serve"]
