"""The judge sweep: the application's judge (over the real openai SDK, on the bundled
simulator) scores waiting samples, never past the day's spend cap, one sweep at a time."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.cache import cache

from console.samples import services
from console.samples.models import JudgeSpend, Sample
from tests.samples.conftest import sample

pytestmark = pytest.mark.django_db


def ingest(application, samples, env: str = "prod"):
    return services.ingest(
        application=application,
        environment=application.environments.get(key=env),
        samples=samples,
    )


def test_waiting_samples_are_judged_and_their_cost_counted(application, judge_policy):
    ingest(
        application,
        [
            sample("good"),
            sample(
                "made-up",
                output="Passwords cannot be reset; buy a new account for $99 [kb-99].",
            ),
            sample("no-context", context=None),
        ],
    )
    assert set(Sample.objects.values_list("judge_state", flat=True)) == {"pending"}
    result = services.judge_pending()
    assert (result.judged, result.failed, result.capped) == (3, 0, 0)
    good = Sample.objects.get(sample_id="good")
    made_up = Sample.objects.get(sample_id="made-up")
    assert good.judge_state == "done" and good.judged_at is not None
    assert good.faithfulness > made_up.faithfulness
    assert made_up.hallucinated is True and good.hallucinated is False
    assert good.relevance is not None and good.judge_cost > 0
    bare = Sample.objects.get(sample_id="no-context")
    assert bare.faithfulness is None and bare.relevance is not None
    assert bare.judge_reasons["faithfulness"].startswith("not judged")
    spend = JudgeSpend.objects.get(application=application)
    assert spend.judged == 3
    assert spend.cost == sum(s.judge_cost for s in Sample.objects.all())
    assert services.judge_pending().judged == 0  # nothing judged twice


def test_the_daily_cap_stops_judging_and_marks_the_rest_capped(application, judge_policy):
    judge_policy.judge_daily_cap = Decimal("0.01")
    judge_policy.save()
    ingest(application, [sample(f"c-{i}") for i in range(60)])
    result = services.judge_pending()
    assert result.judged >= 1 and result.capped >= 1
    assert result.judged + result.capped == 60
    spend = JudgeSpend.objects.get(application=application)
    most = max(Sample.objects.filter(judge_state="done").values_list("judge_cost", flat=True))
    assert Decimal("0.01") <= spend.cost < Decimal("0.01") + most
    assert Sample.objects.filter(judge_state="capped").count() == result.capped
    assert services.judge_pending().judged == 0


def test_samples_outside_the_judged_share_wait_for_nothing(application, judge_policy):
    judge_policy.judge_rate = 0.0
    judge_policy.save()
    ingest(application, [sample("s-1"), sample("s-2")])
    assert set(Sample.objects.values_list("judge_state", flat=True)) == {"skipped"}
    assert services.judge_pending().judged == 0


def test_one_sweep_at_a_time(application, judge_policy):
    ingest(application, [sample("l-1")])
    cache.add(services.JUDGE_LOCK, 1, timeout=60)
    try:
        assert services.judge_pending().judged == 0
        assert Sample.objects.get().judge_state == "pending"
    finally:
        cache.delete(services.JUDGE_LOCK)
    assert services.judge_pending().judged == 1


def test_a_judge_that_fails_marks_the_sample_failed(
    application, judge_policy, engineer, allow_loopback
):
    allow_loopback(9)  # the discard port: nothing listens, so the connection is refused
    judge = judge_policy.judge_model
    content = {**judge.content, "base_url": "http://127.0.0.1:9/v1", "max_retries": 0}
    from console.registry import services as registry

    broken = registry.save_head_version(
        actor=engineer, head=judge.head, content=content, base_number=judge.number
    ).version
    judge_policy.judge_model = broken
    judge_policy.save()
    ingest(application, [sample("f-1")])
    result = services.judge_pending()
    assert result.failed == 1
    failed = Sample.objects.get()
    assert failed.judge_state == "failed"
    assert "judge failed" in failed.judge_reasons["relevance"]
