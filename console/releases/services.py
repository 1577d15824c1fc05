"""Promotion writes: open, edit, approve/reject, re-confirm, apply, withdraw, roll back — each
audited, each refusing what the rules forbid (self-approval, double approval, stale requests,
missing evidence)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from console.accounts.roles import APPROVE, ENGINEER
from console.audit import services as audit
from console.audit.models import AuditEvent
from console.core.permissions import application_perms
from console.notifications.services import notify
from console.registry import services as registry
from console.registry.models import ModelConfigVersion, PromptVersion
from console.releases import evidence as evidence_mod
from console.releases.models import Approval, PromotionRequest

KINDS = {PromptVersion: "prompt", ModelConfigVersion: "model_config"}
PAST = {"approve": "approved", "reject": "rejected"}


class EvidenceMissing(ValidationError):
    def __init__(self, missing: list[str]):
        self.missing = missing
        super().__init__({"evidence": missing})


def kind_of(version) -> str:
    for model, kind in KINDS.items():
        if isinstance(version, model):
            return kind
    return "flag_rules"


def target_head(kind: str, version, environment):
    """The head whose live version the request replaces. For flag rules that is the flag's
    rule set in the target environment (the proposed version may come from another one)."""
    if kind == "flag_rules":
        from console.flags.services import rules_head

        return rules_head(version.head.flag, environment)
    return version.head


def live_version(kind: str, version, environment):
    """What the environment serves now for the thing `version` is a version of."""
    head = target_head(kind, version, environment)
    if kind == "flag_rules":
        return (
            head.versions.filter(number=head.latest_number).first() if head.latest_number else None
        )
    binding = head.bindings.filter(environment=environment).select_related("version").first()
    return binding.version if binding is not None else None


def is_live(kind: str, version, environment) -> bool:
    return _same(kind, live_version(kind, version, environment), version)


def _same(kind: str, live, version) -> bool:
    """Is `live` (the version live now, or None) `version`? Rules versions count as the same
    when their content is: each environment has its own rules head."""
    if live is None:
        return False
    return (
        live.content_hash == version.content_hash if kind == "flag_rules" else live.pk == version.pk
    )


def _url(request: PromotionRequest) -> str:
    return reverse("releases:detail", kwargs={"app": request.application.key, "pk": request.pk})


def _label(version, environment) -> str:
    return f"{version.head.key}@{version.number} → {environment.key}"


def open_request(
    *, actor, environment, version, justification: str, staged: bool = False
) -> PromotionRequest:
    """Ask to make `version` live in a protected environment. With the eval gate required,
    submission is refused until passing evidence exists (EvidenceMissing names what is missing)."""
    kind = kind_of(version)
    head = version.head
    application = environment.application
    errors = {}
    owner_id = head.flag.application_id if kind == "flag_rules" else head.application_id
    if owner_id != application.pk:
        errors["version"] = "belongs to another application"
    if not environment.protected:
        errors["environment"] = f"{environment.name} is not protected: rebind it directly"
    if not justification.strip():
        errors["justification"] = "say why this should go live"
    if staged and kind == "flag_rules":
        errors["staged"] = "staged rollouts apply to prompt and model config versions"
    if errors:
        raise ValidationError(errors)
    live = live_version(kind, version, environment)
    if live is not None and live.pk == version.pk:
        raise ValidationError(
            {"version": f"v{version.number} is already live in {environment.name}"}
        )
    evidence = evidence_mod.gather(kind, environment, version, live)
    if environment.eval_gate_required and not evidence.ok:
        raise EvidenceMissing(evidence.missing)
    with transaction.atomic():
        request = PromotionRequest.objects.create(
            application=application,
            environment=environment,
            kind=kind,
            prompt_version=version if kind == "prompt" else None,
            model_version=version if kind == "model_config" else None,
            flag_version=version if kind == "flag_rules" else None,
            base_live_version=live.number if live else None,
            justification=justification.strip(),
            required_approvals=max(environment.required_approvals, 1),
            eval_gate_required=environment.eval_gate_required,
            evidence=evidence.as_dict(),
            staged=staged,
            requested_by=actor,
        )
        audit.record(
            actor=actor,
            action="promotion.request",
            obj=request,
            object_label=f"#{request.pk} {request.label}",
            application=application,
            environment=environment,
            after={
                "version": version.number,
                "live": request.base_live_version,
                "staged": staged,
                "evidence_ok": evidence.ok,
            },
            reason=request.justification,
        )
        notify(
            application=application,
            kind="promotion.requested",
            title=f"Approval requested: {request.label}",
            body=request.justification,
            url=_url(request),
            roles=("approver", "admin"),
            data={"request": request.pk},
        )
    return request


def _locked(request: PromotionRequest) -> PromotionRequest:
    return (
        PromotionRequest.objects.select_for_update()
        .select_related("environment", "application")
        .get(pk=request.pk)
    )


def staleness(request: PromotionRequest) -> str:
    """Why the request must be re-confirmed, or '' if it is current."""
    version = request.version
    live = live_version(request.kind, version, request.environment)
    live_number = live.number if live else None
    if live_number != request.base_live_version:
        was = f"v{request.base_live_version}" if request.base_live_version else "nothing"
        now = f"v{live_number}" if live_number else "nothing"
        return f"{request.environment.name} changed from {was} to {now} since this was opened"
    if request.eval_gate_required and request.kind != "flag_rules":
        failing = evidence_mod.failing_since(
            request.kind, request.environment, version, request.updated_at
        )
        if failing:
            return "new evidence: " + "; ".join(failing)
    return ""


def approvals_count(request: PromotionRequest) -> int:
    return request.approvals.filter(
        revision=request.revision, decision=Approval.Decision.APPROVE
    ).count()


def decide(
    *, actor, request: PromotionRequest, decision: str, comment: str = ""
) -> PromotionRequest:
    """Approve or reject. Nobody decides on their own request, nobody decides twice on the same
    revision, and a stale request must be re-confirmed first."""
    if decision not in Approval.Decision.values:
        raise ValidationError({"decision": "approve or reject"})
    with transaction.atomic():
        request = _locked(request)
        if APPROVE not in application_perms(actor, request.application):
            raise PermissionDenied("Only approvers can decide on promotions.")
        if request.requested_by_id == actor.pk:
            raise ValidationError("You cannot approve or reject your own request.")
        if not request.is_open:
            raise ValidationError(f"This request is {request.get_status_display().lower()}.")
        if request.approvals.filter(approver=actor, revision=request.revision).exists():
            raise ValidationError("You already decided on this version of the request.")
        if decision == Approval.Decision.REJECT and not comment.strip():
            raise ValidationError({"comment": "say why you reject it"})
        stale = staleness(request)
        if stale and decision == Approval.Decision.APPROVE:
            raise ValidationError(
                f"This request is stale ({stale}); the requester must re-confirm it."
            )
        Approval.objects.create(
            request=request,
            approver=actor,
            decision=decision,
            comment=comment.strip(),
            revision=request.revision,
        )
        before = request.status
        if decision == Approval.Decision.REJECT:
            request.status = PromotionRequest.Status.REJECTED
        elif approvals_count(request) >= request.required_approvals:
            request.status = PromotionRequest.Status.APPROVED
        request.updated_at = timezone.now()
        request.save(update_fields=["status", "updated_at"])
        audit.record(
            actor=actor,
            action=f"promotion.{decision}",
            obj=request,
            object_label=f"#{request.pk} {request.label}",
            application=request.application,
            environment=request.environment,
            before={"status": before},
            after={"status": request.status, "revision": request.revision},
            reason=comment.strip(),
        )
        notify(
            application=request.application,
            kind=f"promotion.{PAST[decision]}",
            title=f"{actor.get_username()} {PAST[decision]} {request.label}",
            body=comment,
            url=_url(request),
            roles=(),
            users=[request.requested_by],
            data={"request": request.pk},
        )
    return request


def edit_request(*, actor, request: PromotionRequest, justification: str) -> PromotionRequest:
    """Change the justification. Any approval given so far is void: approvers approved what
    they read."""
    with transaction.atomic():
        request = _locked(request)
        if request.requested_by_id != actor.pk:
            raise PermissionDenied("Only the requester can edit a request.")
        if not request.is_open:
            raise ValidationError(f"This request is {request.get_status_display().lower()}.")
        if not justification.strip():
            raise ValidationError({"justification": "say why this should go live"})
        voided = approvals_count(request)
        before = {"justification": request.justification, "revision": request.revision}
        request.justification = justification.strip()
        request.revision += 1
        request.status = PromotionRequest.Status.PENDING
        request.updated_at = timezone.now()
        request.save(update_fields=["justification", "revision", "status", "updated_at"])
        audit.record(
            actor=actor,
            action="promotion.edit",
            obj=request,
            object_label=f"#{request.pk} {request.label}",
            application=request.application,
            environment=request.environment,
            before=before,
            after={
                "justification": request.justification,
                "revision": request.revision,
                "approvals_voided": voided,
            },
        )
    return request


def reconfirm(*, actor, request: PromotionRequest) -> PromotionRequest:
    """Take a stale request forward against what is live now (approvals start over)."""
    with transaction.atomic():
        request = _locked(request)
        if request.requested_by_id != actor.pk:
            raise PermissionDenied("Only the requester can re-confirm a request.")
        if not request.is_open:
            raise ValidationError(f"This request is {request.get_status_display().lower()}.")
        version = request.version
        live = live_version(request.kind, version, request.environment)
        evidence = evidence_mod.gather(request.kind, request.environment, version, live)
        if request.eval_gate_required and not evidence.ok:
            raise EvidenceMissing(evidence.missing)
        before = {"base_live_version": request.base_live_version, "revision": request.revision}
        request.base_live_version = live.number if live else None
        request.evidence = evidence.as_dict()
        request.revision += 1
        request.status = PromotionRequest.Status.PENDING
        request.updated_at = timezone.now()
        request.save(
            update_fields=["base_live_version", "evidence", "revision", "status", "updated_at"]
        )
        audit.record(
            actor=actor,
            action="promotion.reconfirm",
            obj=request,
            object_label=f"#{request.pk} {request.label}",
            application=request.application,
            environment=request.environment,
            before=before,
            after={"base_live_version": request.base_live_version, "revision": request.revision},
        )
    return request


def withdraw(*, actor, request: PromotionRequest) -> PromotionRequest:
    with transaction.atomic():
        request = _locked(request)
        if request.requested_by_id != actor.pk:
            raise PermissionDenied("Only the requester can withdraw a request.")
        if not request.is_open:
            raise ValidationError(f"This request is {request.get_status_display().lower()}.")
        request.status = PromotionRequest.Status.WITHDRAWN
        request.save(update_fields=["status"])
        audit.record(
            actor=actor,
            action="promotion.withdraw",
            obj=request,
            object_label=f"#{request.pk} {request.label}",
            application=request.application,
            environment=request.environment,
        )
    return request


def _make_live(actor, kind: str, version, environment, reason: str) -> None:
    """Put `version` live in `environment` — a binding, or the flag's rules there — on behalf
    of a promotion, a finished rollout or a rollback."""
    if kind == "flag_rules":
        from console.flags import services as flags

        target = target_head(kind, version, environment)
        flags.save_rules(
            actor=actor,
            flag=target.flag,
            environment=environment,
            content=version.content,
            base_number=target.latest_number,
            message=reason,
            via_promotion=True,
        )
    else:
        registry.bind_version(
            actor=actor,
            environment=environment,
            version=version,
            reason=reason,
            via_promotion=True,
        )


def apply(*, actor, request: PromotionRequest) -> PromotionRequest:
    """Make an approved request live — the binding, the request's status and the audit event
    change together or not at all. A staged request starts its rollout instead."""
    with transaction.atomic():
        request = _locked(request)
        perms = application_perms(actor, request.application)
        may_apply = APPROVE in perms or (
            request.requested_by_id == actor.pk and ENGINEER in perms  # still an engineer
        )
        if not may_apply:
            raise PermissionDenied("The requester or an approver applies a request.")
        if request.status != PromotionRequest.Status.APPROVED:
            raise ValidationError(
                f"Only approved requests can be applied (this one is {request.status})."
            )
        if approvals_count(request) < request.required_approvals:
            raise ValidationError("Not enough approvals for the current version of the request.")
        stale = staleness(request)
        if stale:
            raise ValidationError(f"This request is stale ({stale}); re-confirm it first.")
        if request.staged:
            from console.releases import rollouts
            from console.releases.models import Rollout

            if Rollout.objects.filter(request=request).exists():
                raise ValidationError("The staged rollout of this request has already started.")
            rollouts.start(actor=actor, request=request)
            return request
        _make_live(
            actor,
            request.kind,
            request.version,
            request.environment,
            reason=f"promotion #{request.pk}",
        )
        request.status = PromotionRequest.Status.APPLIED
        request.applied_at = timezone.now()
        request.applied_by = actor
        request.save(update_fields=["status", "applied_at", "applied_by"])
        audit.record(
            actor=actor,
            action="promotion.apply",
            obj=request,
            object_label=f"#{request.pk} {request.label}",
            application=request.application,
            environment=request.environment,
            before={"live": request.base_live_version},
            after={"live": request.version.number},
        )
        notify(
            application=request.application,
            kind="promotion.applied",
            title=f"Applied {request.label}",
            url=_url(request),
            roles=("approver",),
            users=[request.requested_by],
            data={"request": request.pk},
        )
    return request


def previously_live(kind: str, head, environment) -> list[int]:
    """Version numbers that were live in `environment` at some point, newest first (from the
    tamper-evident audit log)."""
    if kind == "flag_rules":
        return list(head.versions.order_by("-number").values_list("number", flat=True))
    return live_history(kind, environment, head._meta.model_name, head).get(head.pk, [])


def live_history(kind: str, environment, object_type: str, head=None) -> dict[int, list[int]]:
    """Head id → version numbers once live in `environment`, newest first, for every head of a
    prompt or model config kind (or just `head`) — one audit query."""
    action = "prompt.bind" if kind == "prompt" else "model_config.bind"
    events = AuditEvent.objects.filter(
        action=action, environment=environment, object_type=object_type
    )
    if head is not None:
        events = events.filter(object_id=str(head.pk))
    history: dict[int, list[int]] = {}
    for object_id, after in events.order_by("-seq").values_list("object_id", "after"):
        number = (after or {}).get("version")
        numbers = history.setdefault(int(object_id), [])
        if number is not None and number not in numbers:
            numbers.append(number)
    return history


def rollback(*, actor, environment, version, reason: str) -> Any:
    """Return an environment to a version that was live there before: no new approval (it was
    approved then), but a reason, audited."""
    kind = kind_of(version)
    if not reason.strip():
        raise ValidationError({"reason": "say why you roll back (it goes into the audit log)"})
    head = target_head(kind, version, environment)
    if kind == "flag_rules" and version.head_id != head.pk:
        raise ValidationError({"version": "pick a rules version of this environment"})
    if version.number not in previously_live(kind, head, environment):
        never = f"v{version.number} was never live in {environment.name}: request a promotion"
        raise ValidationError({"version": never})
    live = live_version(kind, version, environment)
    if _same(kind, live, version):
        raise ValidationError({"version": f"v{version.number} is already live"})
    with transaction.atomic():
        _make_live(actor, kind, version, environment, reason=f"rollback: {reason}")
        audit.record(
            actor=actor,
            action="promotion.rollback",
            obj=head,
            object_label=_label(version, environment),
            application=environment.application_id,
            environment=environment,
            before={"version": live.number if live else None},
            after={"version": version.number},
            reason=reason.strip(),
        )
    return version


def start_shadow(*, actor, environment, version) -> Any:
    """Mark a version as shadow in an environment: clients call it alongside the live one and
    report both, without serving its answers."""
    from console.releases.models import ShadowDeployment

    kind = kind_of(version)
    if kind == "flag_rules":
        raise ValidationError("Shadow mode is for prompt and model config versions.")
    if version.head.application_id != environment.application_id:
        raise ValidationError("The version and the environment belong to different applications.")
    with transaction.atomic():
        existing = ShadowDeployment.objects.filter(
            environment=environment,
            active=True,
            **(
                {"prompt_version__head": version.head}
                if kind == "prompt"
                else {"model_version__head": version.head}
            ),
        )
        ended = [f"v{s.version.number}" for s in existing]
        existing.update(active=False, ended_at=timezone.now())
        shadow = ShadowDeployment.objects.create(
            environment=environment,
            kind=kind,
            prompt_version=version if kind == "prompt" else None,
            model_version=version if kind == "model_config" else None,
            created_by=actor,
        )
        audit.record(
            actor=actor,
            action="shadow.start",
            obj=version.head,
            object_label=f"{version.head.key}@{version.number} shadow in {environment.key}",
            application=environment.application_id,
            environment=environment,
            before={"shadow": ended} if ended else None,
            after={"shadow": f"v{version.number}"},
        )
    return shadow


def end_shadow(*, actor, shadow) -> Any:
    with transaction.atomic():
        if not shadow.active:
            raise ValidationError("This shadow deployment has already ended.")
        shadow.active = False
        shadow.ended_at = timezone.now()
        shadow.save(update_fields=["active", "ended_at"])
        version = shadow.version
        audit.record(
            actor=actor,
            action="shadow.end",
            obj=version.head,
            object_label=f"{version.head.key}@{version.number} shadow in {shadow.environment.key}",
            application=shadow.environment.application_id,
            environment=shadow.environment,
            before={"shadow": f"v{version.number}"},
        )
    return shadow
