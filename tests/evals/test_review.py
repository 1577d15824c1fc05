"""Human review of a run's answers, and how far the LLM judge agrees with the people (Cohen's
kappa, with the count behind it)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from console.accounts.roles import Role
from console.audit.models import AuditEvent
from console.evals import services
from console.evals.metrics import cohen_kappa, judge_agreement
from console.evals.models import EvalResult, ResultReview
from tests.evals.helpers import HTMX, publish_items, run_url
from tests.evals.test_views import finished_run
from tests.factories import make_application, make_member

# kappa ----------------------------------------------------------------------------------------


def test_kappa_is_one_for_full_agreement_and_zero_for_chance():
    assert cohen_kappa([(True, True), (False, False), (True, True)]) == 1.0
    # Rater B says pass half the time whatever A says: agreement is exactly what chance gives.
    pairs = [(True, True), (True, False), (False, True), (False, False)]
    assert cohen_kappa(pairs) == 0.0
    # Always disagreeing is worse than chance.
    assert cohen_kappa([(True, False), (False, True)]) == -1.0


def test_kappa_of_a_textbook_table():
    # 20 pass/pass, 5 pass/fail, 10 fail/pass, 15 fail/fail (n = 50):
    # po = 0.7, pe = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = 0.4.
    pairs = [(True, True)] * 20 + [(True, False)] * 5 + [(False, True)] * 10 + [(False, False)] * 15
    assert cohen_kappa(pairs) == pytest.approx(0.4)


def test_kappa_is_undefined_without_pairs_or_when_both_always_say_the_same():
    assert cohen_kappa([]) is None
    assert cohen_kappa([(True, True)] * 5) is None


def test_judge_agreement_binarises_judge_scores_and_counts_only_scored_answers():
    reviewed = [
        ({"faithfulness": 0.9, "relevance": 0.2}, True),
        ({"faithfulness": 0.1, "relevance": 0.8}, False),
        ({"faithfulness": 0.5}, True),  # 0.5 is a judge pass
        ({}, False),  # not judged at all
    ]
    out = judge_agreement(reviewed, ["faithfulness", "relevance", "absent"])
    assert out["faithfulness"] == {"kappa": 1.0, "n": 3, "agreement": 1.0}
    assert out["relevance"] == {"kappa": -1.0, "n": 2, "agreement": 0.0}
    assert "absent" not in out


# the service ----------------------------------------------------------------------------------


@pytest.fixture
def answered(demo, simulator):
    run = finished_run(demo, judged=True)
    return run, list(EvalResult.objects.filter(run=run, status="ok").order_by("position"))


def test_a_review_is_stored_audited_and_revised(demo, answered):
    run, rows = answered
    curator = make_member(demo.application, Role.CURATOR)
    review = services.review_result(actor=curator, result=rows[0], verdict="fail", note=" wrong ")
    assert (review.verdict, review.note, review.revision) == ("fail", "wrong", 1)
    again = services.review_result(
        actor=demo.engineer, result=rows[0], verdict="pass", base_revision=1
    )
    assert (again.pk, again.verdict, again.reviewer, again.revision) == (
        review.pk,
        "pass",
        demo.engineer,
        2,
    )
    events = AuditEvent.objects.filter(action="eval.review").order_by("pk")
    assert [(e.before, e.after) for e in events] == [
        (None, {"verdict": "fail", "note": "wrong"}),
        ({"verdict": "fail", "note": "wrong"}, {"verdict": "pass", "note": ""}),
    ]
    assert events[0].object_label == f"run #{run.pk} item {rows[0].item_id}"


def test_a_review_changed_meanwhile_is_a_conflict_and_nothing_is_overwritten(demo, answered):
    _, rows = answered
    curator = make_member(demo.application, Role.CURATOR)
    services.review_result(actor=curator, result=rows[0], verdict="fail", note="cites nothing")
    # The engineer opened the page before the curator's review: base revision 0.
    with pytest.raises(ValidationError) as caught:
        services.review_result(actor=demo.engineer, result=rows[0], verdict="pass")
    assert caught.value.message_dict == {
        "revision": [f"{curator.username} reviewed this answer meanwhile (fail): reload to see it"]
    }
    review = ResultReview.objects.get()
    assert (review.verdict, review.note, review.revision) == ("fail", "cites nothing", 1)
    assert AuditEvent.objects.filter(action="eval.review").count() == 1


def test_bad_reviews_name_the_field_and_store_nothing(demo, answered):
    _run, rows = answered
    errored = rows[1]
    EvalResult.objects.filter(pk=errored.pk).update(status="error", passed=None)
    errored.refresh_from_db()
    cases = [
        (dict(result=rows[0], verdict="maybe"), {"verdict": ["choose pass or fail"]}),
        (
            dict(result=rows[0], verdict="pass", note="x" * 2001),
            {"note": ["keep the note under 2000 characters (it has 2001)"]},
        ),
        (
            dict(result=errored, verdict="fail"),
            {"result": ["an errored item has no answer to review"]},
        ),
    ]
    for kwargs, expected in cases:
        with pytest.raises(ValidationError) as caught:
            services.review_result(actor=demo.engineer, **kwargs)
        assert caught.value.message_dict == expected
    assert not ResultReview.objects.exists()
    assert not AuditEvent.objects.filter(action="eval.review").exists()


# the run page ---------------------------------------------------------------------------------


def review_url(run, row) -> str:
    return reverse(
        "evals:review", kwargs={"app": run.application.key, "pk": run.pk, "result": row.pk}
    )


def test_a_curator_reviews_an_answer_in_place(client, demo, answered):
    run, rows = answered
    client.force_login(make_member(demo.application, Role.CURATOR))
    response = client.post(
        review_url(run, rows[0]), {"verdict": "fail", "note": "misses the fee"}, headers=HTMX
    )
    assert response.status_code == 200
    cell = response.content.decode()
    assert cell.strip().startswith(f'<td class="review" id="review-{rows[0].pk}">')
    assert '<span class="verdict verdict-failed">fail</span>' in cell
    assert "misses the fee" in cell
    assert 'name="base_revision" value="1"' in cell  # the next edit builds on this one
    # A stale form (base revision 0) is refused in place, with the reason.
    stale = client.post(
        review_url(run, rows[0]), {"verdict": "pass"}, headers=HTMX
    ).content.decode()
    assert "reviewed this answer meanwhile (fail): reload to see it" in stale
    assert ResultReview.objects.get().verdict == "fail"


def test_viewers_and_approvers_cannot_review(client, demo, answered):
    run, rows = answered
    for role in (Role.VIEWER, Role.APPROVER):
        client.force_login(make_member(demo.application, role))
        response = client.post(review_url(run, rows[0]), {"verdict": "pass"})
        assert response.status_code == 403, role
        page = client.get(run_url(run)).content.decode()
        assert 'name="verdict"' not in page  # no review buttons for them
    assert not ResultReview.objects.exists()


def test_a_review_of_another_runs_result_is_not_found(engineer_client, demo, answered):
    _run, rows = answered
    other = finished_run(demo, prompt=1)
    response = engineer_client.post(review_url(other, rows[0]), {"verdict": "pass"})
    assert response.status_code == 404
    assert not ResultReview.objects.exists()


def test_the_run_page_queues_unreviewed_answers_and_shows_the_judges_kappa(
    engineer_client, demo, answered
):
    run, rows = answered
    judged = [r for r in rows if "faithfulness" in r.scores][:6]
    # People agree with the judge's faithfulness on four answers and overrule it on two.
    for n, row in enumerate(judged):
        judge_pass = row.scores["faithfulness"] >= 0.5
        human_pass = judge_pass if n < 4 else not judge_pass
        response = engineer_client.post(
            review_url(run, row), {"verdict": "pass" if human_pass else "fail"}
        )
        assert response.status_code == 302
        assert response["Location"].endswith("?show=unreviewed")
    page = engineer_client.get(run_url(run)).content.decode()
    answers = run.done_items - run.error_items
    assert f"6 of {answers} answers reviewed" in page
    agreement = engineer_client.get(run_url(run)).context["review"]["agreement"]
    faithfulness = agreement["faithfulness"]
    assert faithfulness["n"] == 6 and faithfulness["agreement"] == round(4 / 6, 4)
    pairs = [
        (r.scores["faithfulness"] >= 0.5, (r.scores["faithfulness"] >= 0.5) == (n < 4))
        for n, r in enumerate(judged)
    ]
    assert faithfulness["kappa"] == cohen_kappa(pairs)
    assert "Cohen&#x27;s κ" in page or "Cohen's κ" in page
    queue = engineer_client.get(run_url(run) + "?show=unreviewed").context["page"]
    assert queue.paginator.count == answers - 6
    assert not {r.pk for r in judged} & {r.pk for r in queue.object_list}


# reviewed answers become golden-set items -----------------------------------------------------


def to_item_url(run, row) -> str:
    return reverse(
        "evals:review_to_item",
        kwargs={"app": run.application.key, "pk": run.pk, "result": row.pk},
    )


def test_a_passed_answer_becomes_an_item_with_it_as_the_reference(demo, answered):
    run, rows = answered
    curator = make_member(demo.application, Role.CURATOR, "cur")
    services.review_result(actor=curator, result=rows[0], verdict="pass", note="spot on")
    published = run.dataset_version.items.get(item_id=rows[0].item_id).snapshot.content
    item = services.reviewed_to_item(actor=curator, result=rows[0], dataset=demo.dataset)
    assert item.item_id == f"rev{run.pk}-{rows[0].item_id}"
    assert item.question == published["question"]
    assert item.expected_contains == published["expected_contains"]
    assert item.variables == published["variables"]
    assert item.reference_answer == rows[0].output
    assert "reviewed-pass" in item.tags
    assert f"From run #{run.pk}" in item.note and "reviewed pass by cur: spot on" in item.note
    event = AuditEvent.objects.filter(action="dataset.item.create").get()
    assert event.after["item_id"] == item.item_id and event.actor_id == curator.pk
    # The same answer cannot be added twice.
    with pytest.raises(ValidationError) as twice:
        services.reviewed_to_item(actor=curator, result=rows[0], dataset=demo.dataset)
    assert "already exists" in str(twice.value)
    assert AuditEvent.objects.filter(action="dataset.item.create").count() == 1


def test_a_failed_answer_is_quoted_not_made_the_reference(demo, answered):
    _run, rows = answered
    services.review_result(actor=demo.engineer, result=rows[1], verdict="fail", note="wrong fee")
    item = services.reviewed_to_item(actor=demo.engineer, result=rows[1], dataset=demo.dataset)
    assert item.reference_answer == ""
    assert "reviewed-fail" in item.tags
    assert f"The answer it failed: {rows[1].output[:40]}" in item.note


def test_only_reviewed_answers_of_this_application_become_items(demo, answered):
    _run, rows = answered
    with pytest.raises(ValidationError) as unreviewed:
        services.reviewed_to_item(actor=demo.engineer, result=rows[2], dataset=demo.dataset)
    assert "review the answer first" in str(unreviewed.value)
    services.review_result(actor=demo.engineer, result=rows[2], verdict="pass")
    elsewhere, _ = publish_items(make_application("other"), demo.engineer, "x", [{"question": "q"}])
    with pytest.raises(ValidationError) as foreign:
        services.reviewed_to_item(actor=demo.engineer, result=rows[2], dataset=elsewhere)
    assert foreign.value.message_dict == {"dataset": ["choose a golden set of this application"]}
    assert not demo.dataset.draft_items.filter(item_id__startswith="rev").exists()


def test_the_review_cell_adds_a_reviewed_answer_to_a_golden_set(client, demo, answered):
    run, rows = answered
    client.force_login(make_member(demo.application, Role.CURATOR))
    client.post(review_url(run, rows[0]), {"verdict": "pass"})
    cell = client.post(review_url(run, rows[0]), {"verdict": "pass", "base_revision": "1"},
                       headers=HTMX).content.decode()  # fmt: skip
    assert "Add to golden set" in cell and 'value="support-golden" selected' in cell
    added = client.post(
        to_item_url(run, rows[0]), {"dataset": "support-golden"}, headers=HTMX
    ).content.decode()
    assert f"as rev{run.pk}-{rows[0].item_id}: publish it to use it in runs" in added
    again = client.post(
        to_item_url(run, rows[0]), {"dataset": "support-golden"}, headers=HTMX
    ).content.decode()
    assert "already exists" in again
    missing = client.post(to_item_url(run, rows[0]), {"dataset": "nope"}, headers=HTMX)
    assert "choose a golden set of this application" in missing.content.decode()
    assert demo.dataset.draft_items.filter(item_id__startswith="rev").count() == 1
    # Viewers and approvers can neither add nor see the control.
    for role in (Role.VIEWER, Role.APPROVER):
        client.force_login(make_member(demo.application, role))
        assert (
            client.post(to_item_url(run, rows[0]), {"dataset": "support-golden"}).status_code == 403
        )
        assert "Add to golden set" not in client.get(run_url(run)).content.decode()
