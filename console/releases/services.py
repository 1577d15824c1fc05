"""Promotion writes: open, edit, approve/reject, re-confirm, apply, withdraw, roll back — each
audited, each refusing what the rules forbid (self-approval, double approval, stale requests,
missing evidence)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from console.accounts.roles import ADMIN, APPROVE, ENGINEER
from console.audit import services as audit
from console.audit.models import AuditEvent
from console.core.diff import diff_contents
from console.core.permissions import application_perms
from console.core.versioning import version_author
from console.notifications.services import notify
from console.registry import services as registry
from console.registry.models import ModelConfigVersion, PromptVersion
from console.releases import checklists, policies
from console.releases import evidence as evidence_mod
from console.releases.evidence import Bundle
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


def live_bundle(environment, bundle: Bundle) -> Bundle:
    """What `environment` serves now in place of `bundle`: the live versions of its heads, or,
    for a head not live there (a switch to another model config), the one that is."""
    from console.registry.models import ModelConfigBinding, PromptBinding

    def live(kind: str, version, binding_model):
        found = live_version(kind, version, environment) if version is not None else None
        if found is None:
            bindings = list(
                binding_model.objects.filter(environment=environment).select_related(
                    "version__head"
                )[:2]
            )
            found = bindings[0].version if len(bindings) == 1 else None
        return found

    return Bundle(
        prompt=live("prompt", bundle.prompt, PromptBinding),
        model=live("model_config", bundle.model, ModelConfigBinding),
    )


def _only_bound(binding_model, environment, label: str, version=None):
    """The other half live in `environment`: the only one bound there, or — when several are —
    the one `version` was evaluated with (its newest completed run)."""
    from console.evals.models import EvalRun

    bindings = list(binding_model.objects.filter(environment=environment).select_related("version"))
    if len(bindings) == 1:
        return bindings[0].version
    if not bindings:
        raise ValidationError(
            {"paired": f"nothing is live in {environment.name} to pair with: choose a {label}"}
        )
    if version is not None:
        live = {b.version_id: b.version for b in bindings}
        other = "model_version_id" if label == "model config" else "prompt_version_id"
        mine = "prompt_version" if label == "model config" else "model_version"
        evaluated = (
            EvalRun.objects.filter(
                **{mine: version, f"{other}__in": list(live)}, status=EvalRun.Status.COMPLETED
            )
            .order_by("-finished_at")
            .values_list(other, flat=True)
            .first()
        )
        if evaluated is not None:
            return live[evaluated]
    raise ValidationError(
        {"paired": f"{environment.name} serves several {label}s: choose the one this runs with"}
    )


def bundle_for(kind: str, version, environment, paired=None) -> Bundle:
    """The prompt × model versions that will be live together after the request applies: the
    version itself and `paired` (by default the other half live in `environment` now)."""
    from console.registry.models import ModelConfigBinding, PromptBinding

    if kind == "prompt":
        if paired is not None and not isinstance(paired, ModelConfigVersion):
            raise ValidationError({"paired": "pair a prompt with a model config version"})
        model = paired or _only_bound(ModelConfigBinding, environment, "model config", version)
        bundle = Bundle(prompt=version, model=model)
    elif kind == "model_config":
        if paired is not None and not isinstance(paired, PromptVersion):
            raise ValidationError({"paired": "pair a model config with a prompt version"})
        prompt = paired or _only_bound(PromptBinding, environment, "prompt", version)
        bundle = Bundle(prompt=prompt, model=version)
    else:
        return Bundle(prompt=None, model=None)
    for half in (bundle.prompt, bundle.model):
        if half.head.application_id != environment.application_id:
            raise ValidationError({"paired": "belongs to another application"})
    return bundle


def request_bundle(request: PromotionRequest) -> Bundle:
    return Bundle(prompt=request.prompt_version, model=request.model_version)


def subject_of(kind: str, version, shadow: bool = False) -> str:
    if kind == "flag_rules":
        return f"flag:{version.head.flag_id}"
    return f"{'shadow:' if shadow else ''}{kind}:{version.head_id}"


def _open_one(environment, subject: str) -> PromotionRequest | None:
    return PromotionRequest.objects.filter(
        environment=environment, subject=subject, status__in=PromotionRequest.OPEN
    ).first()


def _refuse_second(existing: PromotionRequest) -> ValidationError:
    return ValidationError(
        {
            "version": f"request #{existing.pk} ({existing.label}) is still open for this in "
            f"{existing.environment.name}: follow it at {_url(existing)}, or withdraw it first"
        }
    )


def _create(fields: dict, subject: str, environment) -> PromotionRequest:
    """Create the request; the database keeps it to one open request per thing and
    environment even when two people submit at once."""
    existing = _open_one(environment, subject)
    if existing is not None:
        raise _refuse_second(existing)
    try:
        with transaction.atomic():
            return PromotionRequest.objects.create(subject=subject, **fields)
    except IntegrityError:
        existing = _open_one(environment, subject)
        if existing is None:
            raise
        raise _refuse_second(existing) from None


def open_request(
    *,
    actor,
    environment,
    version,
    justification: str,
    staged: bool = False,
    shadow: bool = False,
    paired=None,
    online: dict | None = None,
) -> PromotionRequest:
    """Ask to make `version` live (or run it as a shadow) in a protected environment. Prompts
    and model configs travel as a bundle with the other half they will run with; with the eval
    gate required, submission is refused until evidence meeting the policy exists
    (EvidenceMissing names what is missing). A missing baseline is launched here and the
    request waits for it. `online` is evidence from production (an experiment report or a
    shadow comparison, {"kind": ..., ...}): kept with the request for approvers to read."""
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
    if shadow and (kind == "flag_rules" or staged):
        errors["shadow"] = "a shadow is a prompt or model config version, not staged"
    if errors:
        raise ValidationError(errors)
    live = live_version(kind, version, environment)
    if kind == "flag_rules":
        if _same(kind, live, version):
            raise ValidationError(
                {"version": f"these rules are already live in {environment.name}"}
            )
        evidence = evidence_mod.flag_rules_evidence(environment)
        bundle = Bundle(prompt=None, model=None)
    else:
        bundle = bundle_for(kind, version, environment, paired)
        current = live_bundle(environment, bundle)
        if not shadow and _bundle_pks(current) == _bundle_pks(bundle):
            raise ValidationError(
                {"version": f"{bundle.label} is already live in {environment.name}"}
            )
        evidence = evidence_mod.gather(environment, bundle, current)
        if environment.eval_gate_required and not evidence.ok:
            raise EvidenceMissing(evidence.missing)
    subject = subject_of(kind, version, shadow)
    with transaction.atomic():
        request = _create(
            {
                "application": application,
                "environment": environment,
                "kind": kind,
                "prompt_version": bundle.prompt,
                "model_version": bundle.model,
                "flag_version": version if kind == "flag_rules" else None,
                "base_live_version": live.number if live else None,
                "justification": justification.strip(),
                "required_approvals": max(environment.required_approvals, 1),
                "eval_gate_required": environment.eval_gate_required,
                "evidence": {
                    **evidence.as_dict(),
                    "base_live": _live_numbers(environment, bundle),
                    **({"online": online} if online else {}),
                },
                "checklist": {
                    "items": policies.current(environment)[0].get("checklist", []),
                    "ticks": {},
                },
                "policy_version": evidence.policy_version,
                "staged": staged,
                "shadow": shadow,
                "requested_by": actor,
            },
            subject,
            environment,
        )
        _record(
            actor=actor,
            action="promotion.request",
            request=request,
            after={
                "version": version.number,
                "bundle": bundle.label or None,
                "live": request.base_live_version,
                "staged": staged,
                "shadow": shadow,
                "policy_version": evidence.policy_version,
                "evidence_ok": evidence.ok,
            },
            reason=request.justification,
        )
        _notify_requested(request)
        _launch_baselines(evidence, environment)
    return request


def open_request_for(environment, version) -> PromotionRequest | None:
    """The open request (pending or approved) that would make `version` live there, if any."""
    existing = _open_one(environment, subject_of(kind_of(version), version))
    if existing is not None and existing.version == version and not existing.shadow:
        return existing
    return None


def _reading(online: dict | None) -> dict | None:
    """What an audit event keeps of a production reading: its kind, time and verdict."""
    if not online:
        return None
    report = online.get("report") or online
    return {
        "kind": online.get("kind"),
        "as_of": report.get("as_of"),
        "summary": (report.get("conclusion") or {}).get("summary") or report.get("summary"),
    }


def add_online_evidence(*, actor, request: PromotionRequest, online: dict) -> PromotionRequest:
    """Attach production evidence (an experiment report, a shadow comparison) to an open
    request for the same version. Earlier readings are kept (`online_history`). Approvers
    approved what they read: if anyone has approved, the request goes back to pending under a
    new revision (approvals name theirs) and the approvers are told, as after an edit."""
    with transaction.atomic():
        request = _locked(request)
        if not request.is_open:
            raise ValidationError(f"#{request.pk} is {request.status}: open a new request")
        evidence = dict(request.evidence or {})
        previous = evidence.get("online")
        if previous:
            evidence["online_history"] = [*evidence.get("online_history", []), previous][-10:]
        evidence["online"] = online
        reset = request.status == PromotionRequest.Status.APPROVED or approvals_count(request) > 0
        request.evidence = evidence
        request.updated_at = timezone.now()
        fields = ["evidence", "updated_at"]
        if reset:
            request.revision += 1
            request.status = PromotionRequest.Status.PENDING
            fields += ["revision", "status"]
        request.save(update_fields=fields)
        _record(
            actor=actor,
            action="promotion.evidence",
            request=request,
            before={"online": _reading(previous)},
            after={"online": _reading(online), "approvals_reset": reset},
            reason=f"{online.get('kind', 'production')} evidence added",
        )
        if reset:
            _notify_requested(request)
    return request


def _notify_requested(request: PromotionRequest) -> None:
    notify(
        application=request.application,
        kind="promotion.requested",
        title=f"Approval requested: {request.label}",
        body=request.justification,
        url=_url(request),
        roles=("admin",) if request.kind == PromotionRequest.Kind.POLICY else ("approver", "admin"),
        data={"request": request.pk},
    )


def _bundle_pks(bundle: Bundle) -> tuple:
    return (getattr(bundle.prompt, "pk", None), getattr(bundle.model, "pk", None))


def _live_numbers(environment, bundle: Bundle) -> dict:
    if not bundle.complete:
        return {}
    live = live_bundle(environment, bundle)
    return {
        "prompt": live.prompt.number if live.prompt else None,
        "model": live.model.number if live.model else None,
    }


def _launch_baselines(evidence, environment) -> None:
    """Launch the runs of what is live that non-inferiority needs, with the scorers and judge
    of the candidate's run, under the policy's gates — as the system, after commit."""
    if not evidence.baselines_needed:
        return
    from console.evals import services as evals
    from console.evals.models import EvalRun

    policy, _ = policies.current(environment)
    system = version_author(None)
    for live, dataset_version in evidence.baselines_needed:
        candidate_run = EvalRun.objects.filter(pk__in=[d.get("run") for d in evidence.datasets])
        candidate = candidate_run.filter(dataset_version=dataset_version).first()
        try:
            evals.launch_run(
                actor=system,
                application=environment.application,
                dataset_version=dataset_version,
                prompt_version=live.prompt,
                model_version=live.model,
                judge_model_version=candidate.judge_model_version if candidate else None,
                scorers=candidate.scorers if candidate else None,
                scorer_options=candidate.scorer_options if candidate else None,
                gates=policy.get("gates", []),
                max_error_rate=policy["max_error_rate"],
            )
        except (evals.DuplicateRun, ValidationError):
            continue  # already running, or not launchable: the request page says it waits


def open_policy_request(
    *,
    actor,
    environment,
    proposal: dict,
    base_number: int,
    justification: str,
    loosenings: list[str],
) -> PromotionRequest:
    """A change that loosens a protected environment's policy waits for another admin."""
    with transaction.atomic():
        request = _create(
            {
                "application": environment.application,
                "environment": environment,
                "kind": PromotionRequest.Kind.POLICY,
                "proposal": proposal,
                "policy_version": base_number,
                "justification": justification.strip() or "; ".join(loosenings),
                "required_approvals": 1,
                "eval_gate_required": False,
                "evidence": {
                    **evidence_mod.no_eval_evidence(
                        environment, "a policy change carries no eval evidence"
                    ).as_dict(),
                    "loosenings": loosenings,
                },
                "requested_by": actor,
            },
            "policy",
            environment,
        )
        _record(
            actor=actor,
            action="promotion.request",
            request=request,
            before={"policy_version": base_number},
            after={"proposal": proposal, "loosenings": loosenings},
            reason=request.justification,
        )
        _notify_requested(request)
    return request


