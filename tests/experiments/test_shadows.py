"""Shadow comparison: shadow calls' answers arrive with their usage events (redacted, refused
whole when malformed), the judge sweep scores their agreement with the live answers on the
bundled simulator within the judged share and the daily cap, the comparison pairs each shadow
call with its live call and reads errors, latency, cost and agreement with always-valid
intervals, and one click requests the promotion with that evidence.

World: tests/releases/conftest.py (prod protected, one approval, eval gate on "golden"; prompt
answer v1 live everywhere with model main@1); a shadow of answer@2 in prod since a day ago."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.messages import ERROR, get_messages
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from console.accounts import keys
from console.accounts.models import ApiKeyScope
from console.api.openapi import document
from console.audit.models import AuditEvent
from console.experiments import shadows
from console.registry import services as registry
from console.registry.kinds import MODEL_CONFIG
from console.releases import services as releases
from console.releases.models import PromotionRequest, ShadowDeployment
from console.samples import services as samples
from console.samples.models import JudgeSpend, ShadowAnswer
from console.usage import services as usage
from console.usage.models import PricePoint, UsageEvent
from tests.factories import MODEL_CONTENT, make_application, make_prompt, make_user
from tests.releases.conftest import fast_passwords as _fast_passwords  # noqa: F401 (autouse)
from tests.releases.conftest import fresh_runtime_state as _fresh_state  # noqa: F401 (autouse)
from tests.releases.conftest import world as releases_world  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db

USAGE = "/api/v1/usage"
LIVE, SHADOW = "answer@1", "answer@2"
QUESTION = "How long do I have to return an item?"
# The judge is priced like the demo's (gpt-4o): a cent buys about fifteen judgements.
JUDGE_PRICES = {
    "price_input_per_1m": 2.5,
    "price_cached_input_per_1m": 1.25,
    "price_output_per_1m": 10.0,
}
LIVE_ANSWER = "Items can be returned within 30 days of delivery for a full refund [kb-1]."


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def world(releases_world):  # noqa: F811 (the fixture imported above)
    return releases_world


@pytest.fixture
def shadow(world):
    """answer@2 shadowing in prod since a day ago, as an applied shadow request leaves it."""
    return ShadowDeployment.objects.create(
        environment=world.prod,
        kind="prompt",
        prompt_version=world.versions[2],
        created_by=world.users["engineer"],
        created_at=timezone.now() - timedelta(days=1),
    )


@pytest.fixture
def secret(world):
    return keys.create_api_key(
        actor=None,
        environment=world.prod,
        name="prod-usage",
        scopes=[ApiKeyScope.USAGE_WRITE, ApiKeyScope.SAMPLES_WRITE],
    ).secret


@pytest.fixture
def priced(world):
    """gpt-4o-mini at $1 / $0.50 / $2 per million input / cached / output tokens."""
    PricePoint.objects.create(
        application=world.application, model="gpt-4o-mini",
        effective_from=timezone.now() - timedelta(days=30), input_per_1m=Decimal("1"),
        cached_input_per_1m=Decimal("0.5"), output_per_1m=Decimal("2"),
    )  # fmt: skip


@pytest.fixture
def judge(world, simulator_url):
    """The sample policy's judge on the simulator, judging every sample and shadow answer."""
    content = {**MODEL_CONTENT, **JUDGE_PRICES, "base_url": simulator_url}
    version = registry.create_head(
        actor=world.users["admin"], kind=MODEL_CONFIG, application=world.application,
        key="judge", name="Judge", content=content,
    ).version  # fmt: skip
    return samples.update_policy(
        actor=world.users["admin"], application=world.application, revision=0,
        redact_kinds=["email", "phone", "card", "iban", "ssn"], redact_patterns="",
        judge_rate=1.0, judge_daily_cap=Decimal("5.00"), judge_model=version, judge_prompts={},
    )  # fmt: skip


