# The gateway image: `gateway serve` by default, `gateway worker` with CMD ["worker"].
#
#   docker build -t gateway .
#   docker run --rm -p 8080:8080 -e REDIS_URL=redis://redis:6379/0 gateway
#
# The builder installs the package and its dependencies (from pyproject.toml)
# into a virtualenv; the runtime stage copies only that venv, so no build tools
# or pip caches reach the final image. tests/deploy/test_image.py performs the
# same install in a clean venv and starts the server from it.

FROM python:3.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Metadata first, then the package: the layer with the dependency resolution is
# rebuilt only when pyproject.toml or the code changes.
COPY pyproject.toml ./
COPY gateway ./gateway
RUN pip install --no-cache-dir . \
    && pip check


FROM python:3.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="gateway" \
      org.opencontainers.image.description="Hybrid realtime/batch LLM gateway" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    GATEWAY_PORT=8080
# GATEWAY_PORT is the port HEALTHCHECK probes. config/example.yaml reads it for
# server.port too; with a config that sets another port, set GATEWAY_PORT to match.

# A numeric user, so Kubernetes can verify runAsNonRoot without a name lookup.
# /app is the working directory; .gateway/ under it holds the Batch API's file
# store by default (mount a volume there, or set files.dir).
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin gateway \
    && install -d -o 10001 -g 10001 -m 0750 /app /app/.gateway

# The venv stays owned by root: the gateway user can run it but not change it.
COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001
EXPOSE 8080

# No curl in slim images: probe /healthz with the interpreter that is already there.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('GATEWAY_PORT') or '8080'; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:' + port + '/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["gateway"]
CMD ["serve", "--host", "0.0.0.0"]
