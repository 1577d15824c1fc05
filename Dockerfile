# syntax=docker/dockerfile:1
# Airlock image: web (bin/web), worker (bin/worker), beat (bin/beat) and migrations (bin/migrate).
# Pinned slim base; dependencies are installed in a build stage and copied as one layer.

FROM python:3.11.10-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Dependencies first: this layer is reused until pyproject.toml changes.
COPY pyproject.toml ./
RUN mkdir -p console && touch console/__init__.py \
    && pip install . \
    && pip uninstall -y airlock

FROM python:3.11.10-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    AIRLOCK_DATA_DIR=/app/var \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus
RUN groupadd --system --gid 10001 airlock \
    && useradd --system --uid 10001 --gid airlock --home-dir /app --shell /usr/sbin/nologin airlock
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --chown=airlock:airlock manage.py ./
COPY --chown=airlock:airlock bin ./bin
COPY --chown=airlock:airlock console ./console
COPY --chown=airlock:airlock templates ./templates
COPY --chown=airlock:airlock static ./static
# Static files are collected at build time in production mode (hashed names, gzip and brotli
# copies) with throwaway values that are never used to serve (no secrets in the image). They go
# to /app/staticfiles, outside the /app/var volume, which would hide them.
RUN DEBUG=0 SECRET_KEY=build-only-never-served-build-only-never-served ALLOWED_HOSTS=build \
    DATABASE_URL=postgres://build@build.invalid/build CELERY_BROKER_URL=redis://build.invalid \
    AIRLOCK_AUDIT_KEYS=build:build-only-never-served-build-only-never-served \
    python manage.py collectstatic --noinput --verbosity 0 \
    && test -f /app/staticfiles/staticfiles.json \
    && mkdir -p /app/var /tmp/prometheus \
    && chown -R airlock:airlock /app/var /tmp/prometheus
USER airlock
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status == 200 else 1)"]
# Migrations are NOT run here: run bin/migrate once per release (see docker-compose.yml).
CMD ["bin/web"]