def _record(*, actor, action: str, request: PromotionRequest, **fields) -> None:
    """The audit event of a step in a request's life, filed under the request."""
    audit.record(
        actor=actor,
        action=action,
        obj=request,
        object_label=f"#{request.pk} {request.label}",
        application=request.application_id,
        environment=request.environment,
        **fields,
    )


def _locked(request: PromotionRequest) -> PromotionRequest:
    return (
        PromotionRequest.objects.select_for_update()
        .select_related("environment", "application")
        .get(pk=request.pk)
    )


def tick_checklist(
    *, actor, request: PromotionRequest, key: str, done: bool = True, note: str = ""
) -> PromotionRequest:
    """The requester ticks (or unticks) a readiness item, with a note or a link saying what
    shows it is done. Items Airlock verifies itself cannot be ticked by hand."""
    note = (note or "").strip()
    with transaction.atomic():
        request = _locked(request)
        if request.requested_by_id != getattr(actor, "pk", None):
            raise PermissionDenied("Only the requester ticks the readiness checklist.")
        if request.status not in PromotionRequest.OPEN:
            raise ValidationError(
                {"item": f"the request is {request.get_status_display().lower()}: nothing to tick"}
            )
        item = next((i for i in request.checklist.get("items", []) if i["key"] == key), None)
        ticks = dict(request.checklist.get("ticks") or {})
        if item is None:
            raise ValidationError({"item": "no such item on this request's checklist"})
        if item.get("check"):
            raise ValidationError({"item": "Airlock verifies this item itself, with its proof"})
        if done and not note:
            raise ValidationError({"note": "add a note or a link: what shows it is done"})
        if len(note) > checklists.MAX_NOTE:
            raise ValidationError(
                {"note": f"keep the note under {checklists.MAX_NOTE} characters ({len(note)})"}
            )
        if not done and key not in ticks:
            raise ValidationError({"item": "this item is not ticked"})
        before = ticks.get(key)
        if done:
            ticks[key] = {
                "by": actor.get_username(),
                "at": timezone.now().isoformat(timespec="seconds"),
                "note": note,
            }
        else:
            del ticks[key]
        request.checklist = {**request.checklist, "ticks": ticks}
        request.save(update_fields=["checklist"])
        _record(
            actor=actor,
            action="promotion.checklist.tick" if done else "promotion.checklist.untick",
            request=request,
            before={"item": item["text"], "tick": before},
            after={"item": item["text"], "tick": ticks.get(key)},
        )
    return request


