"""No Docker engine runs on our build machines, so the container files are checked statically
here, and the same start commands (bin/*) are exercised outside a container in
test_processes.py."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def instructions(stage_text: str) -> list[str]:
    return [
        line.split()[0]
        for line in stage_text.splitlines()
        if line and not line.startswith(("#", " "))
    ]


def test_base_image_is_pinned_slim_and_multi_stage():
    froms = [line for line in DOCKERFILE.splitlines() if line.startswith("FROM ")]
    assert len(froms) >= 2, "a build stage and a runtime stage"
    for line in froms:
        image = line.split()[1]
        assert "slim" in image and ":" in image and not image.endswith(":latest")
        assert any(ch.isdigit() for ch in image.split(":")[1].split("-")[0]), image


def test_dependencies_are_installed_before_the_source_is_copied():
    copy_pyproject = DOCKERFILE.index("COPY pyproject.toml")
    install = DOCKERFILE.index("pip install .")
    copy_source = DOCKERFILE.index("COPY --chown=airlock:airlock console")
    assert copy_pyproject < install < copy_source


def test_runs_as_non_root_with_healthcheck_static_and_gunicorn():
    runtime = DOCKERFILE.split("AS runtime", 1)[1]
    users = [line.split()[1] for line in runtime.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    assert "HEALTHCHECK" in runtime and "/health" in runtime
    assert "collectstatic" in runtime
    assert 'CMD ["bin/web"]' in runtime
    assert "gunicorn" in (ROOT / "bin" / "web").read_text()
    final_cmd = [line for line in runtime.splitlines() if line.startswith("CMD ")][-1]
    assert "migrate" not in final_cmd, "migrations are a separate one-shot step"


def test_dockerignore_keeps_secrets_vcs_and_venvs_out():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".env", ".git", ".venv", "var", "**/__pycache__"):
        assert entry in ignored


def test_compose_has_the_services_with_healthchecks_and_ordering():
    services = COMPOSE["services"]
    assert {"web", "worker", "beat", "db", "redis", "migrate"} <= set(services)
    assert services["db"]["healthcheck"] and services["redis"]["healthcheck"]
    assert services["web"]["healthcheck"]
    web_deps = services["web"]["depends_on"]
    assert web_deps["db"]["condition"] == "service_healthy"
    assert web_deps["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["bin/migrate"]
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "worker", "beat"):
        assert services[name]["command"] == [f"bin/{name}"]
    assert {"pgdata", "redisdata"} <= set(COMPOSE["volumes"])
    assert "pgdata:/var/lib/postgresql/data" in services["db"]["volumes"]


def test_compose_requires_a_secret_key_and_runs_in_production_mode():
    env = COMPOSE["services"]["web"]["environment"]
    assert env["DEBUG"] == "0"
    assert env["SECRET_KEY"].startswith("${SECRET_KEY:?")
    assert env["AIRLOCK_AUDIT_KEYS"].startswith("${AIRLOCK_AUDIT_KEYS:?")
    assert env["AIRLOCK_AUDIT_ANCHOR_FILE"].startswith("${AIRLOCK_AUDIT_ANCHOR_FILE:-/app/var/")
    assert env["DATABASE_URL"].startswith("postgres://")
    assert env["CELERY_BROKER_URL"].startswith("redis://")


def test_static_files_are_collected_in_production_mode_outside_the_data_volume():
    runtime = DOCKERFILE.split("AS runtime", 1)[1]
    collect = runtime[runtime.rindex("RUN ", 0, runtime.index("collectstatic")) :]
    collect = collect[: collect.index("collectstatic")]
    assert "DEBUG=0" in collect, "hashed, compressed names are made only in production mode"
    from console.config import BASE_DIR, load

    config = load({"DEBUG": "1"})
    # The image collects under /app (BASE_DIR) and compose mounts a volume on the data folder.
    assert config.static_root == BASE_DIR / "staticfiles"
    assert not config.static_root.is_relative_to(config.data_dir)
    volumes = COMPOSE["x-airlock"]["volumes"]
    assert volumes == ["airlock-data:/app/var"]
    assert "/app/staticfiles" not in " ".join(volumes)
