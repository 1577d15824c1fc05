"""Budgets: spend per period against thresholds, alerts once per threshold and period, and the
cost circuit breaker at 100% (kill a switch, or move a flag to a cheaper variant)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone

from console.audit import services as audit
from console.audit.services import SYSTEM
from console.notifications.services import notify
from console.registry.models import Environment
from console.usage.models import Budget, BudgetAlert, UsageDaily, UsageEvent

DEFAULT_THRESHOLDS = [50, 80, 100, 120]

# Whether a breaker may move a flag in an environment is that environment's release policy's
# call. Release policies live in console.releases, a layer above usage: it installs its rule here
# when the app starts (ReleasesConfig.ready), so usage never imports it.
BreakerRule = Callable[[Environment, str, str], bool]
_breaker_rule: BreakerRule | None = None


def set_breaker_rule(rule: BreakerRule | None) -> None:
    global _breaker_rule
    _breaker_rule = rule


def breaker_allowed(environment: Environment, flag_key: str, variant: str) -> bool:
    """May a budget breaker move `flag_key` to `variant` in `environment`? Asks the installed
    rule; with none installed nothing may be decided, so it refuses loudly."""
    if _breaker_rule is None:
        raise ImproperlyConfigured(
            "No rule decides where budget breakers may fire: console.releases installs it when "
            "the app starts; add it to INSTALLED_APPS."
        )
    return _breaker_rule(environment, flag_key, variant)


def period_start(budget: Budget, now: datetime) -> datetime:
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day if budget.period == Budget.Period.DAILY else day.replace(day=1)


def period_end(budget: Budget, start: datetime) -> datetime:
    if budget.period == Budget.Period.DAILY:
        return start + timedelta(days=1)
    return (start + timedelta(days=32)).replace(day=1)


def spend(budget: Budget, start: datetime, end: datetime) -> Decimal:
    """Spend over whole UTC days [start, end) — periods always start and end at midnight UTC."""
    qs = UsageDaily.objects.filter(
        application_id=budget.application_id, day__gte=start.date(), day__lt=end.date()
    )
    if budget.environment_id:
        qs = qs.filter(environment_id=budget.environment_id)
    if budget.feature:
        qs = qs.filter(feature=budget.feature)
    return qs.aggregate(total=Sum("cost"))["total"] or Decimal(0)


@dataclass(frozen=True)
class Crossing:
    budget: Budget
    threshold: int
    spend: Decimal


def check_budgets(now: datetime | None = None) -> list[BudgetAlert]:
    """Raise each crossed threshold once per period (the unique constraint dedupes even if two
    checks race). Runs every minute from Celery beat, after the rollup."""
    now = now or timezone.now()
    alerts = []
    for budget in Budget.objects.select_related("application", "environment"):
        start = period_start(budget, now)
        spent = spend(budget, start, period_end(budget, start))
        for threshold in sorted(budget.thresholds or DEFAULT_THRESHOLDS):
            if spent * 100 >= budget.amount * threshold:
                alert = _raise(budget, start, threshold, spent)
                if alert is not None:
                    alerts.append(alert)
        if budget.per_user_daily_limit:
            alerts.extend(_per_user(budget, now))
    return alerts


def _raise(
    budget: Budget, start: datetime, threshold: int, spent: Decimal, subject: str = ""
) -> BudgetAlert | None:
    try:
        with transaction.atomic():
            alert = BudgetAlert.objects.create(
                budget=budget, period_start=start, threshold=threshold, subject=subject, spend=spent
            )
            if subject:
                limit = f"{budget.per_user_daily_limit:.2f}"
                title = f"{budget.name}: a user spent ${spent:.2f} today (limit ${limit})"
            else:
                of = f"${spent:.2f} of ${budget.amount}"
                title = f"{budget.name}: {threshold}% of the {budget.period} budget ({of})"
            action = (
                _act(budget, alert) if threshold == 100 and budget.action and not subject else {}
            )
            alert.action_taken = action
            alert.save(update_fields=["action_taken"])
            audit.record(
                actor=SYSTEM,
                action="budget.alert",
                obj=budget,
                object_label=title,
                application=budget.application_id,
                environment=budget.environment_id,
                after={
                    "threshold": threshold,
                    "spend": str(spent),
                    "amount": str(budget.amount),
                    "subject": subject,
                    "action": action,
                },
            )
            notify(
                application=budget.application,
                kind="budget.threshold",
                title=title,
                body=f"Action taken: {action['summary']}" if action else "",
                url=reverse("usage:dashboard", kwargs={"app": budget.application.key}),
                roles=("admin", "engineer"),
                data={"budget": budget.name, "threshold": threshold},
            )
            return alert
    except IntegrityError:
        return None  # already alerted for this threshold in this period


def _act(budget: Budget, alert: BudgetAlert) -> dict:
    """The circuit breaker, audited as the system by the flags service it calls."""
    from console.flags import services as flags
    from console.flags.models import Flag

    flag = Flag.objects.filter(
        application_id=budget.application_id, key=budget.action.get("flag")
    ).first()
    if flag is None:
        return {
            "error": f"flag {budget.action.get('flag')!r} not found",
            "summary": "no action (flag missing)",
        }
    envs = (
        [budget.environment]
        if budget.environment_id
        else list(budget.application.environments.all())
    )
    reason = f"Budget {budget.name} reached 100% (${alert.spend:.2f} of ${budget.amount})"
    if budget.action.get("type") == "kill_switch":
        for env in envs:
            flags.kill_flag(actor=SYSTEM, flag=flag, environment=env, reason=reason)
        return {
            "type": "kill_switch",
            "flag": flag.key,
            "environments": [e.key for e in envs],
            "summary": f"killed {flag.key} in {', '.join(e.key for e in envs)}",
        }
    variant = budget.action.get("variant")
    # A protected environment moves only where its (approved) release policy lets this
    # breaker fire; elsewhere the alert is all that happens there.
    refused = [e for e in envs if not breaker_allowed(e, flag.key, variant)]
    envs = [e for e in envs if e not in refused]
    for env in envs:
        head = flags.rules_head(flag, env)
        content = {"enabled": True, "rules": [], "default": {"variant": variant}}
        flags.save_rules(
            actor=SYSTEM,
            flag=flag,
            environment=env,
            content=content,
            base_number=head.latest_number,
            message=reason,
            via_promotion=True,
        )
    summary = (
        f"{flag.key} now serves {variant} in {', '.join(e.key for e in envs)}"
        if envs
        else "no action"
    )
    if refused:
        summary += (
            f"; not in {', '.join(e.key for e in refused)}: its release policy does not allow "
            f"breaker {flag.key}:{variant}"
        )
    return {
        "type": "variant",
        "flag": flag.key,
        "variant": variant,
        "environments": [e.key for e in envs],
        "refused": [e.key for e in refused],
        "summary": summary,
    }


def _per_user(budget: Budget, now: datetime) -> list[BudgetAlert]:
    start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    qs = UsageEvent.objects.filter(application_id=budget.application_id, at__gte=start).exclude(
        user_hash=""
    )
    if budget.environment_id:
        qs = qs.filter(environment_id=budget.environment_id)
    heavy = (
        qs.values("user_hash")
        .annotate(total=Sum("cost"))
        .filter(total__gte=budget.per_user_daily_limit)
        .order_by()
    )
    alerts = []
    for row in heavy:
        alert = _raise(budget, start, 0, row["total"], subject=row["user_hash"])
        if alert is not None:
            alerts.append(alert)
    return alerts


def _variant_breaker_errors(application, environment, flag, variant: str) -> dict:
    """A breaker that moves a flag must name one of its variants, and may only aim at a
    protected environment whose release policy lists that action."""
    if variant not in flag.variant_keys:
        return {"action": f"{flag.key} has no variant {variant!r}"}
    targets = [environment] if environment is not None else list(application.environments.all())
    refused = [e.name for e in targets if not breaker_allowed(e, flag.key, variant)]
    if refused:
        return {
            "action": f"{', '.join(refused)} is protected and its release policy does not let "
            f"breaker {flag.key}:{variant} fire there; an admin can add it to the policy (another "
            "admin approves), or aim the budget at an unprotected environment"
        }
    return {}


def create_budget(
    *,
    actor,
    application,
    name: str,
    period: str,
    amount,
    environment=None,
    feature: str = "",
    thresholds=None,
    action=None,
    per_user_daily_limit=None,
) -> Budget:
    from django.core.exceptions import ValidationError

    errors = {}
    if period not in Budget.Period.values:
        errors["period"] = "must be daily or monthly"
    try:
        amount = Decimal(str(amount))
        if amount <= 0:
            raise ValueError
    except (ValueError, ArithmeticError):
        errors["amount"] = "must be a positive amount in USD"
    thresholds = sorted(set(thresholds or DEFAULT_THRESHOLDS))
    if any(not isinstance(t, int) or not 1 <= t <= 1000 for t in thresholds):
        errors["thresholds"] = "whole percents between 1 and 1000"
    action = action or {}
    if action and action.get("type") not in {"kill_switch", "variant"}:
        errors["action"] = "type must be kill_switch or variant"
    elif action.get("type") == "variant" and not action.get("variant"):
        errors["action"] = "name the cheaper variant to switch to"
    flag = application.flags.filter(key=action.get("flag")).first() if action else None
    if action and flag is None:
        errors["action"] = f"no flag {action.get('flag')!r} in this application"
    elif action.get("type") == "variant":
        errors.update(_variant_breaker_errors(application, environment, flag, action["variant"]))
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        budget = Budget.objects.create(
            application=application,
            environment=environment,
            feature=feature,
            name=name,
            period=period,
            amount=amount,
            thresholds=thresholds,
            action=action,
            per_user_daily_limit=per_user_daily_limit,
        )
        audit.record(
            actor=actor,
            action="budget.create",
            obj=budget,
            object_label=name,
            application=application,
            environment=environment,
            after={
                "period": period,
                "amount": str(amount),
                "thresholds": thresholds,
                "action": action,
            },
        )
    return budget


def check_anomalies(now: datetime | None = None) -> list:
    """Alert (once) when today's or yesterday's spend or cost per request is far above the
    previous week's median — the same rule the dashboard marks."""
    from console.registry.models import Application
    from console.usage.models import AnomalyAlert
    from console.usage.selectors import UsageFilters, anomalies, dashboard

    now = now or timezone.now()
    today = now.astimezone(UTC).date()
    raised = []
    for application in Application.objects.all():
        filters = UsageFilters(since=today - timedelta(days=8), until=today)
        board = dashboard(application, filters, today)
        for found in anomalies(board.days):
            if found["day"] < today - timedelta(days=1):
                continue
            try:
                with transaction.atomic():
                    alert = AnomalyAlert.objects.create(
                        application=application,
                        day=found["day"],
                        kind=found["kind"],
                        value=found["value"],
                        baseline=found["baseline"],
                    )
                    title = (
                        f"Unusual {found['kind']} on {found['day']:%b %d}: "
                        f"{found['factor']:.1f}× the previous week's median"
                    )
                    audit.record(
                        actor=SYSTEM,
                        action="usage.anomaly",
                        obj=alert,
                        object_label=title,
                        application=application,
                        after={
                            "day": found["day"].isoformat(),
                            "kind": found["kind"],
                            "value": str(found["value"]),
                            "baseline": found["baseline"],
                        },
                    )
                    notify(
                        application=application,
                        kind="usage.anomaly",
                        title=title,
                        url=reverse("usage:dashboard", kwargs={"app": application.key}),
                        roles=("admin", "engineer"),
                    )
                    raised.append(alert)
            except IntegrityError:
                continue  # already alerted
    return raised
