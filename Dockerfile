# Airlock web/worker image. Build: docker build -t airlock .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    AIRLOCK_DATA_DIR=/app/var

WORKDIR /app

# Dependencies first so the layer is reused when only the source changes.
COPY pyproject.toml ./
RUN mkdir -p console && touch console/__init__.py \
    && pip install --upgrade pip \
    && pip install . \
    && pip uninstall -y airlock

COPY . .
RUN pip install --no-deps . \
    && DEBUG=1 python manage.py collectstatic --noinput \
    && useradd --system --uid 10001 --home /app airlock \
    && chown -R airlock /app/var

USER airlock
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status == 200 else 1)"

# Migrations run as a separate one-shot step (docker compose run web python manage.py migrate).
CMD ["gunicorn", "console.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", \
     "--access-logfile", "-", "--graceful-timeout", "30"]
