"""Release pages: approver's inbox, new request with its evidence, request detail with the
decision and apply controls, environment history with rollback, rollouts."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from console.accounts.roles import ADMIN, APPROVE, ENGINEER
from console.core.diff import diff_contents
from console.core.permissions import access_application
from console.evals import metrics as eval_metrics
from console.registry.kinds import MODEL_CONFIG, PROMPT
from console.registry.models import ModelConfigVersion, PromptVersion
from console.registry.selectors import heads_with_bindings
from console.registry.services import PromotionRequired
from console.releases import checklists, policies, rollouts, selectors, services
from console.releases import evidence as evidence_mod
from console.releases.forms import PolicyForm
from console.releases.models import PromotionRequest, Rollout, ShadowDeployment


def _request(application, pk: int) -> PromotionRequest:
    found = selectors.requests(application).filter(pk=pk).first()
    if found is None:
        raise Http404("No such promotion request")
    return found


def _environment(application, key: str):
    env = application.environments.filter(key=key).first()
    if env is None:
        raise Http404("No such environment")
    return env


def _version(application, kind: str, key: str, number):
    try:
        number = int(number)
    except (TypeError, ValueError):
        raise Http404("Version numbers are integers") from None
    if kind == "prompt":
        qs = PromptVersion.objects.filter(head__application=application, head__key=key)
    elif kind == "model_config":
        qs = ModelConfigVersion.objects.filter(head__application=application, head__key=key)
    elif kind == "flag_rules":
        from console.flags.models import FlagRulesVersion

        env_key, _, flag_key = key.partition(":")
        qs = FlagRulesVersion.objects.filter(
            head__flag__application=application,
            head__flag__key=flag_key,
            head__environment__key=env_key,
        )
    else:
        raise Http404("Unknown kind")
    version = qs.filter(number=number).select_related("head").first()
    if version is None:
        raise Http404("No such version")
    return version


@login_required
@require_GET
def inbox(request: HttpRequest, app: str) -> HttpResponse:
    application = access_application(request, app)
    boxes = selectors.inbox(application, request.user, request.app_perms)
    return render(
        request,
        "releases/inbox.html",
        {"application": application, **boxes, "rollouts": selectors.active_rollouts(application)},
    )


def _paired(application, kind: str, raw: str):
    """`key@N` of the other half of a bundle, or None for "what is live there now"."""
    key, _, number = (raw or "").strip().partition("@")
    if not key:
        return None
    return _version(application, "model_config" if kind == "prompt" else "prompt", key, number)


@login_required
def new(request: HttpRequest, app: str) -> HttpResponse:
    application = access_application(request, app, ENGINEER)
    params = request.POST if request.method == "POST" else request.GET
    if not params.get("key"):
        return render(
            request,
            "releases/choose.html",
            {"application": application, **selectors.choices(application)},
        )
    kind = params.get("kind", "prompt")
    version = _version(application, kind, params.get("key", ""), params.get("version"))
    environment = _environment(application, params.get("environment", ""))
    shadow = params.get("shadow") in {"on", "1"}
    missing = None
    paired = None
    try:
        paired = _paired(application, kind, params.get("paired", ""))
    except Http404:
        messages.error(request, f"No version {params.get('paired')} to pair with.")
    if request.method == "POST":
        try:
            promotion = services.open_request(
                actor=request.user,
                environment=environment,
                version=version,
                justification=request.POST.get("justification", ""),
                staged=request.POST.get("staged") == "on",
                shadow=shadow,
                paired=paired,
            )
        except services.EvidenceMissing as exc:
            missing = exc.missing
        except ValidationError as exc:
            for message in exc.messages:
                messages.error(request, message)
        else:
            messages.success(request, f"Requested #{promotion.pk}; approvers have been notified.")
            return redirect("releases:detail", app=app, pk=promotion.pk)
    # Only for the page: a successful submission gathers its own evidence in open_request.
    live = services.live_version(kind, version, environment)
    if kind == "flag_rules":
        evidence = evidence_mod.flag_rules_evidence(environment)
        bundle = None
    else:
        try:
            bundle = services.bundle_for(kind, version, environment, paired)
        except ValidationError as exc:
            bundle = None
            missing = (missing or []) + exc.messages
            evidence = evidence_mod.Evidence(required=environment.eval_gate_required)
        else:
            evidence = evidence_mod.gather(
                environment, bundle, services.live_bundle(environment, bundle)
            )
    changes = [c for c in diff_contents(live.content if live else {}, version.content) if c.changed]
    if missing is None:
        missing = evidence.missing if environment.eval_gate_required else []
    return render(
        request,
        "releases/new.html",
        {
            "application": application,
            "kind": kind,
            "version": version,
            "environment": environment,
            "live": live,
            "old": live,
            "new": version,
            "changes": changes,
            "rules": selectors.rules_change(live, version) if kind == "flag_rules" else None,
            "evidence": evidence.as_dict(),
            "bundle": bundle,
            "paired_choices": selectors.paired_choices(application, kind),
            "paired": params.get("paired", ""),
            "shadow": shadow,
            "missing": missing,
            "key": params.get("key", ""),
            "justification": request.POST.get("justification", ""),
        },
    )


@login_required
@require_GET
def detail(request: HttpRequest, app: str, pk: int) -> HttpResponse:
    application = access_application(request, app)
    promotion = _request(application, pk)
    stale = services.staleness(promotion) if promotion.is_open else ""
    approvals = list(promotion.approvals.select_related("approver"))
    rollout = Rollout.objects.filter(request=promotion).select_related("flag").first()
    user = request.user
    is_policy = promotion.kind == PromotionRequest.Kind.POLICY
    live, changes, rules, policy_change = None, [], None, None
    if promotion.status == PromotionRequest.Status.APPLIED and promotion.applied_change:
        pass  # the page shows the record kept at apply
    elif is_policy:
        current, number = policies.current(promotion.environment)
        policy_change = {
            "number": number,
            "rows": [
                (field, _policy_value(current.get(field)), _policy_value(proposed))
                for field, proposed in promotion.proposal.items()
                if current.get(field) != proposed
            ],
            "loosenings": promotion.evidence.get("loosenings", []),
        }
    else:
        live, all_changes = selectors.version_diff(promotion)
        changes = [c for c in all_changes if c.changed]
        if promotion.kind == PromotionRequest.Kind.FLAG_RULES:
            rules = selectors.rules_change(live, promotion.version)
    evidence = promotion.evidence
    if promotion.is_open and promotion.kind in (
        PromotionRequest.Kind.PROMPT,
        PromotionRequest.Kind.MODEL_CONFIG,
    ):
        # Judged again (a comparison costs a bootstrap) only while a baseline runs or once the
        # policy changed; otherwise the evidence stored when the request was (re)confirmed.
        _, in_force = policies.current(promotion.environment)
        if evidence.get("waiting") or in_force != promotion.policy_version:
            fresh = services.fresh_evidence(promotion)
            if fresh is not None:
                evidence = fresh.as_dict()
    perms = request.app_perms
    decider = ADMIN if is_policy else APPROVE
    return render(
        request,
        "releases/detail.html",
        {
            "application": application,
            "environment": promotion.environment,
            "promotion": promotion,
            "live": live,
            "old": live,
            "new": promotion.version,
            "changes": changes,
            "rules": rules,
            "policy_change": policy_change,
            "evidence": evidence,
            # From production (an experiment report or a shadow comparison), kept as it read
            # when the request was opened.
            "online": promotion.evidence.get("online"),
            "stale": stale,
            "approvals": approvals,
            "approval_count": services.approvals_count(promotion),
            "timeline": selectors.timeline(promotion),
            "rollout": rollout,
            "can_decide": decider in perms
            and promotion.requested_by_id != user.pk
            and promotion.is_open
            and not any(
                a.approver_id == user.pk and a.revision == promotion.revision for a in approvals
            ),
            "is_requester": promotion.requested_by_id == user.pk,
            "checklist": checklists.status(promotion, evidence) if not is_policy else [],
            "can_apply": promotion.status == PromotionRequest.Status.APPROVED
            and rollout is None
            and (
                ADMIN in perms
                if is_policy
                else (promotion.requested_by_id == user.pk or APPROVE in perms)
            ),
            "can_control": ENGINEER in perms,
        },
    )


def _policy_value(value) -> str:
    """A policy field as people write it: gates one per line, lists comma-separated."""
    if isinstance(value, list):
        return (
            "\n".join(eval_metrics.gate_text(v) if isinstance(v, dict) else str(v) for v in value)
            or "none"
        )
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "—" if value is None else str(value)


@login_required
def policy(request: HttpRequest, app: str, env: str) -> HttpResponse:
    """An environment's release policy: everyone reads it, admins change it (a loosening of a
    protected environment becomes a request another admin approves)."""
    application = access_application(request, app)
    environment = _environment(application, env)
    content, number = policies.current(environment)
    form = None
    if request.method == "POST":
        access_application(request, app, ADMIN)
        form = PolicyForm(request.POST)
        if form.is_valid():
            try:
                outcome, result = policies.change(
                    actor=request.user,
                    environment=environment,
                    content=form.content(),
                    base_number=form.cleaned_data["base"],
                    message=form.cleaned_data["message"],
                )
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    for error in errors:
                        form.add_error(field if field in form.fields else None, error)
            except PermissionDenied as exc:
                messages.error(request, str(exc))
            else:
                if outcome == "requested":
                    messages.warning(
                        request,
                        f"This loosens a protected environment's policy: request #{result.pk} "
                        "waits for another admin's approval.",
                    )
                    return redirect("releases:detail", app=app, pk=result.pk)
                if outcome == "applied":
                    messages.success(request, f"Policy v{result.number} is in force.")
                else:
                    messages.info(request, "Nothing changed.")
                return redirect("releases:policy", app=app, env=env)
    if form is None:
        initial = PolicyForm.initial_from(content, number)
        if (template := request.GET.get("checklist")) in checklists.TEMPLATES:
            initial["checklist"] = checklists.template_text(template)  # to edit, then save
        form = PolicyForm(initial=initial)
    return render(
        request,
        "releases/policy.html",
        {
            "application": application,
            "environment": environment,
            "policy": content,
            "number": number,
            "form": form,
            "versions": selectors.policy_versions(environment),
            "open_request": selectors.open_policy_request(environment),
            "datasets": application.datasets.order_by("key").values_list("key", flat=True),
            "gate_texts": [eval_metrics.gate_text(g) for g in content.get("gates", [])],
            "checklist_templates": [(k, title) for k, (title, _) in checklists.TEMPLATES.items()],
            "auto_checks": checklists.AUTO_CHECKS,
        },
    )


@login_required
@require_POST
def tick(request: HttpRequest, app: str, pk: int) -> HttpResponse:
    """The requester ticks or unticks a readiness item, with a note or link."""
    application = access_application(request, app)
    promotion = _request(application, pk)
    error = ""
    try:
        promotion = services.tick_checklist(
            actor=request.user,
            request=promotion,
            key=request.POST.get("item", ""),
            done=request.POST.get("done") != "0",
            note=request.POST.get("note", ""),
        )
    except ValidationError as exc:
        error = " ".join(exc.messages)
    if request.htmx:
        context = {
            "application": application,
            "promotion": promotion,
            "checklist": checklists.status(promotion),
            "is_requester": True,
            "checklist_error": error,
        }
        return render(request, "releases/_checklist.html", context)
    if error:
        messages.error(request, error)
    else:
        messages.success(request, "Checklist updated.")
    return redirect("releases:detail", app=app, pk=pk)


@login_required
@require_POST
def act(request: HttpRequest, app: str, pk: int) -> HttpResponse:
    application = access_application(request, app)
    promotion = _request(application, pk)
    action = request.POST.get("action", "")
    comment = request.POST.get("comment", "")
    try:
        if action in {"approve", "reject"}:
            services.decide(actor=request.user, request=promotion, decision=action, comment=comment)
            messages.success(request, f"You {services.PAST[action]} #{pk}.")
        elif action == "apply":
            services.apply(actor=request.user, request=promotion)
            messages.success(request, "Applied." if not promotion.staged else "Rollout started.")
        elif action == "reconfirm":
            services.reconfirm(actor=request.user, request=promotion)
            messages.success(
                request, "Re-confirmed against what is live now; approvals start over."
            )
        elif action == "edit":
            services.edit_request(
                actor=request.user,
                request=promotion,
                justification=request.POST.get("justification", ""),
            )
            messages.success(request, "Saved. Approvals given so far no longer count.")
        elif action == "withdraw":
            services.withdraw(actor=request.user, request=promotion)
            messages.success(request, "Withdrawn.")
        elif action in {"pause", "resume", "advance", "abort"}:
            access_application(request, app, ENGINEER)
            rollout = Rollout.objects.filter(request=promotion).first()
            if rollout is None:
                raise Http404("This request has no rollout")
            rollouts.control(actor=request.user, rollout=rollout, action=action, reason=comment)
            messages.success(request, f"Rollout: {action}.")
        else:
            raise Http404("Unknown action")
    except services.EvidenceMissing as exc:
        messages.error(request, "Evidence missing: " + "; ".join(exc.missing))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    except PermissionDenied as exc:
        messages.error(request, str(exc) or "Your role does not allow this.")
    response = redirect("releases:detail", app=app, pk=pk)
    response["HX-Trigger"] = "inbox-changed"
    return response


@login_required
def history(request: HttpRequest, app: str, env: str) -> HttpResponse:
    application = access_application(request, app)
    environment = _environment(application, env)
    if request.method == "POST":
        access_application(request, app, ENGINEER)
        try:
            action = request.POST.get("action")
            if action == "rollback":
                version = _version(
                    application,
                    request.POST.get("kind", ""),
                    request.POST.get("key", ""),
                    request.POST.get("version"),
                )
                services.rollback(
                    actor=request.user,
                    environment=environment,
                    version=version,
                    reason=request.POST.get("reason", ""),
                )
                messages.success(
                    request,
                    f"Rolled {environment.name} back to {version.head.key}@{version.number}.",
                )
            elif action == "shadow":
                version = _version(
                    application,
                    request.POST.get("kind", ""),
                    request.POST.get("key", ""),
                    request.POST.get("version"),
                )
                try:
                    services.start_shadow(
                        actor=request.user, environment=environment, version=version
                    )
                except PromotionRequired:
                    return redirect(
                        f"{reverse('releases:new', kwargs={'app': app})}?kind="
                        f"{request.POST.get('kind', '')}&key={version.head.key}&version="
                        f"{version.number}&environment={environment.key}&shadow=1"
                    )
                messages.success(
                    request, f"{version.head.key}@{version.number} now runs in shadow."
                )
            elif action == "end_shadow":
                shadow = ShadowDeployment.objects.filter(
                    environment=environment,
                    pk=int(request.POST["shadow"])
                    if request.POST.get("shadow", "").isdigit()
                    else 0,
                ).first()
                if shadow is None:
                    raise Http404("No such shadow deployment")
                services.end_shadow(actor=request.user, shadow=shadow)
                messages.success(request, "Shadow ended.")
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        return redirect("releases:history", app=app, env=env)
    heads = []
    for kind in (PROMPT, MODEL_CONFIG):  # four queries, whatever the number of heads
        history = services.live_history(kind.action, environment, kind.head._meta.model_name)
        for head in heads_with_bindings(kind, application):
            heads.append(
                {
                    "kind": kind.action,
                    "head": head,
                    "live": head.live.get(environment.pk),
                    "previous": history.get(head.pk, []),
                }
            )
    return render(
        request,
        "releases/history.html",
        {
            "application": application,
            "environment": environment,
            "heads": heads,
            "events": selectors.environment_history(environment),
            "shadows": ShadowDeployment.objects.filter(
                environment=environment, active=True
            ).select_related("prompt_version__head", "model_version__head", "created_by"),
        },
    )
