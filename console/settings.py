"""Django settings for Airlock. Every deploy-specific value comes from console.config."""

import os
import sys

from csp.constants import NONE, SELF

from console.config import BASE_DIR, ConfigError, load

try:
    CONFIG = load(os.environ)
except ConfigError as exc:
    # One clear line naming the variable, not a traceback.
    sys.exit(f"airlock: configuration error: {exc}")

# The embedded default keeps its SQLite file and filesystem broker queue under the data dir.
for _folder in CONFIG.local_folders():
    _folder.mkdir(parents=True, exist_ok=True)

DEBUG = CONFIG.debug
SECRET_KEY = CONFIG.secret_key
ALLOWED_HOSTS = CONFIG.allowed_hosts
CSRF_TRUSTED_ORIGINS = CONFIG.csrf_trusted_origins
AIRLOCK_REQUIRE_SERVICES = CONFIG.require_services
AIRLOCK_DATA_DIR = CONFIG.data_dir
METRICS_TOKEN = CONFIG.metrics_token
USAGE_RETENTION_DAYS = CONFIG.usage_retention_days
SAMPLE_RETENTION_DAYS = CONFIG.sample_retention_days
# Outgoing webhooks must use https with DEBUG off, unless this is set (receivers on a private
# network without TLS). See console.notifications.services.validate_webhook_url.
AIRLOCK_WEBHOOK_ALLOW_HTTP = CONFIG.webhook_allow_http
# The audit chain's HMAC keys, {key id: secret}, newest (signing) first; kept out of the database.
AIRLOCK_AUDIT_KEYS = dict(CONFIG.audit_keys)
# Where `audit_anchor` appends the chain's head (None: anchoring off). See console.audit.anchors.
AIRLOCK_AUDIT_ANCHOR_FILE = CONFIG.audit_anchor_file
# Where Airlock may connect (console.core.egress) and which provider keys may go to which hosts
# (console.core.provider_keys).
AIRLOCK_EGRESS_ALLOW = list(CONFIG.egress_allow)
AIRLOCK_PROVIDER_KEYS = dict(CONFIG.provider_keys)
# An eval run with more concurrency than this is split into shards run by separate Celery tasks.
AIRLOCK_EVAL_SHARD_CONCURRENCY = CONFIG.eval_shard_concurrency

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "csp",
    "template_partials",
    "guardian",
    "console.core",
    "console.audit",
    "console.accounts",
    "console.registry",
    "console.datasets",
    "console.evals",
    "console.flags",
    "console.usage",
    "console.samples",
    "console.notifications",
    "console.releases",
    "console.experiments",
    "console.api",
    "console.ops",
]

MIDDLEWARE = [
    # Runtime API calls (/api/v1/config, /ofrep/...) are answered here, on a short stack of
    # their own; everything else goes on down this list.
    "console.core.middleware.RuntimeApiMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files straight from the web process, before sessions or the database are touched.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "console.core.middleware.RequestContextMiddleware",
    "console.core.middleware.AccessLogMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "console.core.errors.NotFoundMiddleware",
]

ROOT_URLCONF = "console.urls"
WSGI_APPLICATION = "console.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "console.core.context_processors.navigation",
            ],
            "builtins": ["template_partials.templatetags.partials"],
        },
    }
]

DATABASES = {"default": CONFIG.database}
# Rate limits and short-lived runtime caches. Per process unless CACHE_URL points at Redis.
CACHES = {"default": CONFIG.cache}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user row; the console needs a login
GUARDIAN_RAISE_403 = False
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "registry:home"
LOGOUT_REDIRECT_URL = "accounts:login"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
# plotly.js is served from our own static files (never a CDN): static/vendor/plotly holds a
# bundle of only the trace types the console draws (1.2 MB, not the full 4.8 MB; built by
# tools/plotly/build.sh) at the plotly.js version the plotly package targets
# (tests/usage/test_dashboard.py checks both).
STATICFILES_DIRS = [BASE_DIR / "static"]
# Collected by the image build (Dockerfile) or by bin/web when missing or older than static/;
# outside AIRLOCK_DATA_DIR, whose volume would hide what the image collected.
STATIC_ROOT = CONFIG.static_root
# Production serves hashed names (cached for a year, immutable) with gzip and brotli copies made
# at collection time; a laptop (DEBUG) serves the source files by their plain names.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
# Only the hashed names are kept (and compressed): half the collection time for plotly.js.
WHITENOISE_KEEP_ONLY_HASHED_FILES = True

# Sessions end 12 hours after sign-in (not renewed on use: no session write per request).
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = 60 * 60 * 12
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if not DEBUG:
    SECURE_SSL_REDIRECT = CONFIG.ssl_redirect
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = 60 * 60 * 24 * 365
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    # /health and /ready are probed over plain HTTP inside the cluster.
    SECURE_REDIRECT_EXEMPT = [r"^health$", r"^ready$", r"^metrics$"]

# No inline scripts anywhere: every script is a static file. Styles allow inline because htmx
# and plotly.js set element styles at run time.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, "'unsafe-inline'"],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# Console and admin sign-ins (console.accounts.throttle): a username+address pair is locked out
# after LOGIN_FAILURE_LIMIT failures in the window, an address after LOGIN_ADDRESS_FAILURE_LIMIT
# failures whatever the usernames.
LOGIN_FAILURE_LIMIT = 5
LOGIN_ADDRESS_FAILURE_LIMIT = 30
LOGIN_FAILURE_WINDOW_S = 15 * 60

EMAIL_BACKEND = CONFIG.email_backend
DEFAULT_FROM_EMAIL = CONFIG.default_from_email

# Celery: embedded default is kombu's filesystem transport (no server); production sets Redis.
CELERY_BROKER_URL = CONFIG.broker_url
CELERY_BROKER_TRANSPORT_OPTIONS = CONFIG.broker_transport_options
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "usage-rollup": {"task": "console.usage.tasks.rollup_usage", "schedule": 30.0},
    "release-rollouts": {"task": "console.releases.tasks.advance_rollouts", "schedule": 60.0},
    "usage-budgets": {"task": "console.usage.tasks.check_budgets", "schedule": 60.0},
    "evals-requeue-stalled": {"task": "console.evals.tasks.requeue_stalled_runs", "schedule": 60.0},
    "audit-anchor": {"task": "console.audit.tasks.anchor_audit_head", "schedule": 60.0},
    "samples-judge": {"task": "console.samples.tasks.judge_samples", "schedule": 60.0},
    "samples-monitors": {"task": "console.samples.tasks.check_monitors", "schedule": 60.0},
    "samples-partitions": {
        "task": "console.samples.tasks.maintain_partitions",
        "schedule": 3600.0,
        "args": (CONFIG.sample_retention_days,),
    },
    "usage-retention": {
        "task": "console.usage.tasks.purge_usage",
        "schedule": 24 * 3600.0,
        "args": (CONFIG.usage_retention_days,),
    },
}

# One JSON object per line (request id included), unless AIRLOCK_LOG_FORMAT=text.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request": {"()": "console.core.logs.RequestContextFilter"}},
    "formatters": {
        "json": {"()": "console.core.logs.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["request"],
            "formatter": CONFIG.log_format,
        }
    },
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "openai": {"level": "WARNING"},
    },
}
