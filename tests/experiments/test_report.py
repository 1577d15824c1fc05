"""The experiment report end to end: usage events with flag and variant, folded into the
rollups, read back per variant with verdicts; the command's JSON line; the pages; and
"Conclude" opening a promotion with the report as evidence."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from console.api import snapshot
from console.audit.models import AuditEvent
from console.experiments import report
from console.releases.models import PromotionRequest
from tests.experiments.conftest import FLAG, send


def _prod_config(world) -> bytes:
    snapshot.forget_all()
    return snapshot.build(world.prod.pk).body


@pytest.fixture
def clear_winner(world, experiment):
    send(world, experiment, per_arm=1500, errors={"v1": 0.10, "v2": 0.02})
    return experiment


def test_the_report_finds_the_variant_with_fewer_errors(world, clear_winner):
    found = report.build(clear_winner, world.prod)
    assert [v["requests"] for v in found["variants"]] == [1500, 1500]
    assert found["control"] == "v1"
    assert found["conclusion"]["status"] == "winner"
    assert found["conclusion"]["winner"] == "v2"
    errors = next(f for f in found["figures"] if f["metric"] == "error_rate")
    cell = errors["cells"]["v2"]
    assert cell["verdict"] == "better"
    assert cell["difference_interval"][1] < 0  # v2 − v1 is below zero, interval and all
    assert errors["cells"]["v1"]["interval"][0] < errors["cells"]["v1"]["value"]
    assert found["srm"]["mismatch"] is False
    # Nothing judged yet: quality figures wait for data instead of guessing.
    faith = next(f for f in found["figures"] if f["metric"] == "faithfulness")
    assert faith["cells"]["v2"]["verdict"] == "not enough data"


def test_the_command_prints_the_report_as_one_json_line(world, clear_winner):
    out = StringIO()
    call_command("experiment_report", world.application.key, FLAG, "--env", "prod", stdout=out)
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1
    printed = json.loads(lines[0])
    assert printed["flag"] == FLAG and printed["environment"] == "prod"
    assert printed["conclusion"]["winner"] == "v2"
    with pytest.raises(CommandError, match="no flag"):
        call_command("experiment_report", world.application.key, "nope", "--env", "prod")
    with pytest.raises(CommandError, match="does not split traffic"):
        call_command("experiment_report", world.application.key, FLAG, "--env", "dev")


def test_a_split_unlike_the_rules_is_a_sample_ratio_mismatch(world, experiment):
    send(world, experiment, per_arm=1500, errors={"v1": 0.05, "v2": 0.05}, split=(0.56, 0.44))
    found = report.build(experiment, world.prod)
    assert found["srm"]["mismatch"] is True
    assert found["conclusion"]["status"] == "srm"
    assert found["conclusion"]["winner"] is None


def test_below_the_minimum_there_is_no_verdict(world, experiment):
    send(world, experiment, per_arm=60, errors={"v1": 0.5, "v2": 0.0})
    found = report.build(experiment, world.prod)
    assert found["conclusion"]["status"] == "collecting"


def test_shadow_calls_are_not_counted(world, experiment):
    from console.usage import services as usage

    usage.ingest(
        application=world.application,
        environment=world.prod,
        events=[
            {
                "event_id": f"s{n}",
                "time": report.timezone.now().isoformat(),
                "model": "m",
                "flag": FLAG,
                "variant": "v2",
                "shadow_of": f"live{n}",
            }
            for n in range(5)
        ],
    )
    usage.rollup(settle=report.timedelta(0))
    found = report.build(experiment, world.prod)
    assert sum(v["requests"] for v in found["variants"]) == 0


def test_the_report_page_says_how_to_read_it(
    client, world, clear_winner, django_assert_max_num_queries
):
    client.force_login(world.users["viewer"])
    url = reverse("experiments:report", args=[world.application.key, "prod", FLAG])
    with django_assert_max_num_queries(14):
        page = client.get(url)
    assert page.status_code == 200
    text = page.content.decode()
    assert 'Winner: <span class="mono">v2</span>' in text
    assert "Always-valid intervals" in text
    assert "Each request is one observation" in text  # the unit, and what it means
    assert page.context["report"]["method"]["unit"] == "request"
    assert "Conclude: request promotion" not in text  # a viewer cannot conclude
    listing = client.get(reverse("experiments:list", args=[world.application.key]))
    assert FLAG in listing.content.decode()


def test_conclude_opens_a_promotion_with_the_report_as_evidence(client, world, clear_winner):
    world.passing_run(2)
    before = _prod_config(world)
    client.force_login(world.users["engineer"])
    url = reverse("experiments:conclude", args=[world.application.key, "prod", FLAG])
    response = client.post(url, {"variant": "v2"})
    request = PromotionRequest.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("releases:detail", args=[world.application.key, request.pk])
    assert request.status == PromotionRequest.Status.PENDING
    assert request.prompt_version == world.versions[2]
    online = request.evidence["online"]
    assert online["kind"] == "experiment" and online["variant"] == "v2"
    assert online["report"]["conclusion"]["winner"] == "v2"
    assert "concluded for v2" in request.justification
    assert AuditEvent.objects.filter(action="promotion.request").count() == 1
    assert _prod_config(world) == before  # concluding serves nothing new
    page = client.get(response.url)
    assert "Experiment report" in page.content.decode()


def test_conclude_is_for_engineers(client, world, clear_winner):
    world.passing_run(2)
    url = reverse("experiments:conclude", args=[world.application.key, "prod", FLAG])
    for role in ("viewer", "curator", "approver"):
        client.force_login(world.users[role])
        assert client.post(url, {"variant": "v2"}).status_code == 403
    assert not PromotionRequest.objects.exists()


def test_conclude_without_eval_evidence_says_what_is_missing(client, world, clear_winner):
    client.force_login(world.users["engineer"])
    url = reverse("experiments:conclude", args=[world.application.key, "prod", FLAG])
    response = client.post(url, {"variant": "v2"})
    assert response.status_code == 422
    assert "needs eval evidence first" in response.content.decode()
    # The way on: the promotion page of that very version, which shows what to launch.
    link = reverse("releases:new", args=[world.application.key])
    link += "?kind=prompt&amp;key=answer&amp;version=2&amp;environment=prod"
    assert link in response.content.decode()
    assert not PromotionRequest.objects.exists()


def test_conclude_names_a_bad_variant(client, world, clear_winner):
    client.force_login(world.users["engineer"])
    url = reverse("experiments:conclude", args=[world.application.key, "prod", FLAG])
    response = client.post(url, {"variant": "v9"})
    assert response.status_code == 422
    assert "is not one of the variants" in response.content.decode()
    # The control is what prod serves already: nothing to promote, said plainly.
    world.passing_run(1)
    response = client.post(url, {"variant": "v1"})
    assert response.status_code == 422
    assert "v1 is the control" in response.content.decode()
    assert not PromotionRequest.objects.exists()


def test_the_report_and_conclude_follow_the_definition_prod_serves(client, world, clear_winner):
    """Editing the flag (v2 now names answer@3) changes nothing prod serves until promoted: the
    report and Conclude keep answer@2, the version the experiment ran."""
    from console.flags import services as flags

    variants = [dict(v) for v in clear_winner.variants]
    variants[1]["ref"] = {"kind": "prompt", "key": "answer", "version": 3}
    flags.update_flag(
        actor=world.users["engineer"], flag=clear_winner, name=clear_winner.name,
        description="", kind=clear_winner.kind, owner=None, variants=variants, off_variant="v1",
    )  # fmt: skip
    found = report.build(clear_winner, world.prod)
    assert found["variants"][1]["ref"]["version"] == 2
    world.passing_run(2)
    client.force_login(world.users["engineer"])
    url = reverse("experiments:conclude", args=[world.application.key, "prod", FLAG])
    assert client.post(url, {"variant": "v2"}).status_code == 302
    assert PromotionRequest.objects.get().prompt_version == world.versions[2]


def test_a_kill_and_restore_starts_the_split_again(world, clear_winner):
    from console.flags import services as flags

    flags.kill_flag(actor=world.users["engineer"], flag=clear_winner, environment=world.prod,
                    reason="check")  # fmt: skip
    flags.restore_flag(actor=world.users["engineer"], flag=clear_winner, environment=world.prod,
                       reason="back")  # fmt: skip
    found = report.build(clear_winner, world.prod)
    assert sum(v["requests"] for v in found["variants"]) == 0  # the traffic before is left out


def test_conclude_adds_the_report_to_a_request_already_open_for_the_winner(
    client, world, clear_winner
):
    from console.releases import services as releases

    world.passing_run(2)
    open_one = releases.open_request(
        actor=world.users["engineer2"],
        environment=world.prod,
        version=world.versions[2],
        justification="v2 reads better",
    )
    client.force_login(world.users["engineer"])
    url = reverse("experiments:conclude", args=[world.application.key, "prod", FLAG])
    response = client.post(url, {"variant": "v2"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse(
        "releases:detail", args=[world.application.key, open_one.pk]
    )
    assert f"#{open_one.pk} already asks for" in response.content.decode()
    assert PromotionRequest.objects.count() == 1
    open_one.refresh_from_db()
    assert open_one.evidence["online"]["report"]["conclusion"]["winner"] == "v2"
    assert open_one.revision == 1 and open_one.justification == "v2 reads better"
    event = AuditEvent.objects.filter(action="promotion.evidence").get()
    assert event.actor_label == world.users["engineer"].username


def test_targeting_rules_turn_the_ratio_check_off_and_say_why(world, experiment):
    from datetime import timedelta

    from django.utils import timezone

    from console.core.versioning import dated
    from console.flags import services as flags
    from console.flags.models import FlagRulesVersion
    from tests.experiments.conftest import SPLIT

    send(world, experiment, per_arm=300, errors={"v1": 0.05, "v2": 0.05}, split=(0.7, 0.3))
    assert report.build(experiment, world.prod)["srm"]["mismatch"] is True  # 70/30 vs 50/50
    staff = {
        "name": "Staff",
        "serve": {"variant": "v2"},
        "conditions": [{"attribute": "email", "operator": "ends_with", "value": "@acme.com"}],
    }
    head = flags.rules_head(experiment, world.prod)
    with dated(FlagRulesVersion, timezone.now() - timedelta(hours=3)):
        flags.save_rules(
            actor=world.users["engineer"], flag=experiment, environment=world.prod,
            content={"enabled": True, "rules": [staff], "default": {"rollout": SPLIT}},
            base_number=head.latest_number, via_promotion=True,
        )  # fmt: skip
    found = report.build(experiment, world.prod)
    assert found["srm"]["checked"] is False and found["srm"]["mismatch"] is False
    assert "targeting rules also serve v2" in found["srm"]["note"]


def test_new_evidence_on_an_approved_request_asks_for_approval_again(client, world, clear_winner):
    from console.releases import services as releases

    world.passing_run(2)
    open_one = releases.open_request(
        actor=world.users["engineer2"], environment=world.prod, version=world.versions[2],
        justification="v2 reads better",
    )  # fmt: skip
    releases.decide(actor=world.users["approver"], request=open_one, decision="approve")
    open_one.refresh_from_db()
    assert open_one.status == PromotionRequest.Status.APPROVED
    client.force_login(world.users["engineer"])
    url = reverse("experiments:conclude", args=[world.application.key, "prod", FLAG])
    client.post(url, {"variant": "v2"})
    client.post(url, {"variant": "v2"})  # a second reading keeps the first in the history
    open_one.refresh_from_db()
    assert open_one.status == PromotionRequest.Status.PENDING
    assert open_one.revision == 2
    assert releases.approvals_count(open_one) == 0
    assert len(open_one.evidence["online_history"]) == 1
    event = AuditEvent.objects.filter(action="promotion.evidence").order_by("seq").first()
    assert event.after["approvals_reset"] is True
    assert "v2 beats v1" in event.after["online"]["summary"]
