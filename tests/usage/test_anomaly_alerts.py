"""An unusual day is alerted once — audited as the system, notified to engineers and admins."""

from datetime import timedelta

from django.utils import timezone

from console.audit.models import AuditEvent
from console.notifications.models import Notification
from console.usage.budgets import check_anomalies
from console.usage.models import AnomalyAlert
from tests.usage.helpers import event, ingest, price, rollup


def spiky_week(application, spike: int) -> None:
    price(application, "gpt-4o-mini", timezone.now() - timedelta(days=30), "1", "1", "1")
    now = timezone.now()
    events = []
    for days_ago in range(8, 0, -1):
        at = now - timedelta(days=days_ago)
        events += [event(f"d{days_ago}-{n}", at, input_tokens=100_000) for n in range(10)]
    # Today, even just after midnight (UTC days, like the dashboard).
    today = max(now - timedelta(minutes=5), now.replace(hour=0, minute=0, second=1, microsecond=0))
    events += [event(f"today-{n}", today, input_tokens=100_000) for n in range(10 * spike)]
    for start in range(0, len(events), 500):
        ingest(application, "prod", events[start : start + 500])
    rollup()


def test_a_spike_is_alerted_once(application, member):
    engineer = member("engineer", "eng-on-call")
    spiky_week(application, spike=5)

    raised = check_anomalies()
    again = check_anomalies()

    assert [(a.kind, a.day) for a in raised] == [("spend", timezone.now().date())]
    assert again == []
    assert AnomalyAlert.objects.count() == 1
    event_row = AuditEvent.objects.get(action="usage.anomaly")
    assert event_row.actor_type == "system" and event_row.after["kind"] == "spend"
    note = Notification.objects.get(user=engineer, kind="usage.anomaly")
    assert "5.0× the previous week's median" in note.title


def test_an_ordinary_day_raises_nothing(application):
    spiky_week(application, spike=1)
    assert check_anomalies() == []
    assert not AnomalyAlert.objects.exists()
