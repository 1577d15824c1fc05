"""Read and validate Airlock's configuration from environment variables.

Every setting that can differ between a laptop and production comes from the environment.
`load()` is pure (it takes a mapping), so tests can check each rule; settings.py calls it with
`os.environ` and turns a `ConfigError` into a single clear line on stderr and exit status 1.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}
BROKER_SCHEMES = {"redis", "rediss", "amqp", "amqps", "pyamqp", "filesystem", "memory"}
INSECURE_KEY = "airlock-dev-insecure-key-not-for-production"
AUDIT_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
AUDIT_KEY_MIN_LENGTH = 32
DEV_AUDIT_KEY_ID = "dev"
# The bundled LLM simulator (manage.py llm_simulator, runconsole, seed_demo): the one loopback
# destination DEBUG allows without AIRLOCK_EGRESS_ALLOW naming it.
SIMULATOR_ADDRESS = "127.0.0.1:8100"
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# Environment variables Airlock itself (or its database driver, web server, Django) reads: a
# model config may never name one as its provider key, whatever AIRLOCK_PROVIDER_KEYS says.
OWN_VARIABLES = frozenset(
    {
        "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "DATABASE_URL",
        "CELERY_BROKER_URL", "CELERY_VISIBILITY_TIMEOUT", "CACHE_URL", "SECURE_SSL_REDIRECT",
        "USAGE_RETENTION_DAYS", "DEFAULT_FROM_EMAIL", "METRICS_TOKEN", "FORWARDED_ALLOW_IPS",
        "PROMETHEUS_MULTIPROC_DIR", "SAMPLE_RETENTION_DAYS",
    }
)  # fmt: skip
OWN_PREFIXES = ("AIRLOCK_", "EMAIL_", "DJANGO_", "CELERY_", "GUNICORN_", "DATABASE_", "PG")


class ConfigError(Exception):
    """One configuration problem, worded to name the environment variable at fault."""


@dataclass(frozen=True)
class Config:
    debug: bool
    secret_key: str
    allowed_hosts: list[str]
    database: dict
    broker_url: str
    broker_transport_options: dict = field(default_factory=dict)
    csrf_trusted_origins: list[str] = field(default_factory=list)
    cache: dict = field(default_factory=dict)
    ssl_redirect: bool = True
    usage_retention_days: int = 90
    sample_retention_days: int = 30
    email_backend: str = "django.core.mail.backends.console.EmailBackend"
    default_from_email: str = "airlock@localhost"
    log_format: str = "json"
    metrics_token: str = ""
    require_services: bool = False
    webhook_allow_http: bool = False
    egress_allow: tuple[str, ...] = ()
    provider_keys: dict = field(default_factory=dict)  # variable name → host patterns
    data_dir: Path = BASE_DIR / "var"
    # Collected static files: outside data_dir, which a container mounts as a volume.
    static_root: Path = BASE_DIR / "staticfiles"
    # (key id, secret) pairs, newest first: the first signs new audit events.
    audit_keys: tuple[tuple[str, str], ...] = ()
    audit_anchor_file: Path | None = None
    # An eval run's calls per Celery task: a run launched with more concurrency is split into
    # shards (console.evals.models.EvalShard) that as many worker processes share.
    eval_shard_concurrency: int = 100

    @property
    def production(self) -> bool:
        return not self.debug

    def local_folders(self) -> list[Path]:
        """Folders the embedded default needs on disk (SQLite file, filesystem broker queue)."""
        folders = [self.data_dir]
        for key in ("data_folder_in", "processed_folder", "control_folder"):
            if key in self.broker_transport_options:
                folders.append(Path(self.broker_transport_options[key]))
        return folders


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ConfigError(f"{name} must be one of 1/0/true/false/yes/no/on/off, got {raw!r}")


def _list(env: Mapping[str, str], name: str, default: list[str]) -> list[str]:
    raw = env.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    return Path(raw) if raw else None


def _retention(env: Mapping[str, str]) -> int:
    return _days(env, "USAGE_RETENTION_DAYS", "90", 3650)


def _days(env: Mapping[str, str], name: str, default: str, most: int) -> int:
    raw = env.get(name, default)
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise ConfigError(f"{name} must be a whole number of days from 1 to {most}")
    return int(raw)


def _shard_concurrency(env: Mapping[str, str]) -> int:
    raw = env.get("AIRLOCK_EVAL_SHARD_CONCURRENCY", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 256:
        raise ConfigError("AIRLOCK_EVAL_SHARD_CONCURRENCY must be a whole number from 1 to 256")
    return int(raw)


def _audit_keys(env: Mapping[str, str], production: bool, secret_key: str):
    """AIRLOCK_AUDIT_KEYS="k2:secret2,k1:secret1": the keys of the audit chain's HMAC, newest
    (signing) first; older ones stay listed so the events they signed still verify.

    They live outside the database on purpose: whoever owns the database can rewrite rows, but
    without a key cannot recompute the chain. Required in production. A laptop (DEBUG on)
    without it gets a key derived from SECRET_KEY, id "dev".
    """
    raw = env.get("AIRLOCK_AUDIT_KEYS", "").strip()
    if not raw:
        if production:
            raise ConfigError(
                "AIRLOCK_AUDIT_KEYS is required when DEBUG is off "
                "(e.g. k1:<at least 32 random characters>)"
            )
        derived = hmac.new(secret_key.encode(), b"airlock audit chain", hashlib.sha256)
        return ((DEV_AUDIT_KEY_ID, derived.hexdigest()),)
    keys: list[tuple[str, str]] = []
    for position, item in enumerate(raw.split(","), start=1):
        key_id, sep, secret = item.strip().partition(":")
        if not sep or not AUDIT_KEY_ID.match(key_id):
            raise ConfigError(
                f"AIRLOCK_AUDIT_KEYS entry {position} must be id:secret "
                "(id: 1-32 letters, digits, '.', '_' or '-')"
            )
        if len(secret) < AUDIT_KEY_MIN_LENGTH:
            raise ConfigError(
                f"AIRLOCK_AUDIT_KEYS key {key_id!r} must be at least "
                f"{AUDIT_KEY_MIN_LENGTH} random characters"
            )
        if any(key_id == seen for seen, _ in keys):
            raise ConfigError(f"AIRLOCK_AUDIT_KEYS names key {key_id!r} twice")
        keys.append((key_id, secret))
    return tuple(keys)


def is_own_variable(name: str) -> bool:
    """Whether `name` is one of Airlock's own settings (never sent to a model provider)."""
    return name in OWN_VARIABLES or name.startswith(OWN_PREFIXES)