def post(secret: str, events: list[dict]):
    return Client().post(
        USAGE,
        data=json.dumps({"events": events}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )


def ago(**delta) -> str:
    return (timezone.now() - timedelta(**delta)).isoformat()


def live_event(n: int, minutes: float = 30, **fields) -> dict:
    return {
        "event_id": f"live-{n}",
        "time": ago(minutes=minutes),
        "model": "gpt-4o-mini",
        "prompt_version": LIVE,
        "input_tokens": 1000,
        "output_tokens": 100,
        "latency_ms": 150.0,
        **fields,
    }


def shadow_event(n: int, minutes: float = 30, **fields) -> dict:
    return {
        **live_event(n, minutes),
        "event_id": f"shadow-{n}",
        "prompt_version": SHADOW,
        "shadow_of": f"live-{n}",
        **fields,
    }


def live_sample(n: int, output: str = LIVE_ANSWER, minutes: float = 30) -> dict:
    return {
        "sample_id": f"live-{n}",
        "time": ago(minutes=minutes),
        "inputs": {"question": QUESTION},
        "output": output,
        "prompt_version": LIVE,
    }


def ingest(world, events: list[dict]) -> None:
    """What POST /api/v1/usage stores, without the HTTP round trip."""
    for start in range(0, len(events), usage.MAX_BATCH):
        batch = events[start : start + usage.MAX_BATCH]
        usage.ingest(application=world.application, environment=world.prod, events=batch)
        samples.store_shadow_answers(
            application=world.application, environment=world.prod, events=batch
        )


def figure(comparison: dict, metric: str) -> dict:
    return next(f for f in comparison["figures"] if f["metric"] == metric)["cells"]


# ---------------------------------------------------------------- ingestion


def test_a_shadow_answer_is_stored_redacted_and_once(world, shadow, secret):
    output = "Write to jo.smith@example.com: returns are accepted within 30 days."
    events = [live_event(1), shadow_event(1, output=output), shadow_event(2, output=None)]
    response = post(secret, events)
    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 3, "duplicates": 0}
    answer = ShadowAnswer.objects.get()
    assert answer.event_id == "shadow-1" and answer.shadow_of == "live-1"
    assert answer.output == "Write to [EMAIL]: returns are accepted within 30 days."
    assert answer.redactions == {"email": 1}
    assert answer.prompt_version == SHADOW and answer.environment == world.prod
    # No judge is configured: nothing waits for one.
    assert answer.judge_state == ShadowAnswer.Judge.SKIPPED

    again = post(secret, events)
    assert again.status_code == 200 and again.json() == {"accepted": 0, "duplicates": 3}
    assert ShadowAnswer.objects.count() == 1


def test_a_bad_output_refuses_the_whole_batch_naming_index_and_field(world, shadow, secret):
    events = [
        live_event(1),
        shadow_event(1, output="fine"),
        live_event(2, output="only a shadow call may carry its answer"),
        shadow_event(3, output="x" * (samples.SHADOW_OUTPUT_LIMIT + 1)),
        shadow_event(4, output={"text": "not text"}),
        shadow_event(5, output="has a NUL \u0000"),
        live_event(6, status="exploded"),
    ]
    response = post(secret, events)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [
        (2, "output"), (3, "output"), (4, "output"), (5, "output"), (6, "status"),
    ]  # fmt: skip
    assert "shadow_of" in errors[0]["message"]
    assert "32,000" in errors[1]["message"]
    assert errors[2]["message"] == "must be text"
    # All or nothing: not one event, not one answer.
    assert not UsageEvent.objects.exists()
    assert not ShadowAnswer.objects.exists()


def test_an_output_with_an_empty_shadow_of_is_refused(world, secret):
    response = post(secret, [live_event(1, shadow_of="", output="hello")])
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "output"
    assert not UsageEvent.objects.exists()


def test_the_openapi_document_states_the_output(world):
    event = document()["components"]["schemas"]["usageBatch"]["properties"]["events"]["items"]
    assert event["properties"]["output"]["maxLength"] == samples.SHADOW_OUTPUT_LIMIT
    assert event["dependentRequired"] == {"output": ["shadow_of"]}


# ---------------------------------------------------------------- the comparison


