"""seed_shadow: the demo's shadow of answer-question v3 in prod, its paired calls, the live
answers of the judged share and their agreement judged on the bundled simulator — through the
services, once.

World: an application shaped like the demo's (tests.factories: prod protected), with
answer-question v1..v3, gpt-main@1 priced as the demo prices it, and the demo's sample policy
(judge on a simulator of this test, half the calls judged)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import caches
from django.utils import timezone

from console.accounts.roles import Role
from console.evals import demo as evals_demo
from console.evals.simulator import serve_in_thread
from console.experiments import shadow_demo, shadows
from console.ops.management.commands.seed_demo import model
from console.registry import services as registry
from console.registry.kinds import MODEL_CONFIG, PROMPT
from console.releases.models import PromotionRequest, ShadowDeployment
from console.samples import partitions
from console.samples import services as samples
from console.samples.models import Sample, ShadowAnswer
from console.usage import services as usage
from console.usage.models import UsageEvent
from tests.factories import make_prompt

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_runtime_state():
    caches["default"].clear()  # no judge sweep lock left behind
    partitions.forget()
    yield
    partitions.forget()


@pytest.fixture
def simulator_port(allow_loopback):
    server, _base_url = serve_in_thread(0)
    port = server.server_address[1]
    allow_loopback(port)
    yield port
    server.shutdown()
    server.server_close()


@pytest.fixture
def demo(application, member, simulator_port):
    """(application, users) as seed_demo leaves them when seed_shadow runs."""
    users = {"engineer": member(Role.ENGINEER, "engineer"), "admin": member(Role.ADMIN, "admin")}
    engineer = users["engineer"]
    prompt = make_prompt(application, engineer, key="answer-question")
    for n in (2, 3):
        registry.save_head_version(
            actor=engineer,
            head=prompt,
            base_number=n - 1,
            content={**prompt.latest_version.content, "params": {"k": n}},
        )
    registry.create_head(
        actor=engineer, kind=MODEL_CONFIG, application=application, key="gpt-main",
        name="Main answering model", content=model("gpt-4o-mini", 0.15, 0.075, 0.60),
    )  # fmt: skip
    usage.record_price(
        actor=users["admin"],
        application=application,
        model="gpt-4o-mini",
        effective_from=timezone.now() - timedelta(days=30),
        input_per_1m="0.15",
        cached_input_per_1m="0.075",
        output_per_1m="0.60",
        note="List price",
    )
    judge = registry.create_head(
        actor=users["admin"], kind=MODEL_CONFIG, application=application, key="judge",
        name="LLM-as-judge",
        content=model("gpt-4o", 2.50, 1.25, 10.00, port=simulator_port, temperature=0.0),
    ).version  # fmt: skip
    prompts = {
        metric: registry.create_head(
            actor=users["admin"],
            kind=PROMPT,
            application=application,
            key=f"judge-{metric}",
            name=f"Judge: {metric}",
            content=content,
        ).version
        for metric, content in (
            ("faithfulness", evals_demo.JUDGE_FAITHFULNESS),
            ("relevance", evals_demo.JUDGE_RELEVANCE),
        )
    }
    samples.update_policy(  # as console.samples.demo sets it
        actor=users["admin"],
        application=application,
        revision=0,
        redact_kinds=["email", "phone", "card", "iban", "ssn"],
        redact_patterns="",
        judge_rate=0.5,
        judge_daily_cap=Decimal("2.00"),
        judge_model=judge,
        judge_prompts=prompts,
    )
    return application, users


def counts(application) -> dict:
    return {
        "shadows": ShadowDeployment.objects.filter(environment__application=application).count(),
        "events": UsageEvent.objects.filter(application=application).count(),
        "answers": ShadowAnswer.objects.filter(application=application).count(),
        "samples": Sample.objects.filter(application=application).count(),
    }


def test_seed_shadow_gives_the_shadow_page_a_judged_comparison_once(demo, simulator_port):
    application, users = demo
    prod = application.environments.get(key="prod")
    logged = []

    assert shadow_demo.seed_shadow(application, users, log=logged.append, port=simulator_port)
    assert logged == []  # every judgement was made, none over the cap

    shadow = ShadowDeployment.objects.get(environment=prod, active=True)
    assert (shadow.kind, shadows.version_label(shadow)) == ("prompt", "answer-question@3")
    assert shadow.created_at < timezone.now() - shadow_demo.AGE  # before its first pair
    # Started as an applied request would have: no request opened (the demo's own v3 request
    # for prod, console.releases.demo, is opened after this).
    assert not PromotionRequest.objects.filter(application=application).exists()

    comparison = shadows.comparison(shadows.deployments(application).get(pk=shadow.pk))
    assert comparison["pairs"] == shadow_demo.PAIRS
    assert comparison["live_version"] == "answer-question@2"
    figures = {f["metric"]: f["cells"] for f in comparison["figures"]}
    assert figures["cost_per_request"]["shadow"]["verdict"] == "better"
    assert figures["error_rate"]["shadow"]["value"] < figures["error_rate"]["live"]["value"]
    assert figures["latency_p50"]["shadow"]["value"] > figures["latency_p50"]["live"]["value"]
    agreement = comparison["agreement"]
    # About half the answers judged (the policy's share), on the simulator, none left waiting.
    assert shadows.MIN_JUDGED < agreement["judged"] < agreement["answers"]
    assert (agreement["waiting"], agreement["failed"], agreement["capped"]) == (0, 0, 0)
    assert shadows.AGREES_WELL <= agreement["share"] < 1
    assert comparison["status"] == "no worse", comparison["summary"]
    # The judge model was asked, not only the shortcuts (identical or declining answers).
    statements = ShadowAnswer.objects.filter(
        application=application, judge_reason__contains="statements are supported"
    )
    assert statements.filter(agreement=1).exists() and statements.filter(agreement=0).exists()

    before = counts(application)
    assert shadow_demo.seed_shadow(application, users, port=simulator_port) == 0
    assert counts(application) == before
