"""`runconsole --simulator-port P`: the demo's model configs, the simulator and the egress
allowlist of the processes it starts all agree on P, so the first eval reaches the simulator."""

from __future__ import annotations

import io
import socket

import pytest
from django.core.management import call_command

from console.audit.models import AuditEvent
from console.evals import llm
from console.evals.llm import RetryPolicy
from console.evals.simulator import serve_in_thread
from console.ops.management.commands import runconsole
from console.ops.management.commands.seed_demo import follow_simulator
from console.registry.models import Application

MESSAGES = [{"role": "user", "content": "How long do I have to return an item?"}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_urls(application) -> dict[str, str]:
    return {
        f"{head.key}@{version.number}": version.content["base_url"]
        for head in application.model_configs.all()
        for version in head.versions.all()
    }


def latest(application, key: str):
    head = application.model_configs.get(key=key)
    return head.versions.get(number=head.latest_number)


@pytest.mark.django_db
def test_seed_demo_points_the_model_configs_at_the_simulator_port_it_is_given(allow_loopback):
    allow_loopback(8231)
    call_command("seed_demo", simulator_port=8231, stdout=io.StringIO())
    urls = base_urls(Application.objects.get(key="support-bot"))
    assert urls and set(urls.values()) == {"http://127.0.0.1:8231/v1"}, urls


@pytest.mark.django_db
def test_runconsole_moves_a_seeded_demo_to_its_simulator_port_and_allows_that_port(
    settings, monkeypatch
):
    call_command("seed_demo", stdout=io.StringIO())  # seeded for the default port 8100
    application = Application.objects.get(key="support-bot")
    port = free_port()
    monkeypatch.setenv("AIRLOCK_EGRESS_ALLOW", "api.openai.com")
    before = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
    env = runconsole.prepare(port, stdout=io.StringIO())

    # What the web server and worker it starts may call: exactly the simulator it starts.
    assert env["AIRLOCK_EGRESS_ALLOW"] == f"api.openai.com,127.0.0.1:{port}"
    for key in ("gpt-main", "judge"):
        version = latest(application, key)
        assert version.content["base_url"] == f"http://127.0.0.1:{port}/v1"
        assert version.number > 1
        # Unprotected environments serve it; prod changes only through a promotion.
        bound = {b.environment.key: b.version_id for b in version.head.bindings.all()}
        assert bound["dev"] == bound["staging"] == version.pk
        assert bound["prod"] != version.pk
    # Every change is audited like any other, by the system.
    labels = set(AuditEvent.objects.filter(seq__gt=before).values_list("object_label", flat=True))
    assert any("gpt-main" in label for label in labels) and any(
        "judge" in label for label in labels
    )

    # The first eval's model call, under the children's allowlist, reaches the simulator.
    settings.AIRLOCK_EGRESS_ALLOW = env["AIRLOCK_EGRESS_ALLOW"].split(",")
    server, _ = serve_in_thread(port)
    try:
        completion = llm.complete(
            latest(application, "gpt-main").content, MESSAGES, policy=RetryPolicy(max_retries=0)
        )
    finally:
        server.shutdown()
        server.server_close()
    assert completion.text

    # Starting again on the same port changes nothing.
    events = AuditEvent.objects.count()
    assert follow_simulator(application, port) == []
    assert AuditEvent.objects.count() == events


def test_runconsole_help_describes_every_option():
    parser = runconsole.Command().create_parser("manage.py", "runconsole")
    own = [a for a in parser._actions if a.dest in {"host", "port", "simulator_port"}]
    assert len(own) == 3
    for action in own:
        assert action.help and len(action.help) > 20, action.dest
        assert "%(default)s" in action.help or str(action.default) in action.help, action.dest
    text = parser.format_help()
    assert "simulator" in text and "8100" in text and "8000" in text