def staleness(request: PromotionRequest) -> str:
    """Why the request must be re-confirmed, or '' if it is current."""
    environment = request.environment
    if request.kind == PromotionRequest.Kind.POLICY:
        _, number = policies.current(environment)
        if number != request.policy_version:
            return (
                f"the policy of {environment.name} changed from v{request.policy_version} to "
                f"v{number} since this was proposed"
            )
        return ""
    version = request.version
    live = live_version(request.kind, version, environment)
    live_number = live.number if live else None
    if live_number != request.base_live_version:
        was = f"v{request.base_live_version}" if request.base_live_version else "nothing"
        now = f"v{live_number}" if live_number else "nothing"
        return f"{environment.name} changed from {was} to {now} since this was opened"
    bundle = request_bundle(request)
    base_live = (request.evidence or {}).get("base_live")
    if (
        bundle.complete
        and base_live is not None
        and _live_numbers(environment, bundle) != base_live
    ):
        return f"what {environment.name} serves alongside it changed since this was opened"
    if request.eval_gate_required and bundle.complete:
        failing = evidence_mod.failing_since(environment, bundle, request.updated_at)
        if failing:
            return "new evidence: " + "; ".join(failing)
    return ""


def fresh_evidence(request: PromotionRequest):
    """The evidence for the request judged now, under the policy in force now."""
    environment = request.environment
    bundle = request_bundle(request)
    if not bundle.complete:
        return None
    return evidence_mod.gather(environment, bundle, live_bundle(environment, bundle))