def test_the_comparison_pairs_shadow_calls_with_their_live_calls(world, shadow, priced):
    events = []
    for n in range(300):
        # Live: 150 ms, one call in ten fails; shadow: 600 ms, never fails, three times the
        # output tokens.
        events.append(live_event(n, status="error" if n % 10 == 0 else "ok"))
        events.append(shadow_event(n, latency_ms=600.0, output_tokens=300))
    # Not pairs: a shadow call whose live call never came, calls before the shadow started,
    # and a shadow call of another version.
    events.append(shadow_event(900, latency_ms=50_000.0))
    events += [live_event(901, minutes=3000), shadow_event(901, minutes=3000)]
    events += [live_event(902), shadow_event(902, prompt_version="answer@3", event_id="other")]
    ingest(world, events)

    comparison = shadows.comparison(shadow)
    assert comparison["kind"] == "shadow" and comparison["shadow"] == shadow.pk
    assert comparison["version"] == SHADOW and comparison["environment"] == "prod"
    assert comparison["live_version"] == LIVE
    assert comparison["pairs"] == 300

    errors = figure(comparison, "error_rate")
    assert errors["live"]["value"] == pytest.approx(0.1)
    assert errors["shadow"]["value"] == 0.0
    assert errors["shadow"]["difference"] == pytest.approx(-0.1)
    low, high = errors["shadow"]["difference_interval"]
    assert low < -0.1 < high < 0
    assert errors["shadow"]["verdict"] == "better"

    cost = figure(comparison, "cost_per_request")
    # $1 per million input tokens, $2 per million output tokens.
    assert cost["live"]["value"] == pytest.approx(0.0012)
    assert cost["shadow"]["value"] == pytest.approx(0.0016)
    assert cost["shadow"]["difference"] == pytest.approx(0.0004)
    assert cost["shadow"]["verdict"] == "worse"

    for metric in ("latency_p50", "latency_p95"):
        latency = figure(comparison, metric)
        # 150 ms falls in the 100–200 ms bucket, 600 ms in the 400–800 ms one.
        assert 100 <= latency["live"]["value"] <= 200
        assert 400 <= latency["shadow"]["value"] <= 800
        assert latency["live"]["n"] == latency["shadow"]["n"] == 300
        assert latency["shadow"]["verdict"] == "worse"
    assert comparison["status"] == "worse"
    assert "worse on median latency, p95 latency and cost per request" in comparison["summary"]
    assert "better on error rate" in comparison["summary"]


def test_few_pairs_get_no_verdict(world, shadow):
    ingest(world, [e for n in range(5) for e in (live_event(n), shadow_event(n))])
    comparison = shadows.comparison(shadow)
    assert comparison["pairs"] == 5
    assert {figure(comparison, m)["shadow"]["verdict"] for m, _, _ in shadows.FIGURES} == {
        "not enough data"
    }
    assert comparison["status"] == "collecting"
    assert comparison["agreement"]["judged"] == 0


def test_an_ended_shadow_keeps_its_last_week(world, shadow):
    ingest(world, [e for n in range(3) for e in (live_event(n), shadow_event(n))])
    ShadowDeployment.objects.filter(pk=shadow.pk).update(
        active=False, ended_at=timezone.now() - timedelta(minutes=10)
    )
    ingest(world, [live_event(9, minutes=1), shadow_event(9, minutes=1)])  # after it ended
    shadow.refresh_from_db()
    comparison = shadows.comparison(shadow)
    assert comparison["pairs"] == 3 and comparison["active"] is False


# ---------------------------------------------------------------- agreement


def test_the_judge_scores_agreement_on_the_simulator(world, shadow, judge):
    answers = {
        1: "Items can be returned within 30 days of delivery for a full refund.",  # same
        2: "You can return items within 30 days of delivery.",  # says less, agrees
        3: "Returns are never accepted, and refunds are not possible.",  # contradicts
        4: "I don't know; let me connect you with a human agent.",  # declines
    }
    events = [live_event(n) for n in (*answers, 5)]
    events += [shadow_event(n, output=text) for n, text in answers.items()]
    events.append(shadow_event(5, output="Within 30 days.", minutes=90))  # live never sampled
    ingest(world, events)
    samples.ingest(
        application=world.application,
        environment=world.prod,
        samples=[live_sample(n) for n in answers],
    )
    assert set(ShadowAnswer.objects.values_list("judge_state", flat=True)) == {"pending"}
    # shadow-5 arrived 90 minutes ago (the wait for its live sample counts from arrival).
    ShadowAnswer.objects.filter(event_id="shadow-5").update(
        received_at=timezone.now() - timedelta(minutes=90)
    )

    result = samples.judge_pending()
    state = {a.event_id: a for a in ShadowAnswer.objects.all()}
    assert state["shadow-1"].agreement == 1.0 and state["shadow-1"].judge_cost == 0
    assert state["shadow-2"].agreement == 1.0 and state["shadow-2"].judge_cost > 0
    assert state["shadow-3"].agreement == 0.0 and state["shadow-3"].judge_cost > 0
    assert state["shadow-4"].agreement == 0.0 and "declines" in state["shadow-4"].judge_reason
    assert {state[f"shadow-{n}"].judge_state for n in answers} == {"done"}
    # Its live answer was never sampled, an hour and more later: not judged, and says why.
    assert state["shadow-5"].judge_state == "unmatched" and state["shadow-5"].agreement is None
    # The samples were judged in the same sweep, all within one day's spend.
    spend = JudgeSpend.objects.get(application=world.application)
    assert spend.cost == result.cost > 0
    assert spend.cost >= sum(a.judge_cost for a in state.values())

    agreement = shadows.comparison(shadow)["agreement"]
    assert (agreement["answers"], agreement["judged"], agreement["agreeing"]) == (5, 4, 2)
    assert (agreement["unmatched"], agreement["waiting"]) == (1, 0)
    assert agreement["share"] == 0.5 and agreement["mean"] == 0.5
    low, high = agreement["share_interval"]
    assert 0 <= low < 0.5 < high <= 1
    assert agreement["enough"] is False
    assert samples.judge_pending().judged == 0  # nothing judged twice


