"""Staged rollouts (canaries): a flag whose variants are the old and new versions moves traffic
5% → 25% → 50% → 100%, held at each step; guard metrics from usage reports can halt it and send
every user back to the old version, audited as the system."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Avg, Count, Q
from django.urls import reverse
from django.utils import timezone

from console.audit import services as audit
from console.audit.services import SYSTEM
from console.evals.metrics import percentile
from console.notifications.services import notify
from console.releases.models import PromotionRequest, Rollout
from console.usage.models import UsageEvent

DEFAULT_STEPS = [5, 25, 50, 100]
# Each guard compares the new version with the old one over the current step.
DEFAULT_GUARDS = {
    "min_requests": 20,
    "error_rate_increase": 0.02,  # absolute, e.g. 1% → 3% breaches
    "p95_latency_ratio": 1.5,
    "cost_per_request_ratio": 1.5,
    "thumbs_down_increase": 0.05,
}


def _ref(version) -> str:
    return f"{version.head.key}@{version.number}"


def _flag_key(request: PromotionRequest) -> str:
    return f"canary-{request.version.head.key}-{request.environment.key}"[:80]


def _set_split(actor, rollout: Rollout, new_percent: int, message: str) -> None:
    from console.flags import services as flags

    flag = rollout.flag
    env = rollout.request.environment
    head = flags.rules_head(flag, env)
    if new_percent >= 100:
        default = {"variant": "new"}
    elif new_percent <= 0:
        default = {"variant": "old"}
    else:
        default = {
            "rollout": [
                {"variant": "old", "weight": 100 - new_percent},
                {"variant": "new", "weight": new_percent},
            ]
        }
    flags.save_rules(
        actor=actor,
        flag=flag,
        environment=env,
        content={"enabled": True, "rules": [], "default": default},
        base_number=head.latest_number,
        message=message,
        via_promotion=True,
    )


def start(
    *,
    actor,
    request: PromotionRequest,
    steps: list[int] | None = None,
    hold_minutes: int = 30,
    guards: dict | None = None,
) -> Rollout:
    """Begin the canary for an approved request (called by releases.services.apply)."""
    from console.flags import services as flags
    from console.flags.models import Flag
    from console.releases.services import live_version

    steps = sorted(set(steps or DEFAULT_STEPS))
    if not steps or steps[-1] != 100 or steps[0] <= 0:
        raise ValidationError({"steps": "percentages rising to 100, e.g. 5, 25, 50, 100"})
    old = live_version(request.kind, request.version, request.environment)
    if old is None:
        raise ValidationError(
            "Nothing is live yet to canary against: apply the request without staging."
        )
    new = request.version
    kind = "prompt" if request.kind == "prompt" else "model_config"
    with transaction.atomic():
        flag = Flag.objects.filter(application=request.application, key=_flag_key(request)).first()
        variants = [
            {
                "key": "old",
                "value": _ref(old),
                "description": "live before the rollout",
                "ref": {"kind": kind, "key": old.head.key, "version": old.number},
            },
            {
                "key": "new",
                "value": _ref(new),
                "description": f"promotion #{request.pk}",
                "ref": {"kind": kind, "key": new.head.key, "version": new.number},
            },
        ]
        if flag is None:
            flag = flags.create_flag(
                actor=actor,
                application=request.application,
                key=_flag_key(request),
                name=f"Canary: {request.label}",
                flag_type="string",
                kind="release",
                description=f"Staged rollout of promotion #{request.pk}",
                variants=variants,
                off_variant="old",
            )
        else:
            flags.update_flag(
                actor=actor,
                flag=flag,
                name=flag.name,
                description=flag.description,
                kind=flag.kind,
                owner=flag.owner,
                variants=variants,
                off_variant="old",
            )
        rollout = Rollout.objects.create(
            request=request,
            flag=flag,
            steps=steps,
            hold_minutes=hold_minutes,
            guards={**DEFAULT_GUARDS, **(guards or {})},
        )
        _set_split(actor, rollout, steps[0], f"rollout of #{request.pk}: {steps[0]}%")
        audit.record(
            actor=actor,
            action="promotion.rollout.start",
            obj=request,
            object_label=f"#{request.pk} {request.label}",
            application=request.application,
            environment=request.environment,
            after={
                "steps": steps,
                "hold_minutes": hold_minutes,
                "flag": flag.key,
                "guards": rollout.guards,
            },
        )
    return rollout


@dataclass(frozen=True)
class VersionStats:
    requests: int
    error_rate: float | None
    p95_latency_ms: float | None
    cost_per_request: float | None
    thumbs_down_rate: float | None

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def stats(rollout: Rollout, ref: str, since: datetime) -> VersionStats:
    field = "prompt_version" if rollout.request.kind == "prompt" else "model_config"
    qs = UsageEvent.objects.filter(
        application_id=rollout.request.application_id,
        environment_id=rollout.request.environment_id,
        at__gte=since,
        shadow_of="",  # a shadow call of the version is not what its users got
        **{field: ref},
    )
    agg = qs.aggregate(
        n=Count("id"),
        errors=Count("id", filter=~Q(status="ok")),
        down=Count("id", filter=Q(feedback=-1)),
        cost=Avg("cost"),
    )
    n = agg["n"]
    if not n:
        return VersionStats(0, None, None, None, None)
    latencies = list(
        qs.exclude(latency_ms__isnull=True).values_list("latency_ms", flat=True)[:20000]
    )
    return VersionStats(
        requests=n,
        error_rate=agg["errors"] / n,
        p95_latency_ms=percentile(latencies, 95),
        cost_per_request=float(agg["cost"] or 0),
        thumbs_down_rate=agg["down"] / n,
    )


def breaches(guards: dict, old: VersionStats, new: VersionStats) -> list[str]:
    """Which guards the new version breaks against the old (none until both have data)."""
    if new.requests < guards["min_requests"] or old.requests < guards["min_requests"]:
        return []
    found = []
    if new.error_rate - old.error_rate > guards["error_rate_increase"]:
        found.append(f"error rate {new.error_rate:.1%} vs {old.error_rate:.1%}")
    if (
        old.p95_latency_ms
        and new.p95_latency_ms
        and new.p95_latency_ms > old.p95_latency_ms * guards["p95_latency_ratio"]
    ):
        found.append(f"p95 latency {new.p95_latency_ms:.0f} ms vs {old.p95_latency_ms:.0f} ms")
    if (
        old.cost_per_request
        and new.cost_per_request > old.cost_per_request * guards["cost_per_request_ratio"]
    ):
        found.append(f"cost per request ${new.cost_per_request:.5f} vs ${old.cost_per_request:.5f}")
    if new.thumbs_down_rate - old.thumbs_down_rate > guards["thumbs_down_increase"]:
        found.append(f"thumbs-down rate {new.thumbs_down_rate:.1%} vs {old.thumbs_down_rate:.1%}")
    return found


def _url(rollout: Rollout) -> str:
    return reverse(
        "releases:detail", kwargs={"app": rollout.request.application.key, "pk": rollout.request_id}
    )


def check(rollout: Rollout, now: datetime | None = None) -> str:
    """One tick for a running rollout: halt on a guard breach, advance when the hold is over,
    complete after 100%. Returns what happened."""
    now = now or timezone.now()
    if rollout.status != Rollout.Status.RUNNING:
        return rollout.status
    old_ref, new_ref = rollout.flag.variants[0]["value"], rollout.flag.variants[1]["value"]
    old, new = (
        stats(rollout, old_ref, rollout.step_started_at),
        stats(rollout, new_ref, rollout.step_started_at),
    )
    found = breaches(rollout.guards, old, new)
    rollout.last_check = {
        "at": now.isoformat(),
        "old": old.as_dict(),
        "new": new.as_dict(),
        "breaches": found,
    }
    if found:
        halt(rollout, reason="; ".join(found))
        return "halted"
    if now - rollout.step_started_at < timedelta(minutes=rollout.hold_minutes):
        rollout.save(update_fields=["last_check"])
        return "holding"
    return advance(actor=SYSTEM, rollout=rollout, now=now)


def advance(*, actor, rollout: Rollout, now: datetime | None = None) -> str:
    now = now or timezone.now()
    request = rollout.request
    with transaction.atomic():
        rollout = (
            Rollout.objects.select_for_update()
            .select_related("request__environment", "flag")
            .get(pk=rollout.pk)
        )
        if rollout.status not in Rollout.ACTIVE:
            raise ValidationError(f"This rollout is {rollout.status}.")
        if rollout.current_step + 1 >= len(rollout.steps):
            return _complete(actor, rollout, now)
        before = rollout.percent
        rollout.current_step += 1
        rollout.step_started_at = now
        rollout.save(update_fields=["current_step", "step_started_at", "last_check"])
        _set_split(actor, rollout, rollout.percent, f"rollout of #{request.pk}: {rollout.percent}%")
        audit.record(
            actor=actor,
            action="promotion.rollout.advance",
            obj=request,
            object_label=f"#{request.pk} {request.label}",
            application=request.application_id,
            environment=request.environment_id,
            before={"percent": before},
            after={"percent": rollout.percent},
        )
    return "advanced"


def _complete(actor, rollout: Rollout, now: datetime) -> str:
    from console.releases.services import _make_live, live_version

    request = rollout.request
    live = live_version(request.kind, request.version, request.environment)
    if (live.number if live else None) != request.base_live_version:
        # Someone promoted something else meanwhile: do not overwrite it.
        halt(rollout, reason=f"{request.environment.name} changed during the rollout; re-confirm")
        return "halted"
    _make_live(
        actor,
        request.kind,
        request.version,
        request.environment,
        reason=f"promotion #{request.pk} (rollout complete)",
    )
    rollout.status = Rollout.Status.COMPLETED
    rollout.finished_at = now
    rollout.save(update_fields=["status", "finished_at", "last_check"])
    PromotionRequest.objects.filter(pk=request.pk).update(
        status=PromotionRequest.Status.APPLIED, applied_at=now
    )
    audit.record(
        actor=actor,
        action="promotion.apply",
        obj=request,
        object_label=f"#{request.pk} {request.label}",
        application=request.application_id,
        environment=request.environment_id,
        before={"live": request.base_live_version},
        after={"live": request.version.number, "staged": True},
    )
    notify(
        application=request.application,
        kind="promotion.applied",
        title=f"Rollout complete: {request.label}",
        url=_url(rollout),
        roles=("approver",),
        users=[request.requested_by],
    )
    return "completed"


def halt(rollout: Rollout, *, reason: str) -> None:
    """Send all traffic back to the old version at once; audited as the system."""
    request = rollout.request
    with transaction.atomic():
        _set_split(SYSTEM, rollout, 0, f"rollout of #{request.pk} halted: {reason}")
        rollout.status = Rollout.Status.HALTED
        rollout.halted_reason = reason
        rollout.finished_at = timezone.now()
        rollout.save(update_fields=["status", "halted_reason", "finished_at", "last_check"])
        audit.record(
            actor=SYSTEM,
            action="promotion.rollout.halt",
            obj=request,
            object_label=f"#{request.pk} {request.label}",
            application=request.application_id,
            environment=request.environment_id,
            after={"percent": 0, "breaches": rollout.last_check.get("breaches", [])},
            reason=reason,
        )
        notify(
            application=request.application,
            kind="rollout.halted",
            title=f"Rollout halted: {request.label}",
            body=f"Guard breach: {reason}. All traffic is back on the old version.",
            url=_url(rollout),
            roles=("engineer", "admin"),
            users=[request.requested_by],
            data={"request": request.pk},
        )


def control(*, actor, rollout: Rollout, action: str, reason: str = "") -> Rollout:
    """Pause, resume, advance or abort by hand (engineers), audited."""
    request = rollout.request
    if action == "advance":
        advance(actor=actor, rollout=rollout)
        rollout.refresh_from_db()
        return rollout
    with transaction.atomic():
        rollout = Rollout.objects.select_for_update().get(pk=rollout.pk)
        before = rollout.status
        if action == "pause" and rollout.status == Rollout.Status.RUNNING:
            rollout.status = Rollout.Status.PAUSED
        elif action == "resume" and rollout.status == Rollout.Status.PAUSED:
            rollout.status = Rollout.Status.RUNNING
            rollout.step_started_at = timezone.now()
        elif action == "abort" and rollout.status in Rollout.ACTIVE:
            _set_split(actor, rollout, 0, f"rollout of #{request.pk} aborted: {reason}")
            rollout.status = Rollout.Status.ABORTED
            rollout.finished_at = timezone.now()
        else:
            raise ValidationError(f"Cannot {action} a rollout that is {rollout.status}.")
        rollout.save()
        audit.record(
            actor=actor,
            action=f"promotion.rollout.{action}",
            obj=request,
            object_label=f"#{request.pk} {request.label}",
            application=request.application_id,
            environment=request.environment_id,
            before={"status": before},
            after={"status": rollout.status},
            reason=reason,
        )
    return rollout


def tick(now: datetime | None = None) -> dict[int, str]:
    """Beat entry point: check every running rollout."""
    return {
        r.pk: check(r, now)
        for r in Rollout.objects.filter(status=Rollout.Status.RUNNING).select_related(
            "request__environment", "request__application", "flag"
        )
    }
