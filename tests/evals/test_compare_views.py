"""Compare and run-list rough edges: an all-errored run says so, runs on different golden set
versions offer a re-run of A on B's version, and a failed run names the gate it missed."""

from __future__ import annotations

import html as htmllib
import re

import pytest
from django.urls import reverse

from console.accounts.roles import Role
from console.audit.models import AuditEvent
from console.evals.models import EvalResult, EvalRun
from tests.evals.helpers import app_url, publish_items
from tests.evals.test_views import finished_run, flashes
from tests.factories import make_member

pytestmark = pytest.mark.django_db


def compare_url(demo, a: EvalRun, b: EvalRun) -> str:
    return app_url(demo.application, "compare") + f"?a={a.pk}&b={b.pk}"


def text(response) -> str:
    """The page as a reader sees it: tags dropped, entities decoded, whitespace collapsed."""
    return " ".join(htmllib.unescape(re.sub(r"<[^>]+>", "", response.content.decode())).split())


# all-errored runs ------------------------------------------------------------------------------


def error_every_item(run: EvalRun, messages: list[str]) -> None:
    """Turn each stored result into the error a provider outage leaves behind."""
    for n, result in enumerate(EvalResult.objects.filter(run=run).order_by("position")):
        result.status, result.passed, result.scores = EvalResult.Status.ERROR, None, {}
        result.output, result.error = "", messages[n % len(messages)]
        result.save()


def test_comparing_a_run_that_errored_on_every_item_says_so(engineer_client, demo):
    a = finished_run(demo, prompt=1)
    b = finished_run(demo, prompt=3)
    error_every_item(
        b, ["HTTP 401 from the provider: invalid API key"] * 3 + ["timed out after 30 s"]
    )
    response = engineer_client.get(compare_url(demo, a, b))
    assert response.status_code == 200
    cmp = response.context["cmp"]
    assert cmp.verdict == "nothing to compare" and cmp.deltas == []
    [errored] = cmp.errored
    assert (errored.run.pk, errored.items, errored.times) == (b.pk, 60, 45)
    page = text(response)
    assert f"Run #{b.pk} errored on every item (60 items) — nothing to compare" in page
    assert "Most common error (45 of 60): HTTP 401 from the provider: invalid API key" in page
    assert "No detectable difference" not in page
    raw = response.content.decode()
    assert "<th>Metric</th>" not in raw  # no empty deltas table
    assert 'data-chart="chart-scores"' not in raw


def test_both_runs_errored_names_each(engineer_client, demo):
    a = finished_run(demo, prompt=1)
    b = finished_run(demo, prompt=3)
    error_every_item(a, ["connection refused"])
    error_every_item(b, ["connection refused"])
    page = text(engineer_client.get(compare_url(demo, a, b)))
    assert f"Run #{a.pk} errored on every item (60 items)" in page
    assert f"Run #{b.pk} errored on every item (60 items)" in page
    assert "Most common error: connection refused" in page


def test_no_item_scored_by_both_runs_is_nothing_to_compare(engineer_client, demo):
    a = finished_run(demo, prompt=1)
    b = finished_run(demo, prompt=3)
    positions = list(EvalResult.objects.filter(run=a).values_list("position", flat=True))
    half = sorted(positions)[:30]
    results = EvalResult.objects.filter
    results(run=a, position__in=half).update(status="error", passed=None, error="x")
    results(run=b).exclude(position__in=half).update(status="error", passed=None, error="y")
    response = engineer_client.get(compare_url(demo, a, b))
    assert response.context["cmp"].verdict == "nothing to compare"
    page = text(response)
    assert "Nothing to compare: no item was scored in both runs" in page
    assert "No detectable difference" not in page


# different golden set versions -----------------------------------------------------------------


@pytest.fixture
def on_two_versions(demo):
    a = finished_run(demo, prompt=1, judged=True, gates=[])
    _, other = publish_items(
        demo.application,
        demo.engineer,
        "tiny",
        [{"id": "t1", "question": "How long is the return window?"}],
    )
    b = finished_run(demo, dataset_version=other)
    return a, b, other