def test_a_young_answer_waits_for_its_live_sample(world, shadow, judge):
    ingest(world, [live_event(1, minutes=5), shadow_event(1, minutes=5, output="Within 30 days.")])
    samples.judge_pending()
    assert ShadowAnswer.objects.get().judge_state == "pending"
    samples.ingest(
        application=world.application, environment=world.prod, samples=[live_sample(1, minutes=5)]
    )
    samples.judge_pending()
    answer = ShadowAnswer.objects.get()
    assert answer.judge_state == "done" and answer.agreement is not None


def test_agreement_judging_stops_at_the_daily_cap(world, shadow, judge):
    judge.judge_daily_cap = Decimal("0.01")
    judge.save()
    n = 40
    ingest(
        world,
        [live_event(i) for i in range(n)]
        + [shadow_event(i, output=f"You can return items within {i} days.") for i in range(n)],
    )
    samples.ingest(
        application=world.application,
        environment=world.prod,
        samples=[live_sample(i, output=LIVE_ANSWER) for i in range(n)],
    )
    result = samples.judge_pending()
    done = ShadowAnswer.objects.filter(judge_state="done")
    capped = ShadowAnswer.objects.filter(judge_state="capped")
    assert done.count() >= 1 and capped.count() >= 1
    assert done.count() + capped.count() == n
    spend = JudgeSpend.objects.get(application=world.application)
    most = max(done.values_list("judge_cost", flat=True))
    assert Decimal("0.01") <= spend.cost < Decimal("0.01") + most
    assert result.capped >= capped.count()
    assert samples.judge_pending().judged == 0


def test_answers_outside_the_judged_share_wait_for_nothing(world, shadow, judge):
    judge.judge_rate = 0.0
    judge.save()
    ingest(world, [live_event(1), shadow_event(1, output="Within 30 days.")])
    assert ShadowAnswer.objects.get().judge_state == "skipped"


# ---------------------------------------------------------------- pages and promotion


def url(name: str, world, shadow=None) -> str:
    kwargs = {"app": world.application.key}
    if shadow is not None:
        kwargs["pk"] = shadow.pk
    return reverse(f"experiments:{name}", kwargs=kwargs)


