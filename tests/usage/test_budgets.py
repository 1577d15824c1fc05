"""Budgets: one alert per threshold per period, the 100% circuit breaker (kill switch or a
cheaper variant) audited as the system, and the per-user daily threshold."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import transaction
from django.test import Client
from django.utils import timezone

from console.accounts.roles import Role
from console.audit.models import AuditEvent
from console.flags.models import FlagKind, FlagRules, FlagType
from console.notifications.models import Notification
from console.releases import policies
from console.usage import budgets
from console.usage.models import Budget, BudgetAlert
from console.usage.services import anonymise
from tests.flags.helpers import make_flag, on, set_rules
from tests.usage.helpers import event, ingest, price, rollup

pytestmark = pytest.mark.django_db
M = 1_000_000


def day(n: int) -> datetime:
    return datetime.combine(timezone.now().date() - timedelta(days=n), time.min, UTC)


@pytest.fixture
def priced(application):
    """$1 per million input tokens, so an event with 1M input tokens costs exactly $1."""
    price(application, "gpt-4o-mini", day(60), "1", "0.5", "2")
    return application


def spend(application, dollars: int, at: datetime, env: str = "prod", prefix: str = "", **extra):
    ingest(
        application,
        env,
        [
            event(f"{prefix}{at:%d%H%M}-{i}", at + timedelta(seconds=i), input_tokens=M, **extra)
            for i in range(dollars)
        ],
    )
    rollup()


def daily_budget(application, actor, **kwargs) -> Budget:
    defaults = {"name": "Daily", "period": "daily", "amount": "10"}
    return budgets.create_budget(actor=actor, application=application, **{**defaults, **kwargs})


def test_each_threshold_alerts_once_per_period(priced, engineer, member):
    admin = member(Role.ADMIN, "admin1")
    member(Role.VIEWER, "viewer1")
    budget = daily_budget(priced, engineer)
    assert budget.thresholds == [50, 80, 100, 120]
    d1, d2 = day(2), day(1)

    spend(priced, 8, d1 + timedelta(hours=9))  # $8 of $10
    first = budgets.check_budgets(now=d1 + timedelta(hours=12))
    assert [(a.threshold, a.spend) for a in first] == [(50, Decimal(8)), (80, Decimal(8))]
    assert budgets.check_budgets(now=d1 + timedelta(hours=12)) == []  # deduplicated
    assert budgets.check_budgets(now=d1 + timedelta(hours=23)) == []  # same period

    spend(priced, 5, d1 + timedelta(hours=13))  # $13: 100% and 120% crossed together
    crossed = budgets.check_budgets(now=d1 + timedelta(hours=14))
    assert [a.threshold for a in crossed] == [100, 120]
    assert budgets.check_budgets(now=d1 + timedelta(hours=14)) == []

    # The next day is a new period: its spend starts from zero and alerts again.
    spend(priced, 6, d2 + timedelta(hours=1))
    assert budgets.check_budgets(now=d2 + timedelta(hours=2)) == [
        BudgetAlert.objects.get(period_start=d2, threshold=50)
    ]
    assert budgets.check_budgets(now=d2 + timedelta(hours=3)) == []
    assert sorted(BudgetAlert.objects.values_list("period_start", "threshold")) == [
        (d1, 50), (d1, 80), (d1, 100), (d1, 120), (d2, 50),
    ]  # fmt: skip

    # Each alert is audited as the system and tells admins and engineers (not viewers).
    audits = AuditEvent.objects.filter(action="budget.alert").order_by("seq")
    assert [(e.actor_type, e.after["threshold"]) for e in audits] == [
        ("system", 50), ("system", 80), ("system", 100), ("system", 120), ("system", 50),
    ]  # fmt: skip
    notes = Notification.objects.filter(kind="budget.threshold")
    assert {n.user.username for n in notes} == {"eng", "admin1"}
    assert notes.filter(user=admin).count() == 5
    assert notes.filter(user=admin, title__startswith="Daily: 80% of the daily budget").count() == 1


def test_monthly_budget_counts_the_whole_month(priced, engineer):
    budget = budgets.create_budget(
        actor=engineer, application=priced, name="Monthly", period="monthly", amount="100"
    )
    now = timezone.now()
    start = budgets.period_start(budget, now)
    assert start == now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    assert budgets.period_end(budget, start).day == 1
    assert budgets.period_end(budget, start) > now


def test_a_feature_or_environment_budget_counts_only_its_own_spend(priced, engineer):
    staging = priced.environments.get(key="staging")
    daily_budget(priced, engineer, name="Staging", environment=staging, thresholds=[50])
    daily_budget(priced, engineer, name="Escalate", feature="escalate", thresholds=[50])
    at = day(1) + timedelta(hours=3)
    spend(priced, 6, at, env="prod", feature="answer")
    assert budgets.check_budgets(now=at) == []
    spend(priced, 5, at + timedelta(minutes=5), env="staging", feature="answer")
    assert [a.budget.name for a in budgets.check_budgets(now=at)] == ["Staging"]
    spend(priced, 5, at + timedelta(minutes=10), env="prod", feature="escalate", prefix="e")
    assert [a.budget.name for a in budgets.check_budgets(now=at)] == ["Escalate"]


@pytest.fixture
def switch(priced, engineer):
    flag = make_flag(priced, engineer, "answers-enabled", kind=FlagKind.KILL_SWITCH)
    for env in ("dev", "staging", "prod"):
        set_rules(flag, env, on("on"), engineer)
    return flag


def test_the_circuit_breaker_kills_the_named_switch_at_100_percent(priced, engineer, switch):
    prod = priced.environments.get(key="prod")
    budget = daily_budget(
        priced,
        engineer,
        name="Prod spend",
        environment=prod,
        action={"type": "kill_switch", "flag": "answers-enabled"},
    )
    at = day(1) + timedelta(hours=8)
    spend(priced, 9, at)
    budgets.check_budgets(now=at)
    assert not FlagRules.objects.get(flag=switch, environment=prod).killed  # 90%: no action yet
    assert not AuditEvent.objects.filter(action="flag.kill").exists()

    spend(priced, 1, at + timedelta(minutes=30), prefix="x")
    alerts = budgets.check_budgets(now=at)
    assert [a.threshold for a in alerts] == [100]
    rules = {r.environment.key: r for r in FlagRules.objects.filter(flag=switch)}
    assert rules["prod"].killed is True
    assert (rules["dev"].killed, rules["staging"].killed) == (False, False)
    assert rules["prod"].killed_by_label == "system"
    assert rules["prod"].kill_reason == "Budget Prod spend reached 100% ($10.00 of $10.00)"
    kill = AuditEvent.objects.get(action="flag.kill")
    assert (kill.actor_type, kill.actor_label, kill.environment_id) == ("system", "system", prod.pk)
    assert kill.object_label == "answers-enabled in prod"
    alert = BudgetAlert.objects.get(budget=budget, threshold=100)
    assert alert.action_taken["type"] == "kill_switch"
    assert alert.action_taken["environments"] == ["prod"]
    note = Notification.objects.filter(title__contains="100%").first()
    assert note.body == "Action taken: killed answers-enabled in prod"
    # Running the check again neither re-alerts nor re-kills.
    assert budgets.check_budgets(now=at) == []
    assert AuditEvent.objects.filter(action="flag.kill").count() == 1


def test_an_app_wide_breaker_kills_the_switch_in_every_environment(priced, engineer, switch):
    daily_budget(priced, engineer, action={"type": "kill_switch", "flag": "answers-enabled"})
    at = day(1) + timedelta(hours=8)
    spend(priced, 10, at)
    budgets.check_budgets(now=at)
    assert set(FlagRules.objects.filter(flag=switch).values_list("killed", flat=True)) == {True}
    assert AuditEvent.objects.filter(action="flag.kill", actor_type="system").count() == 3


def test_the_variant_breaker_switches_the_flag_to_the_cheaper_model(priced, engineer):
    flag = make_flag(
        priced,
        engineer,
        "answer-model",
        flag_type=FlagType.STRING,
        kind=FlagKind.OPERATIONAL,
        variants=[{"key": "big", "value": "gpt-4o"}, {"key": "small", "value": "gpt-4o-mini"}],
        off_variant="small",
    )
    set_rules(flag, "prod", on("big"), engineer)
    prod = priced.environments.get(key="prod")
    # prod is protected: its release policy lists the breaker (as an approved change would).
    with transaction.atomic():
        content, number = policies.current(prod)
        policies.apply_content(
            actor=engineer, environment=prod, message="approved breaker", number=number,
            content={**content, "breakers": ["answer-model:small"]},
        )  # fmt: skip
    daily_budget(
        priced,
        engineer,
        environment=prod,
        action={"type": "variant", "flag": "answer-model", "variant": "small"},
    )
    at = day(1) + timedelta(hours=8)
    spend(priced, 10, at)
    budgets.check_budgets(now=at)
    head = FlagRules.objects.get(flag=flag, environment=prod)
    latest = head.versions.get(number=head.latest_number)
    assert latest.content["default"] == {"variant": "small"}
    created = AuditEvent.objects.filter(action="flag.rules.create", environment=prod).latest("seq")
    assert created.actor_type == "system"


def test_create_budget_validates_its_action_and_amount(priced, engineer):
    with pytest.raises(ValidationError) as caught:
        budgets.create_budget(
            actor=engineer,
            application=priced,
            name="Bad",
            period="weekly",
            amount="-3",
            thresholds=[0, 50],
            action={"type": "kill_switch", "flag": "missing"},
        )
    assert set(caught.value.message_dict) == {"period", "amount", "thresholds", "action"}
    assert caught.value.message_dict["action"] == ["no flag 'missing' in this application"]
    assert not Budget.objects.exists()


def test_a_user_over_the_daily_limit_alerts_once(priced, engineer, member):
    admin = member(Role.ADMIN, "admin2")
    budget = daily_budget(priced, engineer, amount="1000", per_user_daily_limit=Decimal("2.00"))
    now = timezone.now()
    at = max(now - timedelta(minutes=30), day(0))
    spend(priced, 3, at, user_id="alice")
    spend(priced, 1, at, user_id="bob", prefix="b")
    alerts = budgets.check_budgets(now=now)
    assert [(a.threshold, a.subject, a.spend) for a in alerts] == [
        (0, anonymise("alice"), Decimal(3))
    ]
    assert budgets.check_budgets(now=now) == []
    note = Notification.objects.get(user=admin, kind="budget.threshold")
    # (The limit prints with the field's four decimals, "$2.0000": cosmetic, reported.)
    assert note.title.startswith("Daily: a user spent $3.00 today (limit $2.00")
    assert "alice" not in note.title  # only the anonymised id is stored
    assert AuditEvent.objects.get(action="budget.alert").after["subject"] == anonymise("alice")
    assert BudgetAlert.objects.filter(budget=budget).count() == 1


def budgets_url(application) -> str:
    return f"/apps/{application.key}/usage/budgets/"


def test_the_budgets_page_creates_a_budget_for_engineers_only(priced, engineer_client, member):
    form = {
        "name": "Team cap",
        "period": "monthly",
        "amount": "250",
        "thresholds": "50, 90",
        "environment": "prod",
    }
    response = engineer_client.post(budgets_url(priced), form, follow=True)
    assert "Budget created." in response.content.decode()
    budget = Budget.objects.get(name="Team cap")
    assert (budget.thresholds, budget.environment.key, budget.amount) == (
        [50, 90],
        "prod",
        Decimal("250"),
    )
    assert AuditEvent.objects.filter(action="budget.create", actor_label="eng").count() == 1
    bad = engineer_client.post(budgets_url(priced), {**form, "thresholds": "half"}, follow=True)
    assert "Thresholds are whole percents" in bad.content.decode()
    viewer = Client()
    viewer.force_login(member(Role.VIEWER, "v"))
    assert viewer.post(budgets_url(priced), form).status_code == 403
    page = viewer.get(budgets_url(priced))
    assert page.status_code == 200 and "Team cap" in page.content.decode()
    assert Budget.objects.count() == 1


def test_breakers_ask_the_rule_releases_installs_and_refuse_without_one(monkeypatch):
    # Usage sits below releases: the release policy's rule is installed at start-up, not imported.
    assert budgets._breaker_rule is policies.breaker_allowed
    monkeypatch.setattr(budgets, "_breaker_rule", None)
    with pytest.raises(ImproperlyConfigured, match=r"console\.releases installs it"):
        budgets.breaker_allowed(None, "answer-model", "small")
