"""Monitors on a fake clock: a quality drop raises one alert (dedup while it is open), a worse
reading escalates it, a resolved alert's monitor stays quiet for its cooldown; input drift by
PSI; error rate from the usage rollups; who may add monitors and decide alerts."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from console.accounts.roles import Role
from console.audit.models import AuditEvent
from console.notifications.models import Notification
from console.samples import monitors, services
from console.samples.models import Monitor, MonitorAlert, Sample
from console.usage import services as usage
from tests.samples.conftest import sample

pytestmark = pytest.mark.django_db


def send(application, n: int, minutes: tuple[float, float], prefix: str, **fields) -> None:
    rng = random.Random(prefix)
    services.ingest(
        application=application,
        environment=application.environments.get(key="prod"),
        samples=[
            sample(f"{prefix}-{i}", minutes_ago=rng.uniform(*minutes), **fields) for i in range(n)
        ],
    )


def judged(prefix: str, faithfulness: float) -> None:
    Sample.objects.filter(sample_id__startswith=f"{prefix}-").update(
        faithfulness=faithfulness, judge_state="done"
    )


@pytest.fixture
def quality_drop(application, engineer):
    """Faithfulness 0.9 over the baseline (2–6 hours ago), 0.72 in the last hour: 20% worse."""
    send(application, 40, (120, 360), "base")
    judged("base", 0.9)
    send(application, 40, (5, 35), "now")
    judged("now", 0.72)
    return services.create_monitor(
        actor=engineer, application=application,
        environment=application.environments.get(key="prod"), metric="faithfulness",
    )  # fmt: skip


def test_a_quality_drop_alerts_once_then_holds_through_the_cooldown(
    application, engineer, member, quality_drop
):
    member(Role.ADMIN, "boss")
    now = timezone.now()
    assert monitors.sweep(now)["raised"] == 1
    alert = MonitorAlert.objects.get()
    assert (alert.severity, alert.state) == ("critical", "open")
    assert alert.change == pytest.approx(20.0)
    assert alert.value == pytest.approx(0.72) and alert.baseline == pytest.approx(0.9)
    notes = Notification.objects.filter(kind="monitor.alert.raised")
    assert {n.user.username for n in notes} == {"boss", "eng"}
    assert "Faithfulness (judged) in prod: 0.72 against 0.90 before" in notes[0].title
    assert AuditEvent.objects.filter(action="monitor.alert.raised").count() == 1

    # Dedup: still bad a minute later — the open alert is updated, nobody is told again.
    assert monitors.sweep(now + timedelta(minutes=1))["updated"] == 1
    assert MonitorAlert.objects.count() == 1 and notes.count() == 2

    services.decide_alert(actor=engineer, alert=alert, action="acknowledge", note="looking")
    services.decide_alert(actor=engineer, alert=alert, action="resolve", note="rolled back")
    # Cooldown: resolved, still bad, but within 15 minutes of the last notification.
    assert monitors.sweep(now + timedelta(minutes=10))["held"] == 1
    assert MonitorAlert.objects.count() == 1
    quality_drop.refresh_from_db()
    assert quality_drop.last_check["result"] == "held"
    # Past the cooldown, a new episode.
    assert monitors.sweep(now + timedelta(minutes=16))["raised"] == 1
    assert MonitorAlert.objects.count() == 2
    events = AuditEvent.objects.filter(action__startswith="monitor.alert").order_by("seq")
    assert [e.action for e in events] == [
        "monitor.alert.raised", "monitor.alert.acknowledge", "monitor.alert.resolve",
        "monitor.alert.raised",
    ]  # fmt: skip


def test_a_warning_escalates_to_critical_once_the_cooldown_allows(application, engineer):
    send(application, 40, (120, 360), "base")
    judged("base", 0.9)
    send(application, 40, (5, 35), "now")
    judged("now", 0.8)  # 11% worse: a warning
    services.create_monitor(
        actor=engineer, application=application,
        environment=application.environments.get(key="prod"), metric="faithfulness",
    )  # fmt: skip
    now = timezone.now()
    assert monitors.sweep(now)["raised"] == 1
    assert MonitorAlert.objects.get().severity == "warning"
    judged("now", 0.6)  # 33% worse: critical, but within the cooldown of the warning
    assert monitors.sweep(now + timedelta(minutes=5))["updated"] == 1
    alert = MonitorAlert.objects.get()
    assert (alert.severity, alert.notifications) == ("warning", 1)
    assert alert.change == pytest.approx(33.33, abs=0.01)  # the worst reading is kept
    # Once the cooldown allows, the escalation is announced (not lost).
    assert monitors.sweep(now + timedelta(minutes=20))["escalated"] == 1
    alert = MonitorAlert.objects.get()
    assert (alert.severity, alert.notifications) == ("critical", 2)
    assert Notification.objects.filter(kind="monitor.alert.escalated").exists()
    judged("now", 0.8)  # milder again: the alert keeps its worst reading and severity
    assert monitors.sweep(now + timedelta(minutes=21))["updated"] == 1
    alert = MonitorAlert.objects.get()
    assert alert.severity == "critical" and alert.change == pytest.approx(33.33, abs=0.01)


def test_a_saturated_latency_reading_is_checked_not_crashed(application, engineer):
    prod = application.environments.get(key="prod")
    # Half past the previous hour: every event is in the past whatever the clock says now.
    now = (timezone.now() - timedelta(hours=1)).replace(minute=30, second=0, microsecond=0)

    def events(prefix: str, hours_ago: int, latency: float) -> list[dict]:
        at = now - timedelta(hours=hours_ago, minutes=10)
        return [
            {"event_id": f"{prefix}-{i}", "time": at.isoformat(), "model": "gpt-4o-mini",
             "latency_ms": latency}
            for i in range(50)
        ]  # fmt: skip

    usage.ingest(application=application, environment=prod, events=events("b", 3, 900))
    usage.ingest(application=application, environment=prod, events=events("w", 0, 60_000))
    usage.rollup(settle=timedelta(0))
    services.create_monitor(
        actor=engineer, application=application, environment=prod, metric="latency_p95"
    )
    outcome = monitors.sweep(now + timedelta(minutes=31))
    assert outcome["raised"] == 1 and outcome["failed"] == 0
    alert = MonitorAlert.objects.get()
    assert alert.value == 12800.0 and alert.baseline == 1600.0  # at least the open bucket


def test_a_warning_that_turns_critical_after_the_cooldown_notifies_again(application, engineer):
    send(application, 40, (120, 360), "base")
    judged("base", 0.9)
    send(application, 40, (5, 35), "now")
    judged("now", 0.8)
    services.create_monitor(
        actor=engineer, application=application,
        environment=application.environments.get(key="prod"), metric="faithfulness",
    )  # fmt: skip
    now = timezone.now()
    monitors.sweep(now)
    judged("now", 0.6)
    assert monitors.sweep(now + timedelta(minutes=16))["escalated"] == 1
    alert = MonitorAlert.objects.get()
    assert (alert.severity, alert.notifications) == ("critical", 2)


def test_too_little_data_says_so_and_alerts_nobody(application, engineer, quality_drop):
    quality_drop.min_samples = 100
    quality_drop.save()
    assert monitors.sweep()["raised"] == 0
    quality_drop.refresh_from_db()
    assert quality_drop.last_check["why"].startswith("not enough data: 40 in the window")
    assert not MonitorAlert.objects.exists()


def test_input_length_drift_is_measured_by_psi(application, engineer):
    send(application, 60, (120, 360), "base", inputs={"question": "Where is my order?"})
    long = "I ordered a blue jacket last month and it has still not arrived; " * 6
    send(application, 60, (5, 35), "now", inputs={"question": long})
    monitor = services.create_monitor(
        actor=engineer, application=application,
        environment=application.environments.get(key="prod"), metric="input_drift",
    )  # fmt: skip
    assert (monitor.warn, monitor.critical) == (0.1, 0.25)
    assert monitors.sweep()["raised"] == 1
    alert = MonitorAlert.objects.get()
    assert alert.severity == "critical" and alert.change > 5


def test_psi_is_zero_for_the_same_distribution_and_grows_with_the_shift():
    same = monitors.psi((10, 20, 30, 0), (10, 20, 30, 0))
    small = monitors.psi((12, 20, 28, 0), (10, 20, 30, 0))
    large = monitors.psi((0, 0, 30, 30), (30, 30, 0, 0))
    assert same == 0 and 0 < small < 0.1 < 0.25 < large


def test_error_rate_comes_from_the_usage_rollups(application, engineer):
    prod = application.environments.get(key="prod")
    # Half past the previous hour: every event is in the past whatever the clock says now.
    now = (timezone.now() - timedelta(hours=1)).replace(minute=30, second=0, microsecond=0)

    def events(prefix: str, hours_ago: int, errors: int, n: int = 100) -> list[dict]:
        at = now - timedelta(hours=hours_ago, minutes=10)
        return [
            {"event_id": f"{prefix}-{i}", "time": at.isoformat(), "model": "gpt-4o-mini",
             "status": "error" if i < errors else "ok", "input_tokens": 10, "output_tokens": 5}
            for i in range(n)
        ]  # fmt: skip

    usage.ingest(application=application, environment=prod, events=events("b", 3, 2))
    usage.ingest(application=application, environment=prod, events=events("w", 0, 9))
    usage.rollup(settle=timedelta(0))
    monitor = services.create_monitor(
        actor=engineer, application=application, environment=prod, metric="error_rate"
    )
    assert monitors.sweep(now + timedelta(minutes=31))["raised"] == 1
    alert = MonitorAlert.objects.get()
    assert alert.value == pytest.approx(0.09) and alert.baseline == pytest.approx(0.02)
    with pytest.raises(ValidationError) as refused:
        services.create_monitor(
            actor=engineer, application=application, environment=prod, metric="latency_p95",
            window_minutes=30,
        )  # fmt: skip
    assert "whole hours" in refused.value.message_dict["window_minutes"][0]
    assert monitor.pk


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"metric": "vibes"}, "metric"),
        ({"version": "not a version"}, "version"),
        ({"window_minutes": 1}, "window_minutes"),
        ({"baseline_minutes": 30}, "baseline_minutes"),
        ({"warn": 20.0, "critical": 15.0}, "critical"),
        ({"cooldown_minutes": -1}, "cooldown_minutes"),
    ],
)
def test_a_bad_monitor_is_refused_naming_the_field(application, engineer, change, field):
    arguments = {
        "actor": engineer, "application": application,
        "environment": application.environments.get(key="prod"), "metric": "relevance", **change,
    }  # fmt: skip
    with pytest.raises(ValidationError) as refused:
        services.create_monitor(**arguments)
    assert field in refused.value.message_dict
    assert not Monitor.objects.exists()


def test_who_may_add_monitors_and_decide_alerts(client, application, member, quality_drop):
    url = reverse("samples:monitors", args=[application.key])
    form = {
        "environment": "prod", "metric": "refusal_rate", "version": "", "window_minutes": 60,
        "baseline_minutes": 1440, "min_samples": 30, "cooldown_minutes": 15,
    }  # fmt: skip
    for role in (Role.VIEWER, Role.CURATOR, Role.APPROVER):
        client.force_login(member(role))
        assert client.get(url).status_code == 200
        assert client.post(url, form).status_code == 403
    assert Monitor.objects.count() == 1
    engineer = member(Role.ENGINEER, "eng2")
    client.force_login(engineer)
    assert client.post(url, form).status_code == 302
    created = Monitor.objects.get(metric="refusal_rate")
    assert (created.warn, created.critical) == (10.0, 15.0)
    assert AuditEvent.objects.filter(action="monitor.create", actor_id=engineer.pk).exists()
    again = client.post(url, form)
    assert again.status_code == 400 and "already have a monitor" in again.content.decode()
    monitors.sweep()
    alert = MonitorAlert.objects.get()
    decide = reverse("samples:alert", args=[application.key, alert.pk])
    client.force_login(member(Role.CURATOR, "cur2"))
    assert client.post(decide, {"action": "resolve"}).status_code == 403
    client.force_login(engineer)
    client.post(decide, {"action": "resolve", "note": "known"})
    alert.refresh_from_db()
    assert (alert.state, alert.resolved_by, alert.note) == ("resolved", engineer, "known")
    response = client.post(decide, {"action": "resolve"}, follow=True)
    assert "already resolved" in response.content.decode()


def test_the_beat_task_raises_an_alert_outside_any_test_transaction(postgres_tx):
    """As beat runs it: each alert is written with its audit event in a transaction of its own."""
    from console.samples.tasks import check_monitors
    from tests.factories import make_application, make_member

    application = make_application()
    engineer = make_member(application, Role.ENGINEER, "eng-tx")
    send(application, 40, (120, 360), "base")
    judged("base", 0.9)
    send(application, 40, (5, 35), "now")
    judged("now", 0.6)
    services.create_monitor(
        actor=engineer, application=application,
        environment=application.environments.get(key="prod"), metric="faithfulness",
    )  # fmt: skip
    assert check_monitors()["raised"] == 1
    assert AuditEvent.objects.filter(action="monitor.alert.raised").count() == 1