def test_different_golden_set_versions_offer_a_rerun_of_a_on_bs_version(
    engineer_client, demo, on_two_versions
):
    a, b, other = on_two_versions
    response = engineer_client.get(compare_url(demo, a, b))
    assert response.status_code == 200
    page = text(response)
    assert "A ran on support-golden v1 and B on tiny v1" in page
    assert "Re-run A on tiny v1" in page
    rerun = reverse("evals:rerun", kwargs={"app": demo.application.key, "pk": a.pk})
    raw = response.content.decode()
    assert f'action="{rerun}"' in raw
    assert f'name="dataset_version" value="{other.pk}"' in raw
    assert "cmp" not in response.context


def test_a_viewer_sees_the_mismatch_but_no_rerun_button(client, demo, on_two_versions):
    a, b, _ = on_two_versions
    client.force_login(make_member(demo.application, Role.VIEWER, "viewer"))
    page = text(client.get(compare_url(demo, a, b)))
    assert "A ran on support-golden v1 and B on tiny v1" in page
    assert "Re-run A on" not in page
    assert "An engineer of" in page


def test_rerun_launches_as_prompt_and_model_on_bs_version(engineer_client, demo, on_two_versions):
    a, b, other = on_two_versions
    before = EvalRun.objects.count()
    response = engineer_client.post(
        reverse("evals:rerun", kwargs={"app": demo.application.key, "pk": a.pk}),
        {"dataset_version": str(other.pk), "compare_with": str(b.pk)},
    )
    assert EvalRun.objects.count() == before + 1
    run = EvalRun.objects.order_by("-pk").first()
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "evals:run", kwargs={"app": demo.application.key, "pk": run.pk}
    )
    assert run.dataset_version_id == other.pk
    assert (run.prompt_version_id, run.model_version_id) == (
        a.prompt_version_id,
        a.model_version_id,
    )
    assert run.judge_model_version_id == a.judge_model_version_id
    assert run.judge_prompts == a.judge_prompts and run.scorers == a.scorers
    assert run.created_by == demo.engineer
    assert AuditEvent.objects.filter(action="eval.launch", object_id=str(run.pk)).exists()
    [message] = flashes(response)
    assert f"Launched run #{run.pk}: run #{a.pk}'s set-up on tiny v1." in message
    assert f"Compare it with #{b.pk}" in message


def test_rerun_refuses_a_version_of_another_application_and_changes_nothing(
    engineer_client, demo, on_two_versions
):
    a, b, _ = on_two_versions
    before = EvalRun.objects.count()
    url = reverse("evals:rerun", kwargs={"app": demo.application.key, "pk": a.pk})
    response = engineer_client.post(url, {"dataset_version": "999999", "compare_with": str(b.pk)})
    assert response.status_code == 302
    assert response["Location"].endswith(f"?a={a.pk}&b={b.pk}")
    assert flashes(response) == [
        f"dataset_version: '999999' is not a published golden set version of "
        f"{demo.application.name}."
    ]
    assert EvalRun.objects.count() == before
    assert engineer_client.get(url).status_code == 405


def test_rerun_is_refused_to_a_viewer(client, demo, on_two_versions):
    a, _, other = on_two_versions
    client.force_login(make_member(demo.application, Role.VIEWER, "viewer"))
    before = EvalRun.objects.count()
    response = client.post(
        reverse("evals:rerun", kwargs={"app": demo.application.key, "pk": a.pk}),
        {"dataset_version": str(other.pk)},
    )
    assert response.status_code == 403
    assert EvalRun.objects.count() == before


# failed gates in the run list ------------------------------------------------------------------


