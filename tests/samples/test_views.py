"""The samples pages: curators browse and filter, turn a sample into a golden-set item (once,
with provenance, audited); everyone reads quality; only admins change the sample policy."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from console.accounts.roles import Role
from console.audit.models import AuditEvent
from console.datasets import services as datasets
from console.datasets.models import DatasetItem
from console.samples import services
from console.samples.models import Sample, SamplePolicy
from tests.samples.conftest import sample

pytestmark = pytest.mark.django_db


@pytest.fixture
def stored(application):
    services.ingest(
        application=application,
        environment=application.environments.get(key="prod"),
        samples=[
            sample(
                "bad-1",
                inputs={"question": "Can I get a refund after 40 days?", "customer_tier": "gold"},
                output="Yes, refunds are always possible [kb-7].",
                sources=["kb-7"],
                feedback="down",
                feedback_comment="That is wrong, the window is 30 days",
            ),
            sample("good-1", feedback="up", prompt_version="answer-question@2"),
            sample("plain-1", minutes_ago=30),
        ],
    )
    return {s.sample_id: s for s in Sample.objects.all()}


@pytest.fixture
def golden(application, engineer):
    return datasets.create_dataset(
        actor=engineer, application=application, key="support-golden", name="Support golden"
    )


def url(name: str, application, *args) -> str:
    return reverse(f"samples:{name}", args=[application.key, *args])


def test_a_curator_filters_thumbs_down_and_opens_one(client, application, member, stored):
    client.force_login(member(Role.CURATOR))
    page = client.get(url("list", application), {"feedback": "down"})
    assert page.status_code == 200
    body = page.content.decode()
    assert "Can I get a refund after 40 days?" in body
    assert "How do I reset my password? (good-1)" not in body
    detail = client.get(url("detail", application, stored["bad-1"].pk))
    assert detail.status_code == 200
    text = detail.content.decode()
    assert "That is wrong, the window is 30 days" in text
    assert "Add to golden set" in text


def test_bad_filters_are_named_and_the_list_still_shows(client, application, member, stored):
    client.force_login(member(Role.CURATOR))
    page = client.get(url("list", application), {"below": "abc", "days": "400"})
    assert page.status_code == 200
    body = page.content.decode()
    assert "score below: &#x27;abc&#x27; is not a score from 0 to 1" in body
    assert "days: a whole number from 1 to 30" in body


def test_the_list_pages_by_keyset_with_bounded_queries(
    client, application, member, django_assert_max_num_queries
):
    environment = application.environments.get(key="prod")
    services.ingest(
        application=application, environment=environment,
        samples=[sample(f"k-{i}", minutes_ago=i) for i in range(120)],
    )  # fmt: skip
    client.force_login(member(Role.CURATOR))
    seen = []
    query = {}
    for _ in range(3):
        with django_assert_max_num_queries(12):
            page = client.get(url("list", application), query)
        rows = page.context["samples"]
        seen += [s.sample_id for s in rows]
        if not page.context["next_query"]:
            break
        query = page.context["next_query"]
    assert seen == [f"k-{i}" for i in range(120)]


def test_adding_a_sample_to_a_golden_set_keeps_its_provenance_once(
    client, application, member, stored, golden
):
    curator = member(Role.CURATOR)
    client.force_login(curator)
    bad = stored["bad-1"]
    form = client.get(url("detail", application, bad.pk)).context["form"]
    assert form.initial["question"] == "Can I get a refund after 40 days?"
    assert '"customer_tier": "gold"' in form.initial["variables"]
    assert form.initial["expected_sources"] == "kb-7"
    assert form.initial["tags"] == "thumbs-down"
    post = {
        "dataset": "support-golden",
        "question": form.initial["question"],
        "variables": form.initial["variables"],
        "expected_contains": "30 days",
        "expected_not_contains": "always possible",
        "expected_sources": "kb-7",
        "tags": "thumbs-down, refunds",
        "note": "",
    }
    response = client.post(url("curate", application, bad.pk), post)
    assert response.status_code == 302
    item = DatasetItem.objects.get(dataset=golden, item_id=f"prod-{bad.pk}")
    assert item.expected_contains == ["30 days"]
    assert item.expected_not_contains == ["always possible"]
    assert item.variables == {"customer_tier": "gold"}
    assert item.tags == ["production", "refunds", "thumbs-down"]
    assert f"From production sample bad-1 (#{bad.pk}): prod, answer-question@3" in item.note
    assert "thumbs down: That is wrong, the window is 30 days" in item.note
    assert "The answer it gave: Yes, refunds are always possible" in item.note
    assert Sample.objects.get(pk=bad.pk).curated_into == f"support-golden#prod-{bad.pk}"
    event = AuditEvent.objects.filter(action="dataset.item.create").latest("seq")
    assert event.actor_id == curator.pk and "bad-1" in event.after["note"]
    again = client.post(url("curate", application, bad.pk), post)
    assert again.status_code == 400
    assert (
        "this sample is already in a golden set, as support-golden#prod-" in again.content.decode()
    )
    assert DatasetItem.objects.filter(dataset=golden).count() == 1


def test_a_bad_item_is_refused_naming_the_field_and_nothing_changes(
    client, application, member, stored, golden
):
    client.force_login(member(Role.CURATOR))
    bad = stored["bad-1"]
    response = client.post(
        url("curate", application, bad.pk),
        {"dataset": "support-golden", "question": "   ", "variables": "[1, 2]"},
    )
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert "question" in errors and "must be a JSON object" in errors["variables"][0]
    assert not DatasetItem.objects.exists()
    assert Sample.objects.get(pk=bad.pk).curated_into == ""


def test_a_golden_set_of_another_application_cannot_be_chosen(
    client, application, member, stored, engineer
):
    from tests.factories import make_application

    other = make_application("other-app")
    datasets.create_dataset(actor=engineer, application=other, key="theirs", name="Theirs")
    client.force_login(member(Role.CURATOR))
    response = client.post(
        url("curate", application, stored["bad-1"].pk), {"dataset": "theirs", "question": "q"}
    )
    assert response.status_code == 400
    assert "dataset" in response.context["form"].errors
    assert not DatasetItem.objects.exists()


@pytest.mark.parametrize("role", [Role.VIEWER, Role.APPROVER])
def test_who_cannot_curate_cannot_browse_or_add_samples(client, application, member, stored, role):
    client.force_login(member(role))
    bad = stored["bad-1"]
    assert client.get(url("list", application)).status_code == 403
    assert client.get(url("detail", application, bad.pk)).status_code == 403
    assert client.post(url("curate", application, bad.pk), {"question": "q"}).status_code == 403
    assert client.get(url("quality", application)).status_code == 200


def test_a_sample_of_another_application_is_not_found(client, application, member, stored):
    from tests.factories import make_application, make_member

    other = make_application("other-app")
    client.force_login(make_member(other, Role.ADMIN))
    assert client.get(url("detail", other, stored["bad-1"].pk)).status_code == 404


def test_the_quality_page_charts_each_version(client, application, member, stored):
    Sample.objects.filter(sample_id="bad-1").update(faithfulness=0.2, relevance=0.9)
    Sample.objects.filter(sample_id="good-1").update(faithfulness=0.95, relevance=0.9)
    client.force_login(member(Role.VIEWER))
    page = client.get(url("quality", application), {"environment": "prod"})
    assert page.status_code == 200
    rows = {r.version: r for r in page.context["rows"]}
    assert rows["answer-question@3"].samples == 2
    assert rows["answer-question@3"].hallucination_rate == 1.0
    assert rows["answer-question@3"].thumbs_down_rate == 1.0
    assert rows["answer-question@2"].faithfulness == 0.95
    names = {t["name"] for t in page.context["figures"]["fig-faithfulness"]["data"]}
    assert names == {"answer-question@2", "answer-question@3"}


def test_only_admins_change_the_policy_and_bad_patterns_name_their_line(
    client, application, member
):
    client.force_login(member(Role.ENGINEER))
    assert client.get(url("policy", application)).status_code == 403
    assert client.post(url("policy", application), {}).status_code == 403
    admin = member(Role.ADMIN)
    client.force_login(admin)
    page = client.get(url("policy", application))
    assert page.status_code == 200
    form = {
        "revision": "0",
        "redact_kinds": ["email", "card"],
        "redact_patterns": "employee_id: EMP-\\d{6}\nbroken: (unclosed",
        "judge_rate": "0.2",
        "judge_daily_cap": "2.50",
    }
    refused = client.post(url("policy", application), form)
    assert refused.status_code == 400
    assert "line 2 (broken)" in refused.content.decode()
    assert not SamplePolicy.objects.exists()
    form["redact_patterns"] = "employee_id: EMP-\\d{6}"
    assert client.post(url("policy", application), form).status_code == 302
    policy = SamplePolicy.objects.get(application=application)
    assert policy.redact_kinds == ["email", "card"]
    assert policy.redact_patterns == [{"name": "employee_id", "pattern": "EMP-\\d{6}"}]
    assert policy.judge_daily_cap == Decimal("2.50")
    event = AuditEvent.objects.get(action="samples.policy.update")
    assert event.actor_id == admin.pk and event.after["judge_rate"] == 0.2
    stale = client.post(url("policy", application), {**form, "judge_rate": "0.5"})
    assert stale.status_code == 400
    assert "someone changed this policy" in stale.content.decode()
    assert SamplePolicy.objects.get().judge_rate == 0.2
