"""Promotion requests: evidence gate, approvals (self, double, required count), staleness,
edits voiding approvals, withdraw, and the notifications each step sends."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from console.audit.models import AuditEvent
from console.evals import services as evals
from console.evals.models import EvalRun
from console.notifications.models import Notification
from console.registry import services as registry
from console.registry.kinds import MODEL_CONFIG
from console.releases import policies, services
from console.releases.models import Approval, PromotionRequest
from tests.evals.helpers import model_content

pytestmark = pytest.mark.django_db


def open_(world, number: int, who: str = "engineer", **kwargs) -> PromotionRequest:
    return services.open_request(
        actor=world.users[who],
        environment=world.prod,
        version=world.versions[number],
        justification=kwargs.pop("justification", f"v{number} is better"),
        **kwargs,
    )


def decide(world, request, who: str, decision: str = "approve", comment: str = ""):
    return services.decide(
        actor=world.users[who], request=request, decision=decision, comment=comment
    )


def refused(call, message: str | None = None, exc=ValidationError):
    with pytest.raises(exc) as caught:
        call()
    if message is not None:
        text = " ".join(caught.value.messages) if hasattr(caught.value, "messages") else ""
        assert message in (text or str(caught.value)), (text, str(caught.value))
    return caught.value


def actions(request) -> list[str]:
    return list(
        AuditEvent.objects.filter(object_type="promotionrequest", object_id=str(request.pk))
        .order_by("seq")
        .values_list("action", flat=True)
    )


# evidence gate -----------------------------------------------------------------------------


def test_gate_required_without_evidence_is_refused_naming_what_is_missing(world):
    error = refused(lambda: open_(world, 2), exc=services.EvidenceMissing)
    assert error.missing == ["no completed eval of answer@2 × main@1 on golden@1: launch one"]
    assert not PromotionRequest.objects.exists()
    assert not AuditEvent.objects.filter(action="promotion.request").exists()

    # A failing run is not evidence either.
    failed = world.passing_run(2, verdict=EvalRun.Verdict.FAILED)
    error = refused(lambda: open_(world, 2), exc=services.EvidenceMissing)
    assert error.missing == [
        f"run #{failed.pk} on golden@1 does not meet the policy "
        "(failed: pass_rate 0.34 (needs >= 0.8, off by 0.46))"
    ]
    # A passing run of *another* version does not count for v2.
    world.passing_run(3)
    refused(lambda: open_(world, 2), exc=services.EvidenceMissing)

    passed = world.passing_run(2)
    request = open_(world, 2)
    assert request.status == PromotionRequest.Status.PENDING
    assert request.eval_gate_required and request.evidence["ok"] is True
    assert request.evidence["datasets"][0]["run"] == passed.pk
    assert request.evidence["datasets"][0]["dataset"] == "golden@1"
    assert request.base_live_version == 1 and request.required_approvals == 1


def test_a_gate_with_no_golden_set_named_says_so(world):
    # The policy cannot be saved that way; a policy that predates the rule still says so.
    with pytest.raises(ValidationError, match="needs at least one golden set"):
        policies.clean(world.prod, {**policies.current(world.prod)[0], "datasets": []})
    world.dataset.key = "renamed"
    world.dataset.save()
    error = refused(lambda: open_(world, 2), exc=services.EvidenceMissing)
    assert error.missing == [
        "prod requires an eval gate but its release policy names no golden set"
    ]


def test_evidence_from_a_real_eval_run_against_the_simulator(world, simulator_url):
    engineer = world.users["engineer"]
    model = registry.create_head(
        actor=engineer, kind=MODEL_CONFIG, application=world.application, key="sim",
        name="Simulated", content=model_content(simulator_url),
    ).version  # fmt: skip
    from console.ops.management.commands.seed_demo import ANSWER_V3

    registry.save_head_version(actor=engineer, head=world.prompt, content=ANSWER_V3, base_number=3)
    v4 = world.prompt.versions.get(number=4)
    world.versions[4] = v4
    refused(lambda: open_(world, 4), exc=services.EvidenceMissing)
    run = evals.launch_run(
        actor=engineer,
        application=world.application,
        dataset_version=world.dataset_version,
        prompt_version=v4,
        model_version=model,
        scorers=["contains_all", "recall_at_5"],
        gates=[{"metric": "pass_rate", "op": ">=", "threshold": 0.5}],
    )
    assert evals.execute_run(run.pk).status == EvalRun.Status.COMPLETED
    run.refresh_from_db()
    assert run.verdict == EvalRun.Verdict.PASSED, run.verdict_detail

    # Evidence on the simulated model says nothing about what prod runs (main@1) ...
    refused(lambda: open_(world, 4), exc=services.EvidenceMissing)
    # ... so the request carries the pair, and apply makes both live together.
    request = open_(world, 4, paired=model)
    assert request.bundle_label == "answer@4 × sim@1"
    entry = request.evidence["datasets"][0]
    assert (entry["run"], entry["verdict"]) == (run.pk, "passed")
    assert entry["gates"][0]["metric"] == "pass_rate" and entry["gates"][0]["passed"] is True
    # What prod serves now (answer@1 × main@1) has no run on golden@1 in this world's history
    # but the fixture's: the fixture's baseline exists, so it is compared, not invented.
    assert entry["comparison"]["baseline"] == "answer@1 × main@1"


def test_new_failing_evidence_makes_an_open_request_stale(world):
    world.passing_run(2)
    request = open_(world, 2)
    assert services.staleness(request) == ""
    world.passing_run(2, verdict=EvalRun.Verdict.FAILED)  # newer, and failing
    assert services.staleness(request).startswith("new evidence: run #")
    refused(lambda: decide(world, request, "approver"), "stale")
    assert not Approval.objects.exists()


# approvals ---------------------------------------------------------------------------------


def test_the_requester_can_never_approve_their_own_request(world):
    world.passing_run(2)
    request = open_(world, 2, who="admin")  # admins hold the approve permission too
    refused(
        lambda: decide(world, request, "admin"), "You cannot approve or reject your own request."
    )
    refused(lambda: decide(world, request, "admin", "reject", "no"), "your own request")
    request.refresh_from_db()
    assert request.status == PromotionRequest.Status.PENDING
    assert not Approval.objects.exists()
    assert actions(request) == ["promotion.request"]


def test_only_approvers_decide(world):
    world.passing_run(2)
    request = open_(world, 2)
    for who in ("engineer2", "viewer", "curator"):
        refused(lambda who=who: decide(world, request, who), "Only approvers", PermissionDenied)
    assert not Approval.objects.exists()


def test_double_approval_is_refused_and_the_required_count_is_reached_only_with_enough(world):
    registry.update_environment_policy(
        actor=world.users["admin"],
        environment=world.prod,
        protected=True,
        required_approvals=2,
        eval_gate_required=True,
    )
    world.prod.refresh_from_db()
    world.passing_run(2)
    request = open_(world, 2)
    assert request.required_approvals == 2

    request = decide(world, request, "approver", comment="fine by me")
    assert request.status == PromotionRequest.Status.PENDING
    assert services.approvals_count(request) == 1
    refused(
        lambda: services.apply(actor=world.users["engineer"], request=request),
        "Only approved requests can be applied",
    )
    refused(
        lambda: decide(world, request, "approver"),
        "You already decided on this version of the request.",
    )
    assert Approval.objects.filter(request=request).count() == 1

    request = decide(world, request, "approver2")
    assert request.status == PromotionRequest.Status.APPROVED
    assert services.approvals_count(request) == 2
    assert actions(request) == ["promotion.request", "promotion.approve", "promotion.approve"]
    approve = AuditEvent.objects.filter(action="promotion.approve").order_by("seq")
    assert [(e.actor_label, e.after["status"]) for e in approve] == [
        ("appr", "pending"),
        ("appr2", "approved"),
    ]
    assert approve[0].reason == "fine by me"


def test_reject_needs_a_comment_and_closes_the_request(world):
    world.passing_run(2)
    request = open_(world, 2)
    refused(lambda: decide(world, request, "approver", "reject", "  "), "say why you reject it")
    request = decide(world, request, "approver", "reject", "the golden set is too small")
    assert request.status == PromotionRequest.Status.REJECTED
    assert Approval.objects.get().decision == Approval.Decision.REJECT
    refused(lambda: decide(world, request, "approver2"), "This request is rejected.")
    refused(lambda: services.apply(actor=world.users["engineer"], request=request), "rejected")
    assert world.live() == 1
    reject = AuditEvent.objects.get(action="promotion.reject")
    assert (reject.actor_label, reject.reason) == ("appr", "the golden set is too small")
    note = Notification.objects.get(user=world.users["engineer"])
    assert note.body == "the golden set is too small"


def test_a_rejection_notifies_the_requester_as_rejected(world):
    world.passing_run(2)
    request = open_(world, 2)
    decide(world, request, "approver", "reject", "the golden set is too small")
    note = Notification.objects.get(user=world.users["engineer"])
    assert (note.kind, note.title) == ("promotion.rejected", "appr rejected answer@2 → prod")


def test_editing_after_an_approval_voids_it(world):
    world.passing_run(2)
    request = open_(world, 2)
    request = decide(world, request, "approver")
    assert request.status == PromotionRequest.Status.APPROVED
    refused(
        lambda: services.edit_request(
            actor=world.users["engineer2"], request=request, justification="mine now"
        ),
        "Only the requester",
        PermissionDenied,
    )
    request = services.edit_request(
        actor=world.users["engineer"], request=request, justification="v2, and also shorter"
    )
    assert (request.status, request.revision) == (PromotionRequest.Status.PENDING, 2)
    assert services.approvals_count(request) == 0
    refused(lambda: services.apply(actor=world.users["engineer"], request=request), "approved")
    edit = AuditEvent.objects.get(action="promotion.edit")
    assert edit.after["approvals_voided"] == 1 and edit.before["revision"] == 1
    # The same approver may approve the new revision (they approve what they read).
    request = decide(world, request, "approver")
    assert request.status == PromotionRequest.Status.APPROVED
    assert sorted(Approval.objects.values_list("revision", flat=True)) == [1, 2]


def test_one_open_request_per_thing_and_environment(world):
    world.passing_run(2)
    world.passing_run(3)
    first = open_(world, 2)
    error = refused(lambda: open_(world, 3, who="engineer2"), f"request #{first.pk}")
    assert f"/releases/{first.pk}/" in " ".join(error.messages)  # a link to the open one
    assert PromotionRequest.objects.count() == 1
    # The database keeps the rule even when two submissions race past the check.
    with pytest.raises(IntegrityError), transaction.atomic():
        PromotionRequest.objects.create(
            application=world.application,
            environment=world.prod,
            kind="prompt",
            prompt_version=world.versions[3],
            model_version=world.model.versions.get(number=1),
            subject=first.subject,
            justification="racing",
            requested_by=world.users["engineer2"],
        )
    services.withdraw(actor=world.users["engineer"], request=first)
    second = open_(world, 3, who="engineer2")  # once withdrawn, the way is free
    assert second.status == PromotionRequest.Status.PENDING


def test_a_rollback_also_makes_open_requests_stale(world):
    world.passing_run(2)
    world.passing_run(3)
    request = decide(world, open_(world, 2), "approver")
    services.apply(actor=world.users["engineer"], request=request)
    pending = open_(world, 3)
    assert pending.base_live_version == 2
    services.rollback(
        actor=world.users["engineer"],
        environment=world.prod,
        version=world.versions[1],
        reason="v2 misbehaves",
    )
    assert services.staleness(pending) == "prod changed from v2 to v1 since this was opened"
    refused(lambda: decide(world, pending, "approver"), "stale")


def test_withdraw_is_for_the_requester_and_closes_the_request(world):
    world.passing_run(2)
    request = open_(world, 2)
    refused(
        lambda: services.withdraw(actor=world.users["approver"], request=request),
        "Only the requester",
        PermissionDenied,
    )
    request = services.withdraw(actor=world.users["engineer"], request=request)
    assert request.status == PromotionRequest.Status.WITHDRAWN
    refused(lambda: decide(world, request, "approver"), "withdrawn")
    refused(lambda: services.withdraw(actor=world.users["engineer"], request=request), "withdrawn")
    assert actions(request) == ["promotion.request", "promotion.withdraw"]


def test_opening_validates_the_target(world):
    world.passing_run(2)
    refused(lambda: open_(world, 1), "answer@1 × main@1 is already live in prod")
    refused(lambda: open_(world, 2, justification="  "), "say why this should go live")
    refused(
        lambda: services.open_request(
            actor=world.users["engineer"],
            environment=world.envs["staging"],
            version=world.versions[2],
            justification="x",
        ),
        "staging is not protected: rebind it directly",
    )


def test_each_step_tells_the_right_people(world, django_capture_on_commit_callbacks):
    from django.core import mail

    world.passing_run(2)
    with django_capture_on_commit_callbacks(execute=True):
        request = open_(world, 2)
    requested = Notification.objects.filter(kind="promotion.requested")
    assert sorted(requested.values_list("user__username", flat=True)) == ["adm", "appr", "appr2"]
    assert requested.first().url == f"/apps/{world.application.key}/releases/{request.pk}/"
    assert sorted(mail.outbox[0].to) == [
        "admin@example.com",
        "approver2@example.com",
        "approver@example.com",
    ]
    request = decide(world, request, "approver")
    assert list(
        Notification.objects.filter(kind="promotion.approved").values_list(
            "user__username", flat=True
        )
    ) == ["eng"]
    services.apply(actor=world.users["engineer"], request=request)
    applied = Notification.objects.filter(kind="promotion.applied")
    assert sorted(applied.values_list("user__username", flat=True)) == ["appr", "appr2", "eng"]