def _egress_allow(env: Mapping[str, str], debug: bool) -> tuple[str, ...]:
    from console.core.egress import parse_allowlist

    entries = _list(env, "AIRLOCK_EGRESS_ALLOW", [])
    try:
        parse_allowlist(entries)
    except ValueError as exc:
        raise ConfigError(f"AIRLOCK_EGRESS_ALLOW: {exc}") from None
    if debug and SIMULATOR_ADDRESS not in entries:
        entries.append(SIMULATOR_ADDRESS)
    return tuple(entries)


def _provider_keys(env: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """AIRLOCK_PROVIDER_KEYS: `VARIABLE@host-pattern` entries, e.g.
    OPENAI_API_KEY@api.openai.com,AZURE_KEY@*.openai.azure.com (repeat a variable for more
    hosts)."""
    from console.core.egress import parse_destination

    keys: dict[str, list[str]] = {}
    for entry in _list(env, "AIRLOCK_PROVIDER_KEYS", []):
        name, at, pattern = entry.partition("@")
        name, pattern = name.strip(), pattern.strip()
        if not at or not name or not pattern:
            raise ConfigError(
                f"AIRLOCK_PROVIDER_KEYS: {entry!r} must be VARIABLE@host "
                "(e.g. OPENAI_API_KEY@api.openai.com)"
            )
        if not ENV_NAME.match(name):
            raise ConfigError(
                f"AIRLOCK_PROVIDER_KEYS: {name!r} is not an environment variable name"
            )
        if is_own_variable(name):
            raise ConfigError(
                f"AIRLOCK_PROVIDER_KEYS: {name} is one of Airlock's own settings and can never "
                "be sent to a model provider"
            )
        try:
            parse_destination(pattern)
        except ValueError as exc:
            raise ConfigError(f"AIRLOCK_PROVIDER_KEYS: {exc}") from None
        keys.setdefault(name, []).append(pattern)
    return {name: tuple(patterns) for name, patterns in keys.items()}


def load(env: Mapping[str, str]) -> Config:
    """Build the configuration; raise ConfigError naming the first bad variable.

    In production mode (DEBUG off) SECRET_KEY, ALLOWED_HOSTS, DATABASE_URL and
    CELERY_BROKER_URL are required: a laptop default silently used in production is a bug.
    """
    debug = _bool(env, "DEBUG", default=False)
    production = not debug
    data_dir = Path(env.get("AIRLOCK_DATA_DIR") or BASE_DIR / "var")

    secret_key = env.get("SECRET_KEY", "")
    if production:
        if not secret_key:
            raise ConfigError("SECRET_KEY is required when DEBUG is off")
        if len(secret_key) < 32 or secret_key == INSECURE_KEY:
            raise ConfigError("SECRET_KEY must be a random string of at least 32 characters")
    secret_key = secret_key or INSECURE_KEY

    allowed_hosts = _list(
        env, "ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if debug else []
    )
    if production and not allowed_hosts:
        raise ConfigError("ALLOWED_HOSTS is required when DEBUG is off (comma-separated hosts)")

    db_url = env.get("DATABASE_URL", "")
    if production and not db_url:
        raise ConfigError("DATABASE_URL is required when DEBUG is off")
    db_url = db_url or f"sqlite:///{data_dir / 'airlock.sqlite3'}"
    try:
        database = dj_database_url.parse(db_url, conn_max_age=60, conn_health_checks=True)
    except Exception as exc:  # dj-database-url raises several kinds for a malformed URL
        raise ConfigError(f"DATABASE_URL is malformed: {exc}") from None
    if not database.get("ENGINE"):
        raise ConfigError("DATABASE_URL is malformed: unknown scheme")
    if database["ENGINE"].endswith("sqlite3"):
        database["CONN_MAX_AGE"] = 0
        database.setdefault("OPTIONS", {})
        database["OPTIONS"].update({"timeout": 20, "transaction_mode": "IMMEDIATE"})
    elif database["ENGINE"].endswith("postgresql"):
        database.setdefault("OPTIONS", {})
        database["OPTIONS"].setdefault("connect_timeout", 5)

    broker_url = env.get("CELERY_BROKER_URL", "")
    if production and not broker_url:
        raise ConfigError("CELERY_BROKER_URL is required when DEBUG is off")
    transport_options: dict = {}
    if not broker_url:
        broker_url = "filesystem://localhost//"
    scheme = urlparse(broker_url).scheme
    if scheme not in BROKER_SCHEMES:
        raise ConfigError(
            f"CELERY_BROKER_URL has unsupported scheme {scheme!r} "
            f"(use one of {', '.join(sorted(BROKER_SCHEMES))})"
        )
    if scheme in {"redis", "rediss"}:
        # A task not acknowledged within this many seconds (its worker died) is redelivered.
        # Short enough that a dead worker's task comes back within minutes; long-running evals
        # are protected from a second copy by their lease, imports by their claim.
        raw = env.get("CELERY_VISIBILITY_TIMEOUT", "300")
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigError("CELERY_VISIBILITY_TIMEOUT must be a whole number of seconds")
        transport_options = {"visibility_timeout": int(raw)}
    if scheme == "filesystem":
        folder = data_dir / "broker"
        transport_options = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # Exchange tables; kombu's default is ./control in whatever folder the process runs.
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }

    cache_url = env.get("CACHE_URL", "")
    if cache_url:
        if urlparse(cache_url).scheme not in {"redis", "rediss"}:
            raise ConfigError("CACHE_URL must be a redis:// URL")
        cache = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": cache_url}
    else:
        cache = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}

    log_format = env.get("AIRLOCK_LOG_FORMAT", "json")
    if log_format not in {"json", "text"}:
        raise ConfigError("AIRLOCK_LOG_FORMAT must be json or text")
    metrics_token = env.get("METRICS_TOKEN", "")
    if metrics_token and len(metrics_token) < 16:
        raise ConfigError("METRICS_TOKEN must be at least 16 characters")

    return Config(
        debug=debug,
        ssl_redirect=_bool(env, "SECURE_SSL_REDIRECT", default=True),
        usage_retention_days=_retention(env),
        sample_retention_days=_days(env, "SAMPLE_RETENTION_DAYS", "30", 365),
        email_backend=env.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend"),
        default_from_email=env.get("DEFAULT_FROM_EMAIL", "airlock@localhost"),
        log_format=log_format,
        metrics_token=metrics_token,
        cache=cache,
        secret_key=secret_key,
        allowed_hosts=allowed_hosts,
        database=database,
        broker_url=broker_url,
        broker_transport_options=transport_options,
        csrf_trusted_origins=_list(env, "CSRF_TRUSTED_ORIGINS", []),
        require_services=_bool(env, "AIRLOCK_REQUIRE_SERVICES", default=False),
        webhook_allow_http=_bool(env, "AIRLOCK_WEBHOOK_ALLOW_HTTP", default=False),
        egress_allow=_egress_allow(env, debug),
        provider_keys=_provider_keys(env),
        data_dir=data_dir,
        static_root=_path(env, "AIRLOCK_STATIC_ROOT") or BASE_DIR / "staticfiles",
        audit_keys=_audit_keys(env, production, secret_key),
        audit_anchor_file=_path(env, "AIRLOCK_AUDIT_ANCHOR_FILE"),
        eval_shard_concurrency=_shard_concurrency(env),
    )


def audit_keys_env(keys: Mapping[str, str]) -> str:
    """`AIRLOCK_AUDIT_KEYS` for a child process (a bench's gunicorn in production mode) that must
    sign audit events with the keys this process verifies with, newest first."""
    return ",".join(f"{key_id}:{secret}" for key_id, secret in keys.items())
