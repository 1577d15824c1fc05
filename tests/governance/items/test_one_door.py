"""One door into protected environments: each way the governance sweep found to change prod
without evidence and another person's approval, closed — and the ways that remain (approved
apply, kill switch, rollback, an approved breaker) still work."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.test import Client
from django.utils import timezone

from console.accounts import keys
from console.accounts.roles import Role
from console.api import snapshot
from console.audit.models import AuditEvent
from console.evals.models import EvalRun
from console.flags import services as flags
from console.flags.models import FlagKind
from console.registry.services import PromotionRequired
from console.releases import policies, services
from console.releases.models import PromotionRequest
from console.usage import budgets
from console.usage.models import Budget, BudgetAlert
from tests.factories import make_member
from tests.flags.helpers import make_flag

pytestmark = pytest.mark.django_db


def prod_config(world) -> bytes:
    snapshot.forget_all()
    if not hasattr(world, "secret"):
        world.secret = keys.create_api_key(actor=None, environment=world.prod, name="gov").secret
    response = Client().get("/api/v1/config", HTTP_AUTHORIZATION=f"Bearer {world.secret}")
    assert response.status_code == 200
    return response.content


def served(world, flag_key: str) -> dict:
    return json.loads(prod_config(world))["flags"][flag_key]


def kill_switch(world):
    switch = make_flag(
        world.application, world.users["engineer"], "answers", kind=FlagKind.KILL_SWITCH
    )
    for env in world.envs.values():
        flags.save_rules(
            actor=world.users["admin"],
            flag=switch,
            environment=env,
            content={"enabled": True, "rules": [], "default": {"variant": "on"}},
            base_number=1,
            via_promotion=env.protected,
        )
    return switch


def test_editing_a_flag_definition_cannot_flip_prod(world):
    switch = kill_switch(world)
    before = prod_config(world)
    swapped = [{**v, "value": not v["value"]} for v in switch.variants]  # on=False, off=True
    flags.update_flag(
        actor=world.users["engineer"], flag=switch, name=switch.name, description="",
        kind=switch.kind, owner=None, variants=swapped, off_variant="off",
    )  # fmt: skip
    assert prod_config(world) == before  # prod serves the definition it was promoted with
    dev = flags.rules_head(switch, world.envs["dev"]).latest_version.content
    assert dev["definition"]["variants"] == swapped  # unprotected environments follow at once
    # The kill switch still moves prod only to its approved off variant (value False there).
    flags.kill_flag(actor=world.users["engineer"], flag=switch, environment=world.prod, reason="x")
    doc = served(world, "answers")
    assert doc["killed"] is True and doc["off_variant"] == "off"
    assert {v["key"]: v["value"] for v in doc["variants"]}["off"] is False


def test_a_breaker_moves_prod_only_when_its_policy_approved_that_action(world, settings):
    flag = make_flag(
        world.application, world.users["engineer"], "model-tier", flag_type="string",
        variants=[{"key": "big", "value": "big"}, {"key": "small", "value": "small"}],
        off_variant="small",
    )  # fmt: skip
    action = {"type": "variant", "flag": flag.key, "variant": "big"}
    with pytest.raises(ValidationError, match="release policy does not let breaker"):
        budgets.create_budget(
            actor=world.users["engineer"], application=world.application, name="tiny",
            period="daily", amount="0.01", environment=world.prod, action=action,
        )  # fmt: skip
    # Every environment (prod among them) is refused for the same reason.
    with pytest.raises(ValidationError, match="prod is protected"):
        budgets.create_budget(
            actor=world.users["engineer"], application=world.application, name="all",
            period="daily", amount="0.01", environment=None, action=action,
        )  # fmt: skip
    # A budget stored before the rule existed fires where allowed, and says where it did not.
    before = prod_config(world)
    budget = Budget.objects.create(
        application=world.application, name="legacy", period="daily", amount=Decimal("0.01"),
        action=action,
    )  # fmt: skip
    alert = BudgetAlert.objects.create(
        budget=budget, period_start=timezone.now(), threshold=100, spend=Decimal("1")
    )
    taken = budgets._act(budget, alert)
    assert taken["refused"] == ["prod"] and "prod" not in taken["environments"]
    assert prod_config(world) == before
    # Once another admin approved the loosening, the same breaker may fire in prod.
    admin2 = make_member(world.application, Role.ADMIN, "adm2")
    content, number = policies.current(world.prod)
    outcome, request = policies.change(
        actor=world.users["admin"], environment=world.prod,
        content={**content, "breakers": ["model-tier:big"]}, base_number=number,
        message="cost breaker",
    )  # fmt: skip
    assert outcome == "requested" and request.kind == PromotionRequest.Kind.POLICY
    services.decide(actor=admin2, request=request, decision="approve")
    services.apply(actor=admin2, request=request)
    taken = budgets._act(budget, alert)
    assert "prod" in taken["environments"]
    assert served(world, "model-tier")["default"] == {"variant": "big"}


def test_a_shadow_in_prod_needs_an_approved_request(world):
    before = prod_config(world)
    with pytest.raises(PromotionRequired):
        services.start_shadow(
            actor=world.users["admin"], environment=world.prod, version=world.versions[3]
        )
    assert prod_config(world) == before
    world.passing_run(3)
    request = services.open_request(
        actor=world.users["engineer"], environment=world.prod, version=world.versions[3],
        justification="watch v3 on live traffic", shadow=True,
    )  # fmt: skip
    services.decide(actor=world.users["approver"], request=request, decision="approve")
    services.apply(actor=world.users["engineer"], request=request)
    body = json.loads(prod_config(world))
    assert body["shadows"]["prompts"]["answer"]["version"] == 3
    assert body["prompts"]["answer"]["version"] == 1  # a shadow is never served


def test_the_policy_gates_judge_evidence_not_the_launchers(world):
    # Launched with the gates cleared: "passed" by its own (empty) gates at a 15% pass rate.
    run = world.passing_run(2, metrics={"pass_rate": 0.15})
    assert run.verdict == EvalRun.Verdict.PASSED
    with pytest.raises(services.EvidenceMissing) as caught:
        services.open_request(
            actor=world.users["engineer"], environment=world.prod, version=world.versions[2],
            justification="x",
        )  # fmt: skip
    assert "pass_rate 0.15 (needs >= 0.8" in caught.value.missing[0]
    # A metric the policy gates on but the run never measured fails too.
    with transaction.atomic():
        content, number = policies.current(world.prod)
        policies.change(
            actor=world.users["admin"], environment=world.prod,
            content={**content, "gates": [*content["gates"],
                     {"metric": "faithfulness", "op": ">=", "threshold": 0.8}]},
            base_number=number,
        )  # fmt: skip
    world.passing_run(3)
    with pytest.raises(services.EvidenceMissing) as caught:
        services.open_request(
            actor=world.users["engineer"], environment=world.prod, version=world.versions[3],
            justification="x",
        )  # fmt: skip
    assert "faithfulness not measured" in caught.value.missing[0]


def test_a_tightened_policy_blocks_apply_with_the_reason(world):
    world.passing_run(2)
    request = services.open_request(
        actor=world.users["engineer"], environment=world.prod, version=world.versions[2],
        justification="x",
    )  # fmt: skip
    services.decide(actor=world.users["approver"], request=request, decision="approve")
    content, number = policies.current(world.prod)
    outcome, _ = policies.change(
        actor=world.users["admin"], environment=world.prod,
        content={**content, "gates": [{"metric": "pass_rate", "op": ">=", "threshold": 1.1}]},
        base_number=number,
    )  # fmt: skip
    assert outcome == "applied"  # tightening takes effect at once
    with pytest.raises(ValidationError, match="no longer meets the policy"):
        services.apply(actor=world.users["engineer"], request=request)
    assert world.live() == 1


def test_without_a_baseline_airlock_launches_one_and_the_request_waits(world):
    EvalRun.objects.filter(prompt_version=world.versions[1]).delete()
    world.passing_run(2)
    request = services.open_request(
        actor=world.users["engineer"], environment=world.prod, version=world.versions[2],
        justification="x",
    )  # fmt: skip
    baseline = EvalRun.objects.get(prompt_version=world.versions[1])
    assert baseline.status == EvalRun.Status.QUEUED
    assert baseline.created_by.username == "airlock-system"
    assert baseline.gates == policies.current(world.prod)[0]["gates"]
    assert request.evidence["waiting"]
    with pytest.raises(ValidationError, match="waiting for the baseline run"):
        services.decide(actor=world.users["approver"], request=request, decision="approve")


def test_loosening_a_protected_policy_needs_another_admin(world):
    admin = world.users["admin"]
    content, number = policies.current(world.prod)
    outcome, request = policies.change(
        actor=admin, environment=world.prod, content={**content, "protected": False},
        base_number=number, message="move faster",
    )  # fmt: skip
    assert outcome == "requested"
    assert world.prod.protected  # nothing changed yet
    with pytest.raises(ValidationError, match="your own request"):
        services.decide(actor=admin, request=request, decision="approve")
    with pytest.raises(PermissionDenied, match="another admin"):
        services.decide(actor=world.users["approver"], request=request, decision="approve")
    with pytest.raises(PermissionDenied, match="Only admins"):
        policies.change(
            actor=world.users["engineer"], environment=world.prod, content=content,
            base_number=number,
        )  # fmt: skip
    assert AuditEvent.objects.filter(action="environment.policy.change").count() == 1  # setup


def test_flag_rule_requests_from_the_ui_show_rules_and_never_an_eval_gate(world):
    flag = make_flag(world.application, world.users["engineer"], "beta")
    staging = world.envs["staging"]
    flags.save_rules(
        actor=world.users["engineer"], flag=flag, environment=staging,
        content={"enabled": True, "rules": [], "default": {"variant": "on"}}, base_number=1,
    )  # fmt: skip
    client = Client()
    client.force_login(world.users["engineer"])
    chooser = client.get(f"/apps/{world.application.key}/releases/new/")
    assert chooser.status_code == 200 and "Request a promotion" in chooser.content.decode()
    assert "staging:beta" in chooser.content.decode()
    page = client.get(
        f"/apps/{world.application.key}/releases/new/?kind=flag_rules&key=staging:beta"
        "&version=2&environment=prod"
    ).content.decode()
    assert "eval gate met" not in page and "policy gates met" not in page
    assert "no eval evidence" in page and "Everyone else:" in page


def test_a_flags_protected_panel_offers_to_request_promotion(world):
    flag = make_flag(world.application, world.users["engineer"], "beta")
    client = Client()
    client.force_login(world.users["engineer"])
    page = client.get(f"/apps/{world.application.key}/flags/beta/?env=prod").content.decode()
    assert "Not served in prod yet" in page  # a new flag is not in prod until promoted
    link = (
        f"/apps/{world.application.key}/releases/new/?kind=flag_rules&amp;key=staging:beta"
        "&amp;version=1&amp;environment=prod"
    )
    assert link in page and "Request staging's rules v1" in page
    assert "beta" not in json.loads(prod_config(world))["flags"]
    viewer = Client()
    viewer.force_login(make_member(world.application, Role.VIEWER, "v1"))
    assert (
        "Request promotion to prod"
        not in viewer.get(
            f"/apps/{world.application.key}/flags/{flag.key}/?env=prod"
        ).content.decode()
    )


def test_a_rule_that_disappears_is_called_out(world):
    flag = make_flag(world.application, world.users["engineer"], "beta")
    staff = {
        "name": "Staff",
        "conditions": [{"attribute": "email", "operator": "ends_with", "value": "@acme.com"}],
        "serve": {"variant": "on"},
    }
    flags.save_rules(
        actor=world.users["admin"], flag=flag, environment=world.prod,
        content={"enabled": True, "rules": [staff], "default": {"variant": "off"}},
        base_number=1, via_promotion=True,
    )  # fmt: skip
    client = Client()
    client.force_login(world.users["engineer"])
    page = client.get(
        f"/apps/{world.application.key}/releases/new/?kind=flag_rules&key=staging:beta"
        "&version=1&environment=prod"
    )
    html = page.content.decode()
    assert page.status_code == 200
    assert "Rules disappear:" in html and "“Staff”" in html
    assert "ends with" in html and "@acme.com" in html  # rules read as rules, not JSON