def _evidence_blocks(request: PromotionRequest) -> str:
    """Why the evidence does not let the request through now (policy tightened, a newer run
    failed, the baseline is still running), or ''."""
    evidence = fresh_evidence(request)
    if evidence is None or not request.environment.eval_gate_required:
        return ""
    problems = evidence.missing + evidence.waiting
    if problems:
        _, number = policies.current(request.environment)
        return f"under the policy in force (v{number}): " + "; ".join(problems)
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
        perms = application_perms(actor, request.application)
        if request.kind == PromotionRequest.Kind.POLICY and ADMIN not in perms:
            raise PermissionDenied("Only another admin can decide on a release policy change.")
        if APPROVE not in perms:
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
        blocked = _evidence_blocks(request) if decision == Approval.Decision.APPROVE else ""
        if blocked:
            raise ValidationError(f"The evidence does not meet the policy yet: {blocked}.")
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
        _record(
            actor=actor,
            action=f"promotion.{decision}",
            request=request,
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
        _record(
            actor=actor,
            action="promotion.edit",
            request=request,
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
        if request.kind == PromotionRequest.Kind.POLICY:
            raise ValidationError("The policy changed: withdraw this and propose the change again.")
        version = request.version
        environment = request.environment
        live = live_version(request.kind, version, environment)
        evidence = fresh_evidence(request)
        if evidence is None:
            evidence = evidence_mod.flag_rules_evidence(environment)
        if request.eval_gate_required and not evidence.ok:
            raise EvidenceMissing(evidence.missing)
        _launch_baselines(evidence, environment)
        before = {"base_live_version": request.base_live_version, "revision": request.revision}
        request.base_live_version = live.number if live else None
        request.policy_version = evidence.policy_version
        online = (request.evidence or {}).get("online")
        request.evidence = {
            **evidence.as_dict(),
            "base_live": _live_numbers(environment, request_bundle(request)),
            **({"online": online} if online else {}),
        }
        request.revision += 1
        request.status = PromotionRequest.Status.PENDING
        request.updated_at = timezone.now()
        request.save(
            update_fields=[
                "base_live_version",
                "policy_version",
                "evidence",
                "revision",
                "status",
                "updated_at",
            ]
        )
        _record(
            actor=actor,
            action="promotion.reconfirm",
            request=request,
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
        _record(
            actor=actor,
            action="promotion.withdraw",
            request=request,
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
    """Make an approved request live — the bindings, the request's status and the audit event
    change together or not at all. The evidence is judged again under the policy in force now:
    a tightened policy or a newer failing run blocks apply with the reason. A staged request
    starts its rollout instead; a shadow request starts the shadow."""
    with transaction.atomic():
        request = _locked(request)
        perms = application_perms(actor, request.application)
        if request.kind == PromotionRequest.Kind.POLICY:
            may_apply = ADMIN in perms
        else:
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
        blocked = _evidence_blocks(request)
        if blocked:
            raise ValidationError(f"The evidence no longer meets the policy: {blocked}.")
        if undone := checklists.blocking(request):
            raise ValidationError(f"The readiness checklist is not done: {'; '.join(undone)}.")
        environment = request.environment
        reason = f"promotion #{request.pk}"
        if request.kind == PromotionRequest.Kind.POLICY:
            old, number = policies.current(environment)
            policies.apply_content(
                actor=actor,
                environment=environment,
                content=request.proposal,
                message=reason,
                number=number,
            )
            change = _change(old, request.proposal, "policy")
        else:
            change = _applied_change(request)
            if request.staged:
                from console.releases import rollouts
                from console.releases.models import Rollout

                if Rollout.objects.filter(request=request).exists():
                    raise ValidationError("The staged rollout of this request has already started.")
                rollouts.start(actor=actor, request=request)
                request.applied_change = change
                request.save(update_fields=["applied_change"])
                return request
            if request.shadow:
                start_shadow(
                    actor=actor, environment=environment, version=request.version,
                    via_promotion=True,
                )  # fmt: skip
            elif request.kind == PromotionRequest.Kind.FLAG_RULES:
                _make_live(actor, request.kind, request.version, environment, reason=reason)
            else:
                # The bundle goes live together: the paired half too, if it is not live yet.
                for kind, version in (
                    ("model_config", request.model_version),
                    ("prompt", request.prompt_version),
                ):
                    _make_live(actor, kind, version, environment, reason=reason)
        request.status = PromotionRequest.Status.APPLIED
        request.applied_at = timezone.now()
        request.applied_by = actor
        request.applied_change = change
        request.save(update_fields=["status", "applied_at", "applied_by", "applied_change"])
        _record(
            actor=actor,
            action="promotion.apply",
            request=request,
            before={"live": request.base_live_version},
            after={
                "live": request.version.number if request.version else None,
                "bundle": request.bundle_label or None,
                "shadow": request.shadow,
                "policy_version": request.policy_version,
            },
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


def _change(before: dict | None, after: dict | None, what: str) -> dict:
    """From → to as it stood at apply, kept on the request like a merged pull request."""
    return {
        "what": what,
        "fields": [
            {"path": d.path, "status": d.status, "before": d.before, "after": d.after}
            for d in diff_contents(before or {}, after or {})
            if d.changed
        ],
    }


def _applied_change(request: PromotionRequest) -> dict:
    environment = request.environment
    if request.kind == PromotionRequest.Kind.FLAG_RULES:
        live = live_version(request.kind, request.version, environment)
        change = _change(live.content if live else None, request.version.content, "flag rules")
        change["from"] = f"rules v{live.number}" if live else "nothing"
        change["to"] = f"rules of {request.version.head.environment.key} v{request.version.number}"
        return change
    bundle = request_bundle(request)
    live = live_bundle(environment, bundle)
    parts = []
    for name, old, new in (
        ("prompt", live.prompt, bundle.prompt),
        ("model", live.model, bundle.model),
    ):
        if old is None or old.pk != new.pk:
            part = _change(old.content if old else None, new.content, name)
            part["from"] = f"{old.head.key}@{old.number}" if old else "nothing"
            part["to"] = f"{new.head.key}@{new.number}"
            parts.append(part)
    return {
        "what": "shadow" if request.shadow else "bundle",
        "from": live.label or "nothing",
        "to": bundle.label,
        "parts": parts,
    }


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
    if kind == "flag_rules" and version.content.get("unreleased"):
        raise ValidationError(
            {"version": f"rules v{version.number} never served this flag in {environment.name}"}
        )
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


def start_shadow(*, actor, environment, version, via_promotion: bool = False) -> Any:
    """Mark a version as shadow in an environment: clients call it alongside the live one and
    report both, without serving its answers. Shadows run on live traffic, so a protected
    environment starts one only through an approved request (`via_promotion=True`)."""
    from console.registry.services import PromotionRequired
    from console.releases.models import ShadowDeployment

    if environment.protected and not via_promotion:
        raise PromotionRequired(environment)
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
