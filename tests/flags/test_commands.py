"""manage.py kill_switch: the incident runbook's terminal path, same service and audit."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from console.audit.models import AuditEvent
from console.flags.models import FlagRules


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("kill_switch", *args, stdout=out)
    return out.getvalue()


def test_kill_and_restore_from_a_terminal_with_the_same_audit(application, flag, engineer):
    before = AuditEvent.objects.order_by("-seq").first().seq
    out = run(application.key, flag.key, "--env", "prod", "--reason", "incident 412")
    assert "Killed new-checkout in prod" in out
    head = FlagRules.objects.get(flag=flag, environment__key="prod")
    assert head.killed and head.kill_reason == "incident 412"
    assert head.killed_by is None and head.killed_by_label.startswith("kill_switch command")
    assert "already killed" in run(application.key, flag.key, "--env", "prod", "--reason", "again")
    out = run(
        application.key,
        flag.key,
        "--env",
        "prod",
        "--reason",
        "fixed",
        "--restore",
        "--user",
        engineer.username,
    )
    assert "Restored" in out
    kill, restore = AuditEvent.objects.filter(seq__gt=before).order_by("seq")
    assert (kill.action, kill.reason, kill.actor_type) == ("flag.kill", "incident 412", "system")
    assert (restore.action, restore.actor_label) == ("flag.restore", engineer.username)


@pytest.mark.parametrize(
    "args",
    [
        ("nope", "new-checkout", "--env", "prod", "--reason", "x"),
        ("APP", "nope", "--env", "prod", "--reason", "x"),
        ("APP", "new-checkout", "--env", "nope", "--reason", "x"),
        ("APP", "new-checkout", "--env", "prod", "--reason", "   "),
        ("APP", "new-checkout", "--env", "prod", "--reason", "x", "--user", "ghost"),
    ],
)
def test_mistakes_are_refused_with_a_clear_error(application, flag, args):
    args = tuple(application.key if a == "APP" else a for a in args)
    with pytest.raises(CommandError):
        run(*args)
    assert not FlagRules.objects.filter(flag=flag, killed=True).exists()