def as_user(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_every_member_reads_the_pages_and_a_stranger_finds_nothing(world, shadow):
    ingest(world, [live_event(1), shadow_event(1, output="Within 30 days.")])
    for role in ("viewer", "curator", "approver", "engineer", "admin"):
        client = as_user(world.users[role])
        listing = client.get(url("shadows", world))
        assert listing.status_code == 200 and SHADOW.encode() in listing.content
        detail = client.get(url("shadow", world, shadow))
        assert detail.status_code == 200
        may_request = role in ("engineer", "admin")
        assert (b"Request promotion with this evidence" in detail.content) == may_request
    stranger = as_user(make_user("stranger"))
    assert stranger.get(url("shadows", world)).status_code == 404
    assert stranger.get(url("shadow", world, shadow)).status_code == 404
    # Another application's shadow, through this application's pages: not found.
    other_app = make_application()
    other = ShadowDeployment.objects.create(
        environment=other_app.environments.get(key="prod"), kind="prompt",
        prompt_version=make_prompt(other_app, world.users["admin"]).versions.get(number=1),
        created_by=world.users["admin"],
    )  # fmt: skip
    admin = as_user(world.users["admin"])
    assert admin.get(url("shadow", world, other)).status_code == 404
    assert admin.post(url("shadow_promote", world, other)).status_code == 404


def test_production_answers_are_shown_to_those_who_browse_samples(world, shadow, judge):
    ingest(world, [live_event(1), shadow_event(1, output="Returns are never accepted at all.")])
    samples.ingest(application=world.application, environment=world.prod, samples=[live_sample(1)])
    samples.judge_pending()
    curator = as_user(world.users["curator"]).get(url("shadow", world, shadow)).content
    viewer = as_user(world.users["viewer"]).get(url("shadow", world, shadow)).content
    assert b"Returns are never accepted at all." in curator
    assert b"Returns are never accepted at all." not in viewer
    assert b"Where they disagree" not in viewer


def test_promote_opens_a_request_with_the_comparison_as_evidence(world, shadow):
    world.passing_run(2)  # prod's eval gate: answer@2 × main@1 passed on the golden set
    ingest(world, [e for n in range(3) for e in (live_event(n), shadow_event(n))])
    seq = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
    response = as_user(world.users["engineer"]).post(url("shadow_promote", world, shadow))
    promotion = PromotionRequest.objects.get(status=PromotionRequest.Status.PENDING)
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "releases:detail", kwargs={"app": world.application.key, "pk": promotion.pk}
    )
    assert promotion.prompt_version == world.versions[2]
    assert promotion.environment == world.prod and promotion.shadow is False
    assert promotion.requested_by == world.users["engineer"]
    online = promotion.evidence["online"]
    assert online["kind"] == "shadow" and online["shadow"] == shadow.pk
    assert online["version"] == SHADOW and online["pairs"] == 3
    assert {f["metric"] for f in online["figures"]} == {m for m, _, _ in shadows.FIGURES}
    assert "agreement" in online and online["summary"]
    assert promotion.justification.startswith(f"Shadow comparison of {SHADOW} in prod")
    assert list(AuditEvent.objects.filter(seq__gt=seq).values_list("action", flat=True)) == [
        "promotion.request"
    ]
    # A second click, the request still open: the newer reading joins its evidence.
    ingest(world, [e for n in range(3, 5) for e in (live_event(n), shadow_event(n))])
    seq = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
    again = as_user(world.users["admin"]).post(url("shadow_promote", world, shadow))
    assert again.status_code == 302 and again["Location"] == response["Location"]
    assert PromotionRequest.objects.count() == 1
    promotion.refresh_from_db()
    assert promotion.evidence["online"]["pairs"] == 5
    assert list(AuditEvent.objects.filter(seq__gt=seq).values_list("action", flat=True)) == [
        "promotion.evidence"
    ]


def test_promote_waits_for_another_versions_open_request(world, shadow):
    world.passing_run(2)
    world.passing_run(3)
    other = releases.open_request(
        actor=world.users["engineer2"], environment=world.prod, version=world.versions[3],
        justification="v3 first",
    )  # fmt: skip
    page = as_user(world.users["engineer"]).get(url("shadow", world, shadow)).content.decode()
    assert f"#{other.pk}" in page and "open for another version" in page
    response = as_user(world.users["engineer"]).post(url("shadow_promote", world, shadow))
    assert response["Location"] == url("shadow", world, shadow)
    errors = [m.message for m in get_messages(response.wsgi_request) if m.level == ERROR]
    assert any("still open" in e for e in errors)
    assert PromotionRequest.objects.count() == 1


@pytest.mark.parametrize("role", ["curator", "viewer", "approver"])
def test_promote_refuses_those_who_may_not_request(world, shadow, role):
    world.passing_run(2)
    response = as_user(world.users[role]).post(url("shadow_promote", world, shadow))
    assert response.status_code == 403
    assert not PromotionRequest.objects.exists()


def test_promote_without_eval_evidence_says_what_is_missing(world, shadow):
    response = as_user(world.users["engineer"]).post(url("shadow_promote", world, shadow))
    assert response.status_code == 302 and response["Location"] == url("shadow", world, shadow)
    errors = [m.message for m in get_messages(response.wsgi_request) if m.level == ERROR]
    assert len(errors) == 1 and "needs eval evidence" in errors[0]
    assert not PromotionRequest.objects.exists()