def test_a_failed_run_in_the_list_names_the_gate_it_missed(engineer_client, demo):
    failed = finished_run(
        demo,
        gates=[
            {"metric": "pass_rate", "op": ">=", "threshold": 0.99},
            {"metric": "recall_at_5", "op": ">=", "threshold": 0.1},
            {"metric": "faithfulness", "op": ">=", "threshold": 0.8},
        ],
    )
    passed = finished_run(demo, gates=[{"metric": "pass_rate", "op": ">=", "threshold": 0.5}])
    assert (failed.verdict, passed.verdict) == ("failed", "passed")
    pass_rate = failed.metrics["pass_rate"]
    response = engineer_client.get(app_url(demo.application, "runs"))
    page = text(response)
    expected = f"failed: pass_rate {pass_rate:.2f} < 0.99; faithfulness not measured (needs >= 0.8)"
    assert expected in page
    notes = {run.pk: run.note for run in response.context["page"].object_list}
    assert notes == {failed.pk: expected, passed.pk: ""}


def test_an_errored_run_in_the_list_says_why(engineer_client, demo):
    run = finished_run(demo)
    EvalRun.objects.filter(pk=run.pk).update(
        verdict="errored",
        verdict_detail={"reason": "12 of 60 items errored (20% > 10%): too many to judge"},
    )
    page = text(engineer_client.get(app_url(demo.application, "runs")))
    assert "12 of 60 items errored (20% > 10%): too many to judge" in page


def test_gate_numbers_show_enough_places_to_differ():
    from console.evals.selectors import failed_gates

    run = EvalRun(
        verdict="failed",
        verdict_detail={
            "gates": [
                {"metric": "pass_rate", "op": ">=", "threshold": 0.85, "actual": 0.8467,
                 "passed": False},
                {"metric": "latency_p95_ms", "op": "<=", "threshold": 800, "actual": 1234.5,
                 "passed": False},
                {"metric": "cost_per_item", "op": "<=", "threshold": 0.001, "actual": 0.0015,
                 "passed": False},
            ]
        },
    )  # fmt: skip
    assert failed_gates(run) == [
        "pass_rate 0.847 < 0.850",
        "latency_p95_ms 1,234 > 800",
        "cost_per_item 0.0015 > 0.0010",
    ]


def test_the_run_list_stays_bounded_in_queries(
    engineer_client, demo, django_assert_max_num_queries
):
    for _ in range(3):
        finished_run(demo, gates=[{"metric": "pass_rate", "op": ">=", "threshold": 0.99}])
    with django_assert_max_num_queries(12):
        response = engineer_client.get(app_url(demo.application, "runs"))
    assert response.content.decode().count("failed: pass_rate") == 3


# per-tag deltas --------------------------------------------------------------------------------


def test_compare_shows_the_pass_rate_change_of_each_tag(engineer_client, demo):
    a = finished_run(demo, prompt=1)
    b = finished_run(demo, prompt=3)
    response = engineer_client.get(compare_url(demo, a, b))
    cmp = response.context["cmp"]
    slices = dict(cmp.slices)
    assert set(slices) == set(b.metrics["slices"]) == set(a.metrics["slices"])
    for tag, delta in slices.items():
        # Each slice pairs the tag's items: its A and B match the runs' own per-tag figures.
        assert delta.base == pytest.approx(a.metrics["slices"][tag]["pass_rate"], abs=1e-4), tag
        assert delta.candidate == pytest.approx(b.metrics["slices"][tag]["pass_rate"], abs=1e-4)
        assert delta.n == b.metrics["slices"][tag]["items"]
        assert delta.low <= delta.delta <= delta.high
    page = text(response)
    assert "Pass rate by tag" in page
    worse_or_better = [t for t, d in slices.items() if d.verdict != "no detectable difference"]
    assert worse_or_better, "v1 → v3 changes some tag's pass rate beyond its interval"
    raw = response.content.decode()
    for tag in worse_or_better:
        d = slices[tag]
        row = (
            rf'<td class="strong">{tag}</td><td class="num">{d.n}</td>\s*'
            rf"<td>{d.base:.3f}</td><td>{d.candidate:.3f}</td>\s*"
            rf'<td class="\w+-text">{d.delta:.3f}</td>'
        )
        assert re.search(row, raw), tag
