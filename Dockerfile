# syntax=docker/dockerfile:1
# One image for every usagehub service; the command picks the service:
#   docker run usagehub                      -> usagehub-gateway (default)
#   docker run usagehub usagehub-ingest
#   docker run usagehub usagehub-projector
#   docker run usagehub usagehub migrate
# Configuration only through USAGEHUB_* environment variables (see docs/operations.md).

# ---- builder: install the locked dependency set (wheels only) and the project into a venv ---------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"

WORKDIR /src
# Dependencies first, so that a code change does not reinstall them.
COPY requirements.lock ./
RUN pip install --only-binary=:all: -r requirements.lock

COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
# The project itself, without touching the locked dependency set; compile bytecode now because the
# runtime root filesystem is read-only.
RUN pip install --no-deps . \
    && python -m compileall -q /opt/venv

# ---- runtime: no compilers, no build tools, non-root -------------------------------------------------
FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="usagehub" \
      org.opencontainers.image.description="Event-sourced usage platform: gateway, ingest, projector"

RUN groupadd --system --gid 10001 usagehub \
    && useradd --system --uid 10001 --gid usagehub --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin usagehub

COPY --from=builder /opt/venv /opt/venv
COPY deploy/docker/healthcheck.py /opt/usagehub/healthcheck.py

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    USAGEHUB_HTTP_HOST=0.0.0.0 \
    USAGEHUB_LOG_FORMAT=json

# Relative paths (USAGEHUB_DATA_DIR) land on /tmp, the only writable place (an emptyDir in Kubernetes).
WORKDIR /tmp
USER 10001:10001

# Gateway HTTP port and the ingest/projector health+metrics port.
EXPOSE 8080 9100

# One container runs one service: the gateway answers on USAGEHUB_HTTP_PORT, ingest and projector on
# USAGEHUB_METRICS_PORT; the script passes when /healthz answers 200 on either (no curl in slim).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/opt/usagehub/healthcheck.py"]

CMD ["usagehub-gateway"]
