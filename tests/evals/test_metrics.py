"""Run summaries, gates and the paired-bootstrap comparison."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from console.evals import metrics
from console.evals.metrics import check_gates, compare, paired_bootstrap, percentile, summarize


def row(status="ok", passed=True, scores=None, latency=100.0, hallucinated=False, **extra):
    fields = {
        "status": status,
        "passed": passed if status == "ok" else None,
        "hallucinated": hallucinated,
        "scores": scores or {},
        "latency_ms": latency if status == "ok" else None,
        "prompt_tokens": 100,
        "cached_tokens": 0,
        "completion_tokens": 20,
        "cost": 0.001,
        "judge_cost": 0.0,
    }
    fields.update(extra)
    return SimpleNamespace(**fields)


def test_percentile_interpolates_linearly():
    values = [10, 20, 30, 40, 50]
    assert percentile(values, 50) == 30
    assert percentile(values, 0) == 10
    assert percentile(values, 100) == 50
    assert percentile(values, 25) == 20
    assert percentile([1, 2], 50) == 1.5
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert percentile([], 50) is None


def test_summarize_latency_percentiles_over_ok_items():
    rows = [row(latency=float(ms)) for ms in range(1, 101)]  # 1..100 ms
    rows.append(row(status="error"))  # no latency, must not count
    m = summarize(rows)
    assert (m["latency_p50_ms"], m["latency_p95_ms"], m["latency_p99_ms"]) == (50.5, 95.0, 99.0)


def test_summarize_counts_errors_separately_from_failures():
    rows = [
        row(passed=True, scores={"contains_all": 1.0}),
        row(passed=True, scores={"contains_all": 1.0}),
        row(passed=False, scores={"contains_all": 0.5}),
        row(passed=False, scores={"contains_all": 0.0, "refusal": 0.0}, hallucinated=True),
        row(status="error", cost=0.0),
    ]
    m = summarize(rows)
    assert m["items"] == 5
    assert m["errors"] == 1
    assert m["error_rate"] == 0.2
    # 2 passes over the 4 items that were judged — the errored one is not a failure.
    assert m["pass_rate"] == 0.5
    assert m["hallucination_rate"] == 0.25
    assert m["contains_all"] == 0.625  # mean over the items that have the score
    assert m["refusal"] == 0.0  # only one item had it
    assert m["tokens"] == {"prompt": 400, "cached": 0, "completion": 80}


def test_summarize_costs_include_the_judge_and_errored_calls():
    rows = [
        row(cost=0.002, judge_cost=0.010),
        row(cost=0.003, judge_cost=0.020),
        row(status="error", cost=0.0005),
    ]
    m = summarize(rows)
    assert m["cost_model"] == 0.0055
    assert m["cost_judge"] == 0.03
    assert m["cost_total"] == 0.0355
    assert m["cost_per_item"] == pytest.approx(0.0355 / 3)


def test_summarize_of_nothing_and_of_only_errors():
    empty = summarize([])
    assert (empty["items"], empty["error_rate"], empty["pass_rate"]) == (0, 0.0, None)
    assert empty["latency_p99_ms"] is None
    errors = summarize([row(status="error"), row(status="error")])
    assert (errors["error_rate"], errors["pass_rate"], errors["hallucination_rate"]) == (
        1.0,
        None,
        None,
    )


GATES = [
    {"metric": "pass_rate", "op": ">=", "threshold": 0.8},
    {"metric": "latency_p99_ms", "op": "<=", "threshold": 5000},
]


def test_check_gates_passed():
    verdict, detail = check_gates(
        {"items": 10, "errors": 0, "error_rate": 0.0, "pass_rate": 0.8, "latency_p99_ms": 900},
        GATES,
        0.1,
    )
    assert verdict == "passed"
    assert detail["failed"] == []
    assert detail["reason"] == "all gates met"
    assert [g["margin"] for g in detail["gates"]] == [0.0, -4100.0]


def test_check_gates_failed_names_the_gate_and_margin():
    verdict, detail = check_gates(
        {"items": 10, "errors": 0, "error_rate": 0.0, "pass_rate": 0.7, "latency_p99_ms": 6200},
        GATES,
        0.1,
    )
    assert verdict == "failed"
    assert detail["failed"] == ["pass_rate", "latency_p99_ms"]
    by_metric = {g["metric"]: g for g in detail["gates"]}
    assert by_metric["pass_rate"]["margin"] == -0.1
    assert by_metric["pass_rate"]["passed"] is False
    assert by_metric["latency_p99_ms"]["margin"] == 1200.0
    assert detail["reason"] == (
        "pass_rate 0.7 (needs >= 0.8, off by 0.1); "
        "latency_p99_ms 6200 (needs <= 5000.0, off by 1200)"
    )


def test_check_gates_errored_when_error_rate_exceeds_the_maximum():
    verdict, detail = check_gates(
        {"items": 10, "errors": 2, "error_rate": 0.2, "pass_rate": 1.0, "latency_p99_ms": 1},
        GATES,
        0.1,
    )
    assert verdict == "errored"
    assert detail["reason"] == "2 of 10 items errored (20% > 10%): too many to judge"
    # Exactly at the maximum is still judged.
    verdict, _ = check_gates(
        {"items": 10, "errors": 1, "error_rate": 0.1, "pass_rate": 1.0, "latency_p99_ms": 1},
        GATES,
        0.1,
    )
    assert verdict == "passed"


def test_check_gates_fails_a_metric_the_run_did_not_measure():
    verdict, detail = check_gates(
        {"items": 10, "errors": 0, "error_rate": 0.0, "pass_rate": 1.0, "latency_p99_ms": 1},
        [{"metric": "faithfulness", "op": ">=", "threshold": 0.85}],
        0.1,
    )
    assert verdict == "failed"
    assert detail["gates"][0]["actual"] is None
    assert detail["gates"][0]["margin"] is None
    assert detail["reason"] == "faithfulness not measured (needs >= 0.85)"


# slices ----------------------------------------------------------------------------------------


def test_summarize_slices_gives_each_tag_the_figures_of_its_items():
    rows = [
        row(item_id="a", passed=True, scores={"contains_all": 1.0}),
        row(item_id="b", passed=False, scores={"contains_all": 0.5}, hallucinated=True),
        row(item_id="c", status="error"),
        row(item_id="d", passed=True, scores={"contains_all": 1.0}),
    ]
    tags = {"a": ["refunds"], "b": ["refunds", "shipping"], "c": ["shipping"], "d": []}
    slices = metrics.summarize_slices(rows, tags)
    assert list(slices) == ["refunds", "shipping"]  # an untagged item is in no slice
    assert slices["refunds"] == {
        "items": 2,
        "errors": 0,
        "error_rate": 0.0,
        "pass_rate": 0.5,
        "hallucination_rate": 0.5,
        "contains_all": 0.75,
    }
    assert slices["shipping"]["items"] == 2
    assert slices["shipping"]["error_rate"] == 0.5
    assert slices["shipping"]["pass_rate"] == 0.0
    # Whole-run figures are not repeated per slice.
    assert "latency_p95_ms" not in slices["refunds"] and "cost_total" not in slices["refunds"]


def test_a_slice_gate_judges_the_slice_and_names_it():
    run = {
        "items": 10, "errors": 0, "error_rate": 0.0, "pass_rate": 0.9,
        "slices": {"refunds": {"pass_rate": 0.6}, "shipping": {"pass_rate": 1.0}},
    }  # fmt: skip
    gates = [
        {"metric": "pass_rate", "op": ">=", "threshold": 0.8},
        {"metric": "pass_rate", "op": ">=", "threshold": 0.8, "slice": "refunds"},
        {"metric": "pass_rate", "op": ">=", "threshold": 0.8, "slice": "shipping"},
        {"metric": "pass_rate", "op": ">=", "threshold": 0.8, "slice": "returns"},
    ]
    verdict, detail = check_gates(run, gates, 0.1)
    assert verdict == "failed"
    assert detail["failed"] == ["pass_rate[refunds]", "pass_rate[returns]"]
    assert detail["reason"] == (
        "pass_rate[refunds] 0.6 (needs >= 0.8, off by 0.2); "
        "pass_rate[returns] not measured (needs >= 0.8)"
    )
    assert detail["gates"][1]["slice"] == "refunds"
    assert "slice" not in detail["gates"][0]
    assert metrics.gate_text(gates[1]) == "pass_rate[refunds] >= 0.8"
    # A run from before slices were kept has none: its slice gates are not measured.
    verdict, detail = check_gates({"items": 1, "pass_rate": 1.0}, gates[1:2], 0.1)
    assert (verdict, detail["gates"][0]["actual"]) == ("failed", None)


def test_paired_bootstrap_identical_runs_have_a_zero_interval():
    values = [0.1 * (i % 10) for i in range(50)]
    assert paired_bootstrap(values, values) == (0.0, 0.0, 0.0)
    assert paired_bootstrap([], []) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_interval_contains_the_mean_and_is_reproducible():
    base = [1.0 if i % 2 else 0.0 for i in range(40)]
    cand = [1.0] * 30 + [0.0] * 10
    mean, low, high = paired_bootstrap(base, cand)
    assert mean == pytest.approx(0.25)
    assert low < mean < high
    assert paired_bootstrap(base, cand) == (mean, low, high)  # seeded
    with pytest.raises(ValueError):
        paired_bootstrap([1.0, 2.0], [1.0])


def rows_from(passes: list[bool], scores: list[float], latency: list[float]) -> dict:
    return {
        f"i{n}": {"status": "ok", "passed": p, "scores": {"faithfulness": s}, "latency_ms": lat}
        for n, (p, s, lat) in enumerate(zip(passes, scores, latency, strict=True))
    }


def test_compare_a_clearly_better_candidate_is_better():
    n = 40
    base = rows_from([i % 2 == 0 for i in range(n)], [0.5] * n, [800.0] * n)
    cand = rows_from([True] * n, [0.95] * n, [300.0 + i for i in range(n)])
    deltas = {d.metric: d for d in compare(base, cand, ["pass_rate", "faithfulness", "latency_ms"])}
    assert deltas["pass_rate"].verdict == "better"
    assert deltas["pass_rate"].delta == pytest.approx(0.5)
    assert (deltas["pass_rate"].base, deltas["pass_rate"].candidate) == (0.5, 1.0)
    assert deltas["faithfulness"].verdict == "better"
    assert deltas["faithfulness"].delta == pytest.approx(0.45)
    # Latency went down: lower is better.
    assert deltas["latency_ms"].higher_is_better is False
    assert deltas["latency_ms"].delta < 0
    assert deltas["latency_ms"].verdict == "better"
    assert all(d.n == n for d in deltas.values())
    # The other direction is worse on every metric.
    back = {d.metric: d.verdict for d in compare(cand, base, ["pass_rate", "latency_ms"])}
    assert back == {"pass_rate": "worse", "latency_ms": "worse"}


def test_compare_identical_runs_shows_no_detectable_difference():
    n = 30
    rows = rows_from([i % 3 != 0 for i in range(n)], [i / n for i in range(n)], [100.0] * n)
    deltas = compare(rows, rows, ["pass_rate", "faithfulness", "latency_ms"])
    assert [d.verdict for d in deltas] == ["no detectable difference"] * 3
    assert all((d.delta, d.low, d.high) == (0.0, 0.0, 0.0) for d in deltas)


def test_compare_pairs_only_items_both_runs_scored_without_error():
    base = rows_from([True, True, False], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0])
    cand = rows_from([False, True, True], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    cand["i0"] = {**cand["i0"], "status": "error"}
    base["only-in-base"] = {"status": "ok", "passed": True, "scores": {}, "latency_ms": 1.0}
    (delta,) = compare(base, cand, ["pass_rate"])
    assert delta.n == 2
    assert (delta.base, delta.candidate) == (0.5, 1.0)
    # A metric neither run scored yields no row.
    assert compare(base, cand, ["mrr"]) == []


def test_every_metric_has_a_label_and_a_direction():
    assert metrics.METRICS["hallucination_rate"][1] is False
    assert metrics.METRICS["faithfulness"][1] is True
    assert set(metrics.OPS) == {">=", "<="}


def test_slice_deltas_compare_each_tag_over_its_own_paired_items():
    def rows(passes: dict[str, bool]) -> dict[str, dict]:
        return {
            i: {"status": "ok", "passed": p, "scores": {}, "latency_ms": 1.0}
            for i, p in passes.items()
        }

    # Refunds got worse on every item; shipping did not change; "new" has no paired items.
    ids = [f"r{n}" for n in range(20)] + [f"s{n}" for n in range(20)]
    base = rows(dict.fromkeys(ids, True))
    cand = rows({i: not i.startswith("r") for i in ids})
    tags = {i: ["refunds" if i.startswith("r") else "shipping"] for i in ids} | {"x": ["new"]}
    slices = dict(metrics.slice_deltas(base, cand, tags))
    assert list(slices) == ["refunds", "shipping"]
    refunds, shipping = slices["refunds"], slices["shipping"]
    assert (refunds.n, refunds.base, refunds.candidate, refunds.delta) == (20, 1.0, 0.0, -1.0)
    assert refunds.verdict == "worse"
    assert (shipping.n, shipping.delta, shipping.verdict) == (20, 0.0, "no detectable difference")
