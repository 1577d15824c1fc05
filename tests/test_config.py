"""Start-up configuration: production mode refuses missing or malformed values by name."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from console.config import ConfigError, load

ROOT = Path(__file__).resolve().parent.parent
GOOD_PROD = {
    "DEBUG": "0",
    "SECRET_KEY": "k" * 50,
    "ALLOWED_HOSTS": "airlock.example.com",
    "DATABASE_URL": "postgres://airlock:pw@db:5432/airlock",
    "CELERY_BROKER_URL": "redis://redis:6379/0",
    "AIRLOCK_AUDIT_KEYS": "k1:" + "a" * 40,
}


def test_debug_defaults_work_without_any_variable(tmp_path):
    config = load({"DEBUG": "1", "AIRLOCK_DATA_DIR": str(tmp_path)})
    assert config.database["ENGINE"].endswith("sqlite3")
    assert config.broker_url.startswith("filesystem://")
    assert config.broker_transport_options["data_folder_in"].startswith(str(tmp_path))


def test_production_config_parses_database_and_broker():
    config = load(GOOD_PROD)
    assert config.database["ENGINE"].endswith("postgresql")
    assert config.database["HOST"] == "db"
    assert config.allowed_hosts == ["airlock.example.com"]


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"SECRET_KEY": None}, "SECRET_KEY"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY"),
        ({"ALLOWED_HOSTS": None}, "ALLOWED_HOSTS"),
        ({"DATABASE_URL": None}, "DATABASE_URL"),
        ({"DATABASE_URL": "nosuchdb://x"}, "DATABASE_URL"),
        ({"CELERY_BROKER_URL": None}, "CELERY_BROKER_URL"),
        ({"CELERY_BROKER_URL": "kafka://x:1"}, "CELERY_BROKER_URL"),
        ({"DEBUG": "maybe"}, "DEBUG"),
        ({"AIRLOCK_AUDIT_KEYS": None}, "AIRLOCK_AUDIT_KEYS"),
        ({"AIRLOCK_AUDIT_KEYS": "k1:short"}, "AIRLOCK_AUDIT_KEYS"),
        ({"AIRLOCK_AUDIT_KEYS": "a" * 40}, "AIRLOCK_AUDIT_KEYS"),
        ({"AIRLOCK_AUDIT_KEYS": "bad id:" + "a" * 40}, "AIRLOCK_AUDIT_KEYS"),
        ({"AIRLOCK_AUDIT_KEYS": f"k1:{'a' * 40},k1:{'b' * 40}"}, "AIRLOCK_AUDIT_KEYS"),
    ],
)
def test_each_missing_or_malformed_production_value_is_named(change, variable):
    env = {**GOOD_PROD, **change}
    env = {k: v for k, v in env.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        load(env)
    assert str(err.value).startswith(variable)


def test_audit_keys_are_listed_newest_first_and_debug_derives_one(tmp_path):
    config = load({**GOOD_PROD, "AIRLOCK_AUDIT_KEYS": f"k2:{'b' * 40}, k1:{'a' * 40}"})
    assert config.audit_keys == (("k2", "b" * 40), ("k1", "a" * 40))
    assert config.audit_anchor_file is None
    anchored = load({**GOOD_PROD, "AIRLOCK_AUDIT_ANCHOR_FILE": str(tmp_path / "a.jsonl")})
    assert anchored.audit_anchor_file == tmp_path / "a.jsonl"
    laptop = load({"DEBUG": "1", "AIRLOCK_DATA_DIR": str(tmp_path)})
    [(key_id, secret)] = laptop.audit_keys
    assert key_id == "dev" and len(secret) == 64


def test_process_stops_with_one_line_naming_the_variable():
    env = {k: v for k, v in os.environ.items() if k not in GOOD_PROD}
    env.update({**GOOD_PROD, "SECRET_KEY": ""})
    proc = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "airlock: configuration error: SECRET_KEY is required when DEBUG is off"
    ]


def test_deploy_checks_are_clean_in_production_settings():
    env = {
        k: v for k, v in os.environ.items() if k not in GOOD_PROD and not k.startswith("DJANGO_")
    }
    env.update({**GOOD_PROD, "SECRET_KEY": "s3cr3t-" + "a1B2c3D4e5" * 6})
    proc = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no issues" in proc.stdout


def test_webhook_http_switch_is_validated_like_every_other_setting():
    assert load({**GOOD_PROD, "AIRLOCK_WEBHOOK_ALLOW_HTTP": "1"}).webhook_allow_http is True
    assert load(GOOD_PROD).webhook_allow_http is False
    with pytest.raises(ConfigError, match="AIRLOCK_WEBHOOK_ALLOW_HTTP"):
        load({**GOOD_PROD, "AIRLOCK_WEBHOOK_ALLOW_HTTP": "perhaps"})


def test_egress_allowlist_is_read_and_validated_like_every_other_setting(tmp_path):
    assert load(GOOD_PROD).egress_allow == ()
    config = load({**GOOD_PROD, "AIRLOCK_EGRESS_ALLOW": "api.openai.com, *.openai.azure.com"})
    assert config.egress_allow == ("api.openai.com", "*.openai.azure.com")
    # DEBUG allows the bundled simulator's address, not the rest of loopback.
    debug = load({"DEBUG": "1", "AIRLOCK_DATA_DIR": str(tmp_path)})
    assert debug.egress_allow == ("127.0.0.1:8100",)
    for bad in ("api.openai.com:99999", "*foo.com", "*.com", "[::1", "bad_host.com"):
        with pytest.raises(ConfigError, match="AIRLOCK_EGRESS_ALLOW"):
            load({**GOOD_PROD, "AIRLOCK_EGRESS_ALLOW": bad})


def test_provider_keys_name_a_variable_and_its_hosts():
    config = load(
        {**GOOD_PROD, "AIRLOCK_PROVIDER_KEYS": "OPENAI_API_KEY@api.openai.com,K@a.io,K@b.io:8443"}
    )
    assert config.provider_keys == {
        "OPENAI_API_KEY": ("api.openai.com",),
        "K": ("a.io", "b.io:8443"),
    }
    for bad in ("OPENAI_API_KEY", "@api.openai.com", "lower@api.openai.com", "K@*foo"):
        with pytest.raises(ConfigError, match="AIRLOCK_PROVIDER_KEYS"):
            load({**GOOD_PROD, "AIRLOCK_PROVIDER_KEYS": bad})


def test_every_variable_config_reads_is_one_provider_keys_can_never_name():
    """A new setting added to config.py is protected from AIRLOCK_PROVIDER_KEYS too."""
    import re

    from console.config import is_own_variable

    source = (ROOT / "console" / "config.py").read_text()
    read = set(re.findall(r'env(?:\.get\(|, )"([A-Z][A-Z0-9_]*)"', source))
    assert {"SECRET_KEY", "DATABASE_URL", "CACHE_URL", "METRICS_TOKEN"} <= read
    assert [name for name in sorted(read) if not is_own_variable(name)] == []
