"""Staged rollouts: 5% → 25% → 50% → 100% on schedule (time controlled through `now`), a halt
that sends everyone back to the old version on a guard breach measured from usage events, and
the engineer's controls."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from console.audit.models import AuditEvent
from console.flags.models import Flag, FlagRules
from console.notifications.models import Notification
from console.releases import rollouts, services
from console.releases.models import PromotionRequest, Rollout
from console.usage import services as usage
from console.usage.models import PricePoint

pytestmark = pytest.mark.django_db


def staged_request(world, number: int = 2) -> PromotionRequest:
    world.passing_run(number)
    request = services.open_request(
        actor=world.users["engineer"],
        environment=world.prod,
        version=world.versions[number],
        justification="canary it",
        staged=True,
    )
    return services.decide(actor=world.users["approver"], request=request, decision="approve")


def started(world) -> Rollout:
    request = staged_request(world)
    services.apply(actor=world.users["engineer"], request=request)
    return Rollout.objects.get(request=request)


def prod_rules(rollout: Rollout) -> dict:
    head = FlagRules.objects.get(flag=rollout.flag, environment=rollout.request.environment)
    return head.versions.get(number=head.latest_number).content


def split(percent: int) -> dict:
    return {
        "rollout": [
            {"variant": "old", "weight": 100 - percent},
            {"variant": "new", "weight": percent},
        ]
    }


def test_applying_a_staged_request_starts_the_canary_at_5_percent(world):
    rollout = started(world)
    request = rollout.request
    request.refresh_from_db()
    assert request.status == PromotionRequest.Status.APPROVED  # applied when the rollout completes
    assert world.live() == 1
    assert (rollout.status, rollout.steps, rollout.current_step, rollout.percent) == (
        "running",
        [5, 25, 50, 100],
        0,
        5,
    )
    flag = Flag.objects.get(key="canary-answer-prod")
    assert rollout.flag == flag
    assert [(v["key"], v["value"]) for v in flag.variants] == [
        ("old", "answer@1"),
        ("new", "answer@2"),
    ]
    assert flag.variants[1]["ref"] == {"kind": "prompt", "key": "answer", "version": 2}
    served = prod_rules(rollout)
    assert {k: v for k, v in served.items() if k != "definition"} == {
        "enabled": True,
        "rules": [],
        "default": split(5),
    }
    assert [v["key"] for v in served["definition"]["variants"]] == ["old", "new"]
    start = AuditEvent.objects.get(action="promotion.rollout.start")
    assert start.after["steps"] == [5, 25, 50, 100] and start.actor_label == "eng"


def test_an_engineer_can_walk_the_steps_to_completion(world):
    rollout = started(world)
    engineer = world.users["engineer2"]
    seen = []
    for _ in range(3):
        rollout = rollouts.control(actor=engineer, rollout=rollout, action="advance")
        seen.append((rollout.percent, prod_rules(rollout)["default"]))
    assert seen == [(25, split(25)), (50, split(50)), (100, {"variant": "new"})]
    rollout = rollouts.control(actor=engineer, rollout=rollout, action="advance")
    assert rollout.status == Rollout.Status.COMPLETED and rollout.finished_at is not None
    request = PromotionRequest.objects.get(pk=rollout.request_id)
    assert request.status == PromotionRequest.Status.APPLIED
    assert world.live() == 2
    advances = AuditEvent.objects.filter(action="promotion.rollout.advance").order_by("seq")
    assert [(e.before["percent"], e.after["percent"]) for e in advances] == [
        (5, 25),
        (25, 50),
        (50, 100),
    ]
    applied = AuditEvent.objects.get(action="promotion.apply")
    assert applied.after == {"live": 2, "staged": True}
    with pytest.raises(ValidationError, match="completed"):
        rollouts.control(actor=engineer, rollout=rollout, action="advance")


def test_a_rollout_advances_on_schedule_and_completes(world):
    rollout = started(world)
    t0 = rollout.step_started_at
    assert rollouts.tick(now=t0 + timedelta(minutes=10)) == {rollout.pk: "holding"}
    assert Rollout.objects.get(pk=rollout.pk).percent == 5
    expected = []
    now = t0
    for percent in (25, 50, 100):
        now += timedelta(minutes=31)
        assert rollouts.tick(now=now) == {rollout.pk: "advanced"}
        rollout.refresh_from_db()
        assert (rollout.percent, rollout.step_started_at) == (percent, now)
        expected.append(percent)
        # Held again: nothing moves before the next 30 minutes are over.
        assert rollouts.tick(now=now + timedelta(minutes=29)) == {rollout.pk: "holding"}
    assert prod_rules(rollout)["default"] == {"variant": "new"}
    assert rollouts.tick(now=now + timedelta(minutes=31)) == {rollout.pk: "completed"}
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.COMPLETED
    assert PromotionRequest.objects.get(pk=rollout.request_id).status == "applied"
    assert world.live() == 2
    advances = AuditEvent.objects.filter(action="promotion.rollout.advance").order_by("seq")
    assert [(e.actor_type, e.after["percent"]) for e in advances] == [
        ("system", p) for p in expected
    ]
    assert rollouts.tick(now=now + timedelta(hours=5)) == {}


def report(world, env, ref: str, n: int, errors: int, prefix: str) -> None:
    """Usage events from production for one prompt version, the first `errors` failing; all
    stamped now, i.e. after the current step started."""
    now = timezone.now()
    usage.ingest(
        application=world.application,
        environment=env,
        events=[
            {
                "event_id": f"{prefix}-{i}",
                "time": now.isoformat(),
                "model": "gpt-4o-mini",
                "prompt_version": ref,
                "input_tokens": 1000,
                "output_tokens": 100,
                "latency_ms": 400,
                "status": "error" if i < errors else "ok",
            }
            for i in range(n)
        ],
    )


def test_guard_stats_and_breaches_come_from_usage_events(world):
    PricePoint.objects.create(
        application=world.application,
        model="gpt-4o-mini",
        effective_from=timezone.now() - timedelta(days=1),
        input_per_1m=1,
        cached_input_per_1m=1,
        output_per_1m=1,
    )
    rollout = started(world)
    rollout.step_started_at = timezone.now() - timedelta(minutes=1)
    report(world, world.prod, "answer@1", 100, 1, "old")
    report(world, world.prod, "answer@2", 40, 10, "new")
    report(world, world.envs["staging"], "answer@2", 50, 50, "elsewhere")  # not this env
    old = rollouts.stats(rollout, "answer@1", rollout.step_started_at)
    new = rollouts.stats(rollout, "answer@2", rollout.step_started_at)
    assert (old.requests, old.error_rate) == (100, 0.01)
    assert (new.requests, new.error_rate) == (40, 0.25)
    assert old.cost_per_request == pytest.approx(0.0011)
    assert new.p95_latency_ms == 400
    assert rollouts.breaches(rollout.guards, old, new) == ["error rate 25.0% vs 1.0%"]
    # Too few requests on either side: no verdict yet.
    few = rollouts.VersionStats(19, 0.9, 400, 0.001, 0)
    assert rollouts.breaches(rollout.guards, old, few) == []
    slow = rollouts.VersionStats(50, 0.01, 900, 0.0011, 0.0)
    assert rollouts.breaches(rollout.guards, old, slow) == ["p95 latency 900 ms vs 400 ms"]
    pricey = rollouts.VersionStats(50, 0.01, 400, 0.002, 0.1)
    assert rollouts.breaches(rollout.guards, old, pricey) == [
        "cost per request $0.00200 vs $0.00110",
        "thumbs-down rate 10.0% vs 0.0%",
    ]


def test_a_guard_breach_halts_and_reverts_to_the_old_version(world):
    rollout = started(world)
    report(world, world.prod, "answer@1", 60, 0, "old")
    report(world, world.prod, "answer@2", 30, 9, "new")  # 30% errors vs 0%
    assert rollouts.tick(now=timezone.now() + timedelta(minutes=1)) == {rollout.pk: "halted"}
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.HALTED
    assert "error rate 30.0% vs 0.0%" in rollout.halted_reason
    assert prod_rules(rollout)["default"] == {"variant": "old"}  # everyone on the old version
    assert world.live() == 1
    halt = AuditEvent.objects.get(action="promotion.rollout.halt")
    assert (halt.actor_type, halt.actor_label) == ("system", "system")
    assert halt.after["percent"] == 0 and halt.after["breaches"] == ["error rate 30.0% vs 0.0%"]
    note = Notification.objects.get(user=world.users["engineer"], kind="rollout.halted")
    assert "All traffic is back on the old version" in note.body
    assert rollouts.tick(now=timezone.now() + timedelta(hours=2)) == {}  # stays halted


def test_pause_resume_and_abort_are_audited(world):
    rollout = started(world)
    engineer = world.users["engineer"]
    rollout = rollouts.control(actor=engineer, rollout=rollout, action="pause")
    assert rollout.status == Rollout.Status.PAUSED
    assert rollouts.tick(now=timezone.now() + timedelta(hours=3)) == {}  # paused: not checked
    with pytest.raises(ValidationError, match="Cannot pause a rollout that is paused"):
        rollouts.control(actor=engineer, rollout=rollout, action="pause")
    rollout = rollouts.control(actor=engineer, rollout=rollout, action="resume")
    assert rollout.status == Rollout.Status.RUNNING
    rollout = rollouts.control(actor=engineer, rollout=rollout, action="abort", reason="flaky")
    assert rollout.status == Rollout.Status.ABORTED
    assert prod_rules(rollout)["default"] == {"variant": "old"}
    assert world.live() == 1
    audited = AuditEvent.objects.filter(action__startswith="promotion.rollout.").order_by("seq")
    assert [(e.action, e.actor_label) for e in audited] == [
        ("promotion.rollout.start", "eng"),
        ("promotion.rollout.pause", "eng"),
        ("promotion.rollout.resume", "eng"),
        ("promotion.rollout.abort", "eng"),
    ]
    assert audited.last().reason == "flaky"


def test_a_rollout_needs_something_live_and_sane_steps(world):
    request = staged_request(world)
    with pytest.raises(ValidationError, match="rising to 100"):
        rollouts.start(actor=world.users["engineer"], request=request, steps=[5, 50])
    assert not Rollout.objects.exists()


def test_applying_a_staged_request_twice_is_refused_cleanly(world):
    rollout = started(world)
    request = PromotionRequest.objects.get(pk=rollout.request_id)
    with pytest.raises(ValidationError):
        services.apply(actor=world.users["engineer"], request=request)
