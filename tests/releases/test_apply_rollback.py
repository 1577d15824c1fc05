"""Apply is atomic (a failure mid-apply changes nothing), rollback returns to a version that was
live before (reason required, audited), flag rules promote between environments, and shadow
deployments are audited."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from console.audit import services as audit_services
from console.audit.models import AuditEvent
from console.flags.models import FlagRules
from console.notifications.models import Notification
from console.registry import services as registry
from console.releases import services
from console.releases.models import PromotionRequest, ShadowDeployment
from tests.flags.helpers import make_flag, on, set_rules

pytestmark = pytest.mark.django_db


def approved(world, number: int) -> PromotionRequest:
    world.passing_run(number)
    request = services.open_request(
        actor=world.users["engineer"],
        environment=world.prod,
        version=world.versions[number],
        justification=f"v{number} please",
    )
    return services.decide(actor=world.users["approver"], request=request, decision="approve")


class Boom(Exception):
    pass


def snapshot_state(world, request) -> dict:
    request.refresh_from_db()
    return {
        "live": world.live(),
        "status": request.status,
        "applied_at": request.applied_at,
        "events": list(AuditEvent.objects.order_by("seq").values_list("seq", "action")),
        "notified": Notification.objects.filter(kind="promotion.applied").count(),
    }


@pytest.mark.parametrize("fail_in", ["bind_version", "audit.record"])
def test_a_failure_mid_apply_changes_nothing(world, transactional_db, monkeypatch, fail_in):
    request = approved(world, 2)
    before = snapshot_state(world, request)
    assert before["live"] == 1 and before["status"] == "approved"
    calls = []
    if fail_in == "bind_version":
        real_bind = registry.bind_version

        def bind_then_fail(**kwargs):
            calls.append(real_bind(**kwargs))  # the binding row is written …
            raise Boom("database went away mid-apply")  # … and then the apply fails

        monkeypatch.setattr(registry, "bind_version", bind_then_fail)
    else:
        real_record = audit_services.record

        def record_then_fail(**kwargs):
            event = real_record(**kwargs)
            if kwargs["action"] == "promotion.apply":
                calls.append(event)
                raise Boom("audit write failed")
            return event

        monkeypatch.setattr(audit_services, "record", record_then_fail)

    with pytest.raises(Boom):
        services.apply(actor=world.users["engineer"], request=request)

    assert len(calls) == 1  # the failure really happened after the write
    assert snapshot_state(world, request) == before
    monkeypatch.undo()
    # Nothing is half-done: the same request applies cleanly afterwards, chain intact.
    services.apply(actor=world.users["engineer"], request=request)
    after = snapshot_state(world, request)
    assert (after["live"], after["status"]) == (2, "applied")
    assert [a for _, a in after["events"][len(before["events"]) :]] == [
        "prompt.bind",
        "promotion.apply",
    ]
    call_command("audit_verify", verbosity=0)


def test_apply_binds_the_version_and_audits_it(world):
    request = approved(world, 2)
    refused = pytest.raises(Exception, match="requester or an approver")
    with refused:
        services.apply(actor=world.users["engineer2"], request=request)
    request = services.apply(actor=world.users["approver"], request=request)  # approvers may
    assert (request.status, request.applied_by) == ("applied", world.users["approver"])
    assert world.live() == 2
    bind = AuditEvent.objects.filter(action="prompt.bind", environment=world.prod).latest("seq")
    assert (bind.before, bind.after, bind.reason) == (
        {"version": 1},
        {"version": 2},
        f"promotion #{request.pk}",
    )
    apply = AuditEvent.objects.get(action="promotion.apply")
    assert (apply.before, apply.actor_label) == ({"live": 1}, "appr")
    assert apply.after == {
        "live": 2,
        "bundle": "answer@2 × main@1",
        "shadow": False,
        "policy_version": 1,
    }
    with pytest.raises(ValidationError, match="applied"):
        services.apply(actor=world.users["engineer"], request=request)


def test_rollback_to_a_version_that_was_live_before(world):
    services.apply(actor=world.users["engineer"], request=approved(world, 2))
    assert world.live() == 2
    assert services.previously_live("prompt", world.prompt, world.prod) == [2, 1]
    engineer = world.users["engineer2"]

    with pytest.raises(ValidationError, match="say why you roll back"):
        services.rollback(
            actor=engineer, environment=world.prod, version=world.versions[1], reason=" "
        )
    with pytest.raises(ValidationError, match="v3 was never live in prod: request a promotion"):
        services.rollback(
            actor=engineer, environment=world.prod, version=world.versions[3], reason="try"
        )
    with pytest.raises(ValidationError, match="v2 is already live"):
        services.rollback(
            actor=engineer, environment=world.prod, version=world.versions[2], reason="noop"
        )
    assert world.live() == 2

    services.rollback(
        actor=engineer,
        environment=world.prod,
        version=world.versions[1],
        reason="v2 cites the wrong policy",
    )
    assert world.live() == 1
    event = AuditEvent.objects.get(action="promotion.rollback")
    assert (event.actor_label, event.before, event.after, event.reason) == (
        "eng2",
        {"version": 2},
        {"version": 1},
        "v2 cites the wrong policy",
    )
    bind = AuditEvent.objects.filter(action="prompt.bind").latest("seq")
    assert bind.reason == "rollback: v2 cites the wrong policy" and bind.after == {"version": 1}
    # …and forward again to v2 (it was live there too) without a new approval.
    services.rollback(
        actor=engineer, environment=world.prod, version=world.versions[2], reason="ok"
    )
    assert world.live() == 2
    assert PromotionRequest.objects.count() == 1


def test_flag_rules_promote_from_staging_to_prod(world):
    engineer = world.users["engineer"]
    flag = make_flag(world.application, engineer, "new-checkout")
    staged = set_rules(flag, "staging", on("on"), engineer, message="on in staging")
    prod_head = FlagRules.objects.get(flag=flag, environment=world.prod)
    assert prod_head.latest_number == 1

    request = services.open_request(
        actor=engineer, environment=world.prod, version=staged, justification="worked in staging"
    )
    assert request.kind == "flag_rules" and request.base_live_version == 1
    assert request.evidence["ok"] is True  # rule sets carry no eval evidence
    assert request.label == "new-checkout@2 → prod"
    request = services.decide(actor=world.users["approver"], request=request, decision="approve")
    services.apply(actor=engineer, request=request)

    prod_head.refresh_from_db()
    assert prod_head.latest_number == 2
    live = prod_head.versions.get(number=2)
    assert live.content == staged.content and live.content["default"] == {"variant": "on"}
    assert services.is_live("flag_rules", staged, world.prod)
    rules = AuditEvent.objects.filter(action="flag.rules.create", environment=world.prod).get()
    assert (rules.actor_label, rules.reason) == ("eng", f"promotion #{request.pk}")


def test_flag_rules_roll_back_to_an_earlier_rules_version(world):
    engineer = world.users["engineer"]
    flag = make_flag(world.application, engineer, "new-checkout")
    staged = set_rules(flag, "staging", on("on"), engineer)
    set_rules(flag, "prod", on("on"), engineer)  # as an applied promotion would
    prod_head = FlagRules.objects.get(flag=flag, environment=world.prod)
    assert prod_head.latest_number == 2
    assert services.live_version("flag_rules", staged, world.prod).number == 2
    assert services.is_live("flag_rules", staged, world.prod)  # same content as staging's
    set_rules(flag, "prod", on("off"), engineer)  # a later promotion

    # v1 is the flag's creation there: it never served the flag in prod.
    with pytest.raises(ValidationError, match="never served this flag in prod"):
        services.rollback(
            actor=engineer,
            environment=world.prod,
            version=prod_head.versions.get(number=1),
            reason="checkout errors",
        )
    # Rolling prod's rules back to v2 writes v4 with v2's content.
    services.rollback(
        actor=engineer,
        environment=world.prod,
        version=prod_head.versions.get(number=2),
        reason="checkout errors",
    )
    prod_head.refresh_from_db()
    assert prod_head.latest_number == 4
    assert prod_head.versions.get(number=4).content == prod_head.versions.get(number=2).content
    assert prod_head.versions.get(number=4).content["default"] == {"variant": "on"}
    event = AuditEvent.objects.get(action="promotion.rollback")
    assert (event.before, event.after, event.reason) == (
        {"version": 3},
        {"version": 2},
        "checkout errors",
    )
    with pytest.raises(ValidationError, match="pick a rules version of this environment"):
        services.rollback(
            actor=engineer, environment=world.prod, version=staged, reason="wrong env"
        )


def test_shadow_start_and_end_are_audited(world):
    engineer = world.users["engineer"]
    staging = world.envs["staging"]
    first = services.start_shadow(actor=engineer, environment=staging, version=world.versions[2])
    second = services.start_shadow(actor=engineer, environment=staging, version=world.versions[3])
    first.refresh_from_db()
    assert (first.active, second.active) == (False, True)  # one shadow per prompt and env
    starts = AuditEvent.objects.filter(action="shadow.start").order_by("seq")
    assert [(e.before, e.after) for e in starts] == [
        (None, {"shadow": "v2"}),
        ({"shadow": ["v2"]}, {"shadow": "v3"}),
    ]
    assert starts[1].object_label == "answer@3 shadow in staging"
    services.end_shadow(actor=engineer, shadow=second)
    end = AuditEvent.objects.get(action="shadow.end")
    assert (end.actor_label, end.before) == ("eng", {"shadow": "v3"})
    assert not ShadowDeployment.objects.filter(active=True).exists()
    with pytest.raises(ValidationError, match="already ended"):
        services.end_shadow(actor=engineer, shadow=second)
    assert world.live("staging") == 1  # shadows are never served


def test_the_runtime_config_lists_the_shadow_version(world, client):
    from console.accounts import keys
    from console.api import snapshot

    shadow = services.start_shadow(
        actor=world.users["engineer"], environment=world.envs["staging"], version=world.versions[3]
    )
    secret = keys.create_api_key(actor=None, environment=world.envs["staging"], name="cfg").secret
    body = client.get("/api/v1/config", HTTP_AUTHORIZATION=f"Bearer {secret}").json()
    assert body["prompts"]["answer"]["version"] == 1  # still serving v1
    listed = body["shadows"]["prompts"]["answer"]
    assert listed["version"] == 3 and listed["system"].startswith("Answer v3.")
    services.end_shadow(actor=world.users["engineer"], shadow=shadow)
    snapshot.forget_all()  # (the snapshot may be up to a second old)
    body = client.get("/api/v1/config", HTTP_AUTHORIZATION=f"Bearer {secret}").json()
    assert body["shadows"]["prompts"] == {}