def test_promote_in_an_unprotected_environment_says_to_rebind(world):
    staging = ShadowDeployment.objects.create(
        environment=world.envs["staging"], kind="prompt", prompt_version=world.versions[2],
        created_by=world.users["engineer"],
    )  # fmt: skip
    response = as_user(world.users["engineer"]).post(url("shadow_promote", world, staging))
    assert response.status_code == 302
    errors = [m.message for m in get_messages(response.wsgi_request) if m.level == ERROR]
    assert any("not protected" in e for e in errors)
    assert not PromotionRequest.objects.exists()


def test_promote_is_a_post(world, shadow):
    response = as_user(world.users["engineer"]).get(url("shadow_promote", world, shadow))
    assert response.status_code == 405


# ---------------------------------------------------------------- bounded work


def add_shadows(world, count: int) -> None:
    """`count` more shadow deployments, each with pairs and answers."""
    for k in range(count):
        environment = world.envs[("dev", "staging", "prod")[k % 3]]
        ShadowDeployment.objects.create(
            environment=environment, kind="prompt", prompt_version=world.versions[3],
            created_by=world.users["engineer"],
        )  # fmt: skip
        events = [live_event(f"{k}-{n}") for n in range(4)] + [
            shadow_event(f"{k}-{n}", prompt_version="answer@3", output="ok") for n in range(4)
        ]
        usage.ingest(application=world.application, environment=environment, events=events)
        samples.store_shadow_answers(
            application=world.application, environment=environment, events=events
        )


# Session, user, membership and permissions, then the page's own: the deployments, the pairs
# (one SQL statement), the answers; the detail page adds the open request and, for those who
# browse samples, the answers that disagree most and their live samples.
LIST_QUERIES, DETAIL_QUERIES = 8, 11


def test_the_pages_cost_a_fixed_number_of_queries(world, shadow, django_assert_max_num_queries):
    def queries(user: str, path: str, most: int) -> int:
        client = as_user(world.users[user])
        with django_assert_max_num_queries(most) as captured:
            response = client.get(path)
        assert response.status_code == 200
        return len(captured.captured_queries)

    listing, detail = url("shadows", world), url("shadow", world, shadow)
    ingest(world, [e for n in range(50) for e in (live_event(n), shadow_event(n, output="a"))])
    few = queries("curator", listing, LIST_QUERIES)
    one = queries("curator", detail, DETAIL_QUERIES)
    queries("engineer", detail, DETAIL_QUERIES)
    # More deployments, more pairs, more answers: the same queries.
    add_shadows(world, 5)
    ingest(world, [e for n in range(50, 250) for e in (live_event(n), shadow_event(n))])
    assert queries("curator", listing, LIST_QUERIES) == few
    assert queries("curator", detail, DETAIL_QUERIES) == one


def test_the_comparison_renders_as_a_requests_evidence(world, shadow):
    ingest(world, [e for n in range(3) for e in (live_event(n), shadow_event(n))])
    comparison = shadows.comparison(shadow)
    html = render_to_string(
        "experiments/shadow.html#evidence",
        {"comparison": comparison, "application": world.application},
    )
    assert comparison["summary"] in html
    assert url("shadow", world, shadow) in html
    assert html.count('class="verdict') == len(shadows.FIGURES)


def test_shadow_answers_follow_the_samples_retention(world, shadow):
    ingest(world, [live_event(1), shadow_event(1, output="kept")])
    ShadowAnswer.objects.create(
        application=world.application, environment=world.prod, event_id="old", shadow_of="x",
        at=timezone.now() - timedelta(days=40), output="gone",
    )  # fmt: skip
    samples.purge(older_than_days=30)
    assert list(ShadowAnswer.objects.values_list("output", flat=True)) == ["kept"]


def test_a_usage_only_key_stores_no_answers(client, world, shadow):
    """Answers are production text, like samples: a key without samples:write is refused the
    output (named), and nothing of the batch is stored."""
    usage_only = keys.create_api_key(
        actor=None, environment=world.prod, name="usage-only", scopes=[ApiKeyScope.USAGE_WRITE]
    ).secret
    response = client.post(
        "/api/v1/usage",
        data=json.dumps({"events": [live_event(1), shadow_event(1, output="Within 30 days.")]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {usage_only}",
    )
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"index": 1, "field": "output",
         "message": "storing answers needs a key with the samples:write scope"}
    ]  # fmt: skip
    assert not UsageEvent.objects.exists() and not ShadowAnswer.objects.exists()
