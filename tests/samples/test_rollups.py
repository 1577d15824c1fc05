"""Hourly sample rollups: a pass folds settled samples into hours and moves its watermark; the
judge's later scores mark their hour stale and the next pass refolds it; a monitor's reading
(whole hours from the rollups, the rest from the raw samples) is the raw reading, late samples,
stale hours and a pass committing mid-read included; retention takes the rollups too; the beat
task folds, then sweeps, and sweeps even when the fold fails."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta

import pytest
from django.db import DatabaseError
from django.utils import timezone

from console.registry.models import PromptVersion
from console.samples import monitors, rollups, services
from console.samples.models import (
    Monitor,
    MonitorAlert,
    Sample,
    SampleHourly,
    SampleRollupState,
    StaleSampleHour,
)
from console.samples.tasks import check_monitors
from tests.samples.conftest import sample

pytestmark = pytest.mark.django_db
REFUSAL = "I'm sorry, I can't help with that based on the documentation I have."
ANSWER = "Open Settings, then Security, then Reset password [kb-12]."
NOW = timedelta(0)
V3, V4 = "answer-question@3", "answer-question@4"


def this_hour() -> datetime:
    return rollups.hour_of(timezone.now())


def store(application, rows: list[dict], env: str = "prod") -> None:
    for start in range(0, len(rows), 500):
        services.ingest(
            application=application,
            environment=application.environments.get(key=env),
            samples=rows[start : start + 500],
        )


def varied(rng: random.Random, prefix: str, n: int, earliest: datetime, latest: datetime):
    """n samples at random times of [earliest, latest), of every kind a monitor counts."""
    span = (latest - earliest).total_seconds()
    return [
        sample(
            f"{prefix}-{i}",
            time=(earliest + timedelta(seconds=rng.uniform(0, span))).isoformat(),
            inputs={"question": "q" * rng.choice([5, 39, 40, 100, 200, 500, 900, 2000])},
            output=rng.choice([REFUSAL, ANSWER, ANSWER]),
            feedback=rng.choice(["up", "down", None, None, None]),
            prompt_version=rng.choice([V3, V3, V4]),
        )
        for i in range(n)
    ]


def score(rng: random.Random, share: float = 0.5, **where) -> None:
    """Judge a share of the samples (straight in the table, as if before any pass)."""
    for pk, at in Sample.objects.filter(**where).values_list("pk", "at"):
        if rng.random() < share:
            Sample.objects.filter(pk=pk, at=at).update(
                faithfulness=round(rng.random(), 4),
                relevance=round(rng.random(), 4) if rng.random() < 0.8 else None,
                judge_state="done",
            )


def both(application, start: datetime, end: datetime, version: str = ""):
    where = {
        "application_id": application.pk,
        "environment_id": application.environments.get(key="prod").pk,
        "version": version,
        "start": start,
        "end": end,
    }
    return rollups.tally(**where), rollups.tally(**where, raw=True)


def assert_same(folded: rollups.Tally, raw: rollups.Tally) -> None:
    assert folded.faithfulness_sum == pytest.approx(raw.faithfulness_sum, abs=1e-9)
    assert folded.relevance_sum == pytest.approx(raw.relevance_sum, abs=1e-9)
    counts = ("faithfulness_sum", "relevance_sum")
    assert {k: v for k, v in vars(folded).items() if k not in counts} == {
        k: v for k, v in vars(raw).items() if k not in counts
    }


def test_a_pass_folds_settled_samples_by_hour_and_version_and_moves_the_watermark(application):
    hour = this_hour() - timedelta(hours=3)
    at = (hour + timedelta(minutes=20)).isoformat()
    store(
        application,
        [
            sample("a", time=at, feedback="down", inputs={"question": "x" * 50}),
            sample("b", time=at, output=REFUSAL, inputs={"question": "x" * 700}),
            sample("c", time=at, feedback="up", inputs={"question": "x" * 10}),
            sample("d", time=at, prompt_version=V4),
        ],
    )
    Sample.objects.filter(sample_id="a").update(faithfulness=0.25, relevance=0.5)
    Sample.objects.filter(sample_id="c").update(faithfulness=0.75)

    assert rollups.rollup(settle=NOW)["samples"] == 4
    v3 = SampleHourly.objects.get(hour=hour, prompt_version=V3)
    assert (v3.samples, v3.faithfulness_n, v3.faithfulness_sum) == (3, 2, 1.0)
    assert (v3.relevance_n, v3.relevance_sum, v3.hallucinated) == (1, 0.5, 1)
    assert (v3.refused, v3.rated, v3.thumbs_down) == (1, 2, 1)
    assert v3.input_bins == [1, 1, 0, 0, 0, 1, 0]  # 10, 50 and 700 characters
    assert SampleHourly.objects.get(hour=hour, prompt_version=V4).samples == 1
    state = SampleRollupState.objects.get()
    assert state.last_sample_id == max(Sample.objects.values_list("pk", flat=True))

    # Nothing new: nothing folded. Just received: left for a later pass (SETTLE).
    assert rollups.rollup(settle=NOW)["samples"] == 0
    store(application, [sample("e", time=at)])
    assert rollups.rollup()["samples"] == 0
    assert SampleRollupState.objects.get().last_sample_id == state.last_sample_id
    assert SampleHourly.objects.get(hour=hour, prompt_version=V3).samples == 3
    assert rollups.rollup(settle=NOW)["samples"] == 1
    assert SampleHourly.objects.get(hour=hour, prompt_version=V3).samples == 4


@pytest.mark.parametrize("version", ["", V4])
def test_a_reading_is_the_raw_reading_late_samples_and_stale_hours_included(application, version):
    rng = random.Random(7)
    top = this_hour()
    store(application, varied(rng, "old", 400, top - timedelta(hours=30), timezone.now()))
    store(application, varied(rng, "staging", 50, top - timedelta(hours=30), top), env="staging")
    score(rng)
    assert rollups.rollup(settle=NOW)["samples"] == 450
    # After the pass: late samples in hours already folded, and new ones in the open hour.
    store(application, varied(rng, "late", 60, top - timedelta(hours=20), top - timedelta(hours=2)))
    store(application, varied(rng, "new", 30, top, timezone.now()))
    # The judge scores samples of a folded hour (and marks it stale, as judge_pending does).
    stale_hour = top - timedelta(hours=5)
    for s in Sample.objects.filter(at__gte=stale_hour, at__lt=stale_hour + timedelta(hours=1)):
        Sample.objects.filter(pk=s.pk, at=s.at).update(faithfulness=0.1, relevance=0.2)
        rollups.mark_stale(s.application_id, s.environment_id, s.at)

    now = timezone.now()
    spans = [
        (now - timedelta(minutes=60), now),  # partial hours only
        (now - timedelta(hours=25), now - timedelta(minutes=60)),  # the default baseline
        (top - timedelta(hours=24), top),  # whole hours only
        (top - timedelta(hours=29, minutes=59), top - timedelta(hours=3, minutes=1)),
    ]
    for start, end in spans:
        folded, raw = both(application, start, end, version)
        assert_same(folded, raw)
        assert raw.samples > 0 or end - start <= timedelta(hours=1)
    # The rollups were read: a whole day holds folded hours.
    assert SampleHourly.objects.filter(hour__gte=top - timedelta(hours=24), hour__lt=top).exists()


def test_whole_hours_come_from_the_rollups_and_the_open_hour_from_the_samples(application):
    top = this_hour()
    store(
        application,
        [sample(f"b-{i}", time=(top - timedelta(hours=3)).isoformat()) for i in range(5)],
    )
    rollups.rollup(settle=NOW)
    SampleHourly.objects.update(samples=1005)  # tampered: only the rollups say so
    store(application, [sample(f"n-{i}", time=top.isoformat()) for i in range(3)])
    folded, raw = both(application, top - timedelta(hours=6), timezone.now() + timedelta(minutes=1))
    assert (raw.samples, folded.samples) == (8, 1008)


def test_a_pass_committing_mid_reading_is_read_again(application, monkeypatch):
    top = this_hour()
    store(
        application,
        [sample(f"b-{i}", time=(top - timedelta(hours=4)).isoformat()) for i in range(5)],
    )
    rollups.rollup(settle=NOW)
    store(
        application,
        [sample(f"l-{i}", time=(top - timedelta(hours=4)).isoformat()) for i in range(3)],
    )
    original = rollups._stale_hours
    passes = []

    def stale_hours(*args):
        if not passes:  # a pass folds the late samples after the reading took the watermark
            passes.append(rollups.rollup(settle=NOW))
        return original(*args)

    monkeypatch.setattr(rollups, "_stale_hours", stale_hours)
    folded, raw = both(application, top - timedelta(hours=6), top)
    assert passes[0]["samples"] == 3
    assert (raw.samples, folded.samples) == (8, 8)  # not 11: the late ones counted once


def test_the_judge_marks_the_hours_it_scores_stale_and_the_next_pass_refolds_them(
    application, judge_policy
):
    hour = this_hour() - timedelta(hours=3)
    at = (hour + timedelta(minutes=10)).isoformat()
    store(application, [sample("good", time=at), sample("other", time=at)])
    rollups.rollup(settle=NOW)
    assert SampleHourly.objects.get(hour=hour).faithfulness_n == 0  # folded while pending
    assert services.judge_pending().judged == 2
    assert set(StaleSampleHour.objects.values_list("hour", flat=True)) == {hour}
    folded, raw = both(application, hour - timedelta(hours=2), hour + timedelta(hours=2))
    assert raw.faithfulness_n == 2
    assert_same(folded, raw)  # the stale hour is read from the samples

    assert rollups.rollup(settle=NOW)["stale"] == 2
    assert not StaleSampleHour.objects.exists()
    refolded = SampleHourly.objects.get(hour=hour)
    assert (refolded.faithfulness_n, refolded.relevance_n) == (2, 2)
    assert refolded.faithfulness_sum == pytest.approx(
        sum(Sample.objects.values_list("faithfulness", flat=True))
    )


def test_a_monitor_alerts_the_same_from_the_rollups(application, engineer):
    """Faithfulness 0.9 over a baseline in whole hours (folded), 0.72 in the last hour."""
    top = this_hour()
    base = [
        sample(f"b-{i}", time=(top - timedelta(hours=3, minutes=i)).isoformat()) for i in range(40)
    ]
    now = [sample(f"n-{i}", minutes_ago=5 + i / 2) for i in range(40)]
    store(application, base + now)
    Sample.objects.filter(sample_id__startswith="b-").update(faithfulness=0.9)
    Sample.objects.filter(sample_id__startswith="n-").update(faithfulness=0.72)
    rollups.rollup(settle=NOW)
    assert SampleHourly.objects.filter(hour__lt=top - timedelta(hours=1)).exists()
    services.create_monitor(
        actor=engineer, application=application,
        environment=application.environments.get(key="prod"), metric="faithfulness",
    )  # fmt: skip
    assert monitors.sweep()["raised"] == 1
    alert = MonitorAlert.objects.get()
    assert alert.value == pytest.approx(0.72) and alert.baseline == pytest.approx(0.9)
    assert alert.change == pytest.approx(20.0)


def test_monitors_of_one_environment_and_window_share_one_reading(
    application, engineer, monkeypatch
):
    prod = application.environments.get(key="prod")
    for metric in ("faithfulness", "refusal_rate", "input_drift"):
        services.create_monitor(
            actor=engineer, application=application, environment=prod, metric=metric
        )
    services.create_monitor(
        actor=engineer, application=application, environment=prod, metric="refusal_rate", version=V4
    )
    read = []
    original = rollups.tally
    monkeypatch.setattr(rollups, "tally", lambda **kw: read.append(kw) or original(**kw))
    assert monitors.sweep()["checked"] == 4
    assert len(read) == 4  # window and baseline, for all versions and for version 4
    assert {r["version"] for r in read} == {"", V4}


def test_retention_takes_the_rollups_with_the_samples(application):
    prod = application.environments.get(key="prod")
    old = this_hour() - timedelta(days=40)
    for hour in (old, this_hour()):
        SampleHourly.objects.create(
            application=application,
            environment=prod,
            hour=hour,
            samples=1,
            input_bins=[1] + [0] * 6,
        )
        StaleSampleHour.objects.create(application=application, environment=prod, hour=hour)
    services.purge(older_than_days=30)
    assert list(SampleHourly.objects.values_list("hour", flat=True)) == [this_hour()]
    assert list(StaleSampleHour.objects.values_list("hour", flat=True)) == [this_hour()]


def test_the_beat_task_folds_then_sweeps(application, engineer):
    hour = this_hour() - timedelta(hours=3)
    store(
        application,
        [sample(f"s-{i}", time=(hour + timedelta(minutes=i)).isoformat()) for i in range(3)],
    )
    Sample.objects.update(received_at=timezone.now() - timedelta(minutes=1))  # settled
    services.create_monitor(
        actor=engineer, application=application,
        environment=application.environments.get(key="prod"), metric="refusal_rate",
    )  # fmt: skip
    assert check_monitors()["checked"] == 1
    assert SampleHourly.objects.get(hour=hour).samples == 3
    assert Monitor.objects.get().last_check["baseline_n"] == 3


def test_the_beat_task_sweeps_even_when_the_fold_fails(application, engineer, monkeypatch, caplog):
    def broken(**kwargs):
        raise DatabaseError("disk full")

    monkeypatch.setattr(rollups, "rollup", broken)
    services.create_monitor(
        actor=engineer, application=application,
        environment=application.environments.get(key="prod"), metric="refusal_rate",
    )  # fmt: skip
    assert check_monitors()["checked"] == 1
    assert "sample rollup failed" in caplog.text


def test_a_sample_the_judge_finds_nothing_to_score_in_is_counted_judged_after_the_refold(
    application, engineer, judge_policy
):
    """Faithfulness only, and a sample without retrieved context: done, with no score."""
    services.update_policy(
        actor=engineer, application=application, revision=judge_policy.revision,
        redact_kinds=judge_policy.redact_kinds, redact_patterns="", judge_rate=1.0,
        judge_daily_cap=judge_policy.judge_daily_cap, judge_model=judge_policy.judge_model,
        judge_prompts={"faithfulness": PromptVersion.objects.get(
            pk=judge_policy.judge_prompts["faithfulness"])},
    )  # fmt: skip
    hour = this_hour() - timedelta(hours=2)
    store(application, [sample("bare", time=(hour + timedelta(minutes=5)).isoformat(), context=[])])
    rollups.rollup(settle=NOW)
    assert SampleHourly.objects.get(hour=hour).judged == 0
    assert services.judge_pending().judged == 1
    assert Sample.objects.get().faithfulness is None
    folded, raw = both(application, hour - timedelta(hours=1), hour + timedelta(hours=2))
    assert (folded.judged, raw.judged) == (1, 1)
    rollups.rollup(settle=NOW)
    assert SampleHourly.objects.get(hour=hour).judged == 1


def quality_from_the_samples(application, start: datetime) -> dict:
    """The quality series straight from the raw samples: the reference the page must match."""
    from django.db.models import Avg, Count, Q
    from django.db.models.functions import TruncDate

    rows = (
        Sample.objects.filter(application=application, at__gte=start)
        .annotate(day=TruncDate("at", tzinfo=UTC))
        .values("day", "environment__name", "prompt_version")
        .annotate(
            n=Count("id"),
            judged=Count("id", filter=Q(judge_state="done")),
            faithful=Avg("faithfulness"),
            relevant=Avg("relevance"),
            refused=Count("id", filter=Q(refused=True)),
            hallucinated=Count("id", filter=Q(faithfulness__lt=0.5)),
            scored=Count("faithfulness"),
            rated=Count("id", filter=~Q(feedback=0)),
            down=Count("id", filter=Q(feedback=-1)),
        )
    )
    return {
        (r["day"], r["environment__name"], r["prompt_version"] or "—"): (
            r["n"], r["judged"], r["faithful"], r["relevant"], r["refused"] / r["n"],
            r["hallucinated"] / r["scored"] if r["scored"] else None,
            r["down"] / r["rated"] if r["rated"] else None,
        )
        for r in rows
    }  # fmt: skip


def test_the_quality_series_from_the_rollups_is_the_series_of_the_raw_samples(
    application, django_assert_max_num_queries
):
    from console.samples import selectors

    rng = random.Random(11)
    top = this_hour()
    store(application, varied(rng, "old", 500, top - timedelta(days=4), timezone.now()))
    store(application, varied(rng, "stg", 80, top - timedelta(days=2), top), env="staging")
    score(rng)
    assert rollups.rollup(settle=NOW)["samples"] == 580
    # Late samples in folded hours, the open hour, and a folded hour judged since (stale).
    store(application, varied(rng, "late", 40, top - timedelta(days=3), top - timedelta(hours=2)))
    store(application, varied(rng, "new", 20, top, timezone.now()))
    store(application, [sample("unversioned", minutes_ago=90, prompt_version="")])
    stale_hour = top - timedelta(hours=7)
    for s in Sample.objects.filter(at__gte=stale_hour, at__lt=stale_hour + timedelta(hours=1)):
        Sample.objects.filter(pk=s.pk, at=s.at).update(faithfulness=0.05, judge_state="done")
        rollups.mark_stale(s.application_id, s.environment_id, s.at)

    now = timezone.now()
    environments = application.environments.count()
    with django_assert_max_num_queries(1 + 6 * environments):  # not more with more samples
        rows = selectors.quality(application, None, 7, now)
    start = datetime.combine(now.astimezone(UTC).date() - timedelta(days=6), time.min, UTC)
    reference = quality_from_the_samples(application, start)
    assert len(rows) == len(reference) > 10
    keys = [(r.day, r.environment, r.version) for r in rows]
    assert keys == sorted(keys, key=lambda k: (k[0], k[1], "" if k[2] == "—" else k[2]))
    assert any(r.version == "—" for r in rows)  # samples that named no prompt version
    for row in rows:
        n, judged, faithful, relevant, refusal, hallucination, down = reference[
            (row.day, row.environment, row.version)
        ]
        assert (row.samples, row.judged) == (n, judged)
        for got, want in [
            (row.faithfulness, faithful), (row.relevance, relevant), (row.refusal_rate, refusal),
            (row.hallucination_rate, hallucination), (row.thumbs_down_rate, down),
        ]:  # fmt: skip
            assert got == (None if want is None else pytest.approx(want, abs=1e-9))
    # One environment: only its rows.
    prod = application.environments.get(key="prod")
    assert {r.environment for r in selectors.quality(application, prod, 7, now)} == {prod.name}
    # The rollups were read, not the samples: a tampered folded hour shows.
    folded = SampleHourly.objects.filter(hour__lt=top - timedelta(hours=30)).first()
    SampleHourly.objects.filter(pk=folded.pk).update(samples=folded.samples + 1000)
    total = sum(r.samples for r in selectors.quality(application, None, 7, now))
    assert total == sum(r.samples for r in rows) + 1000
