"""The compare page keeps the comparison of two finished runs (bootstrap intervals over every
item) in the cache: a second view reads no result rows and shows the same figures."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from console.evals import selectors
from tests.evals.helpers import app_url
from tests.evals.test_views import finished_run

pytestmark = pytest.mark.django_db


def test_a_second_compare_view_reuses_the_comparison(
    engineer_client, demo, django_assert_max_num_queries, monkeypatch
):
    cache.clear()
    base = finished_run(demo, prompt=1)
    candidate = finished_run(demo, prompt=3)
    url = app_url(demo.application, "compare") + f"?a={base.pk}&b={candidate.pk}"
    first = engineer_client.get(url)
    assert first.status_code == 200

    def no_recompute(*args, **kwargs):
        raise AssertionError("compared again")

    monkeypatch.setattr(selectors, "compare_runs", no_recompute)
    with django_assert_max_num_queries(12):
        second = engineer_client.get(url)
    assert second.status_code == 200
    a, b = first.context["cmp"], second.context["cmp"]
    assert (b.verdict, b.common, b.deltas, b.charts) == (a.verdict, a.common, a.deltas, a.charts)
    assert (b.base.pk, b.candidate.pk) == (base.pk, candidate.pk)
    page = first.content.decode().split("<main", 1)[1]
    assert page == second.content.decode().split("<main", 1)[1]


def test_an_unfinished_run_is_compared_afresh(demo, monkeypatch):
    base = finished_run(demo, prompt=1)
    candidate = finished_run(demo, prompt=3)
    candidate.finished_at = None
    calls = []
    real = selectors.compare_runs

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(selectors, "compare_runs", counting)
    selectors.cached_comparison(base, candidate)
    selectors.cached_comparison(base, candidate)
    assert len(calls) == 2
