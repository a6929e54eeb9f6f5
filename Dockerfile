# syntax=docker/dockerfile:1
# gepa-stream daemon image: `gepa-stream run` by default; the compose file also runs the
# MLflow tracking server from it (same MLflow version as the daemon's client).
#
# Volumes mounted on /var/lib/gepa-stream/{state,mlflow} inherit the non-root owner.
# Configuration: GEPA_STREAM_* environment variables (daemon/settings.py) and the policy file
# mounted at $GEPA_STREAM_CONFIG. Secrets come in as env vars at run time, never at build time.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# A compiler only for platforms without binary wheels (e.g. arm64 for faust-streaming's extensions).
RUN apt-get update \
    && apt-get install --yes --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY handlers ./handlers
COPY daemon ./daemon
COPY optimization ./optimization
RUN pip install --upgrade pip setuptools wheel && pip install . \
    && cd / && python -c "import handlers._otlp_wire"  # the C OTLP reader was built (optional in pyproject)

FROM ${PYTHON_IMAGE}
ARG APP_UID=10001
RUN groupadd --system --gid ${APP_UID} gepa \
    && useradd --system --uid ${APP_UID} --gid gepa --home-dir /var/lib/gepa-stream --no-create-home gepa \
    && mkdir -p /var/lib/gepa-stream/state /var/lib/gepa-stream/mlflow /etc/gepa-stream \
    && chown -R gepa:gepa /var/lib/gepa-stream
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/gepa-stream \
    MLFLOW_DISABLE_TELEMETRY=true \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    GEPA_STREAM_WEB_HOST=0.0.0.0 \
    GEPA_STREAM_WEB_PORT=6066 \
    GEPA_STREAM_CONFIG=/etc/gepa-stream/gepa-stream.yaml \
    GEPA_STREAM_STATE_DIR=/var/lib/gepa-stream/state
WORKDIR /var/lib/gepa-stream
USER ${APP_UID}:${APP_UID}
EXPOSE 6066
# Liveness of the worker's web server; /readyz (assigned, recovered) is for orchestrators that
# route traffic, not for restarts.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GEPA_STREAM_WEB_PORT', '6066'), timeout=4)"
ENTRYPOINT ["gepa-stream"]
CMD ["run", "--role", "all"]
