"""Flag pages: the list (environments as columns), the detail page with per-environment rules,
kill switches, the "who gets what" evaluator, rule history and diffs; create and edit."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from console.accounts.models import Membership
from console.accounts.roles import ENGINEER
from console.audit.selectors import events_for_object
from console.core.canonical import loads
from console.core.diff import diff_contents
from console.core.forms import apply_errors
from console.core.jsoninput import JSONInputError
from console.core.permissions import access_application
from console.core.versioning import VersionConflict
from console.flags import selectors, services
from console.flags.evaluation import OPERATORS, EvaluationError, check_context, evaluate
from console.flags.forms import FlagForm, ReasonForm, RulesForm
from console.flags.models import Flag, FlagKind, FlagRulesVersion, FlagType
from console.registry.models import Environment, ModelConfigVersion, PromptVersion


def _flag(request: HttpRequest, app: str, key: str, perm: str | None = None) -> Flag:
    application = access_application(request, app, perm)
    flag = Flag.objects.filter(application=application, key=key).select_related("owner").first()
    if flag is None:
        raise Http404("No such flag")
    flag.application = application
    return flag


def _environment(flag: Flag, key: str) -> Environment:
    env = flag.application.environments.filter(key=key).first()
    if env is None:
        raise Http404("No such environment")
    return env


def _owners(application) -> list[str]:
    return list(
        Membership.objects.filter(application=application)
        .order_by("user__username")
        .values_list("user__username", flat=True)
    )


def _owner_user(username: str):
    if not username:
        return None
    return get_user_model().objects.filter(username=username).first()


def _ref_choices(application) -> list[tuple[str, str]]:
    """Prompt and model config versions a variant can point at (a canary)."""
    choices = []
    for kind, model, label in (
        ("prompt", PromptVersion, "prompt"),
        ("model_config", ModelConfigVersion, "model config"),
    ):
        rows = (
            model.objects.filter(head__application=application)
            .order_by("head__key", "-number")
            .values_list("head__key", "number")[:300]
        )
        choices += [(f"{kind}:{key}:{n}", f"{label} {key} v{n}") for key, n in rows]
    return choices


# ---------------------------------------------------------------------------- the list


@login_required
@require_GET
def flag_list(request: HttpRequest, app: str) -> HttpResponse:
    application = access_application(request, app)
    q = request.GET.get("q", "").strip()
    kind = request.GET.get("kind", "")
    owner = request.GET.get("owner", "")
    envs, rows, page = selectors.flag_rows(
        application, q=q, kind=kind, owner=owner, page=request.GET.get("page")
    )
    context = {
        "application": application,
        "environments": envs,
        "rows": rows,
        "page": page,
        "q": q,
        "kind": kind,
        "owner": owner,
        "kinds": FlagKind.choices,
        "owners": selectors.owners(application),
        "filtered": bool(q or kind or owner),
        "can_edit": ENGINEER in request.app_perms,
    }
    if request.htmx and request.htmx.target == "flag-table":
        return render(request, "flags/list.html#table", context)
    return render(request, "flags/list.html", context)


# ----------------------------------------------------------------------- create / edit


def _form_context(request, application, form, flag=None, problems=None) -> dict:
    return {
        "application": application,
        "form": form,
        "flag": flag,
        "problems": problems or [],
        "variants_json": form.data.get("variants")
        if form.is_bound
        else json.dumps(flag.variants if flag else []),
        "ref_choices": _ref_choices(application),
        "types": FlagType.choices,
    }


@login_required
def flag_new(request: HttpRequest, app: str) -> HttpResponse:
    application = access_application(request, app, ENGINEER)
    form = FlagForm(
        request.POST or None,
        owners=_owners(application),
        initial={"owner": request.user.get_username(), "flag_type": FlagType.BOOLEAN},
    )
    problems: list[str] = []
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            flag = services.create_flag(
                actor=request.user,
                application=application,
                key=data["key"],
                name=data["name"],
                description=data["description"],
                flag_type=data["flag_type"],
                kind=data["kind"],
                owner=_owner_user(data["owner"]),
                variants=data["variants"],
                off_variant=data["off_variant"],
            )
        except ValidationError as exc:
            problems = apply_errors([form], exc)
        else:
            messages.success(
                request,
                f"Created {flag.key}. It is off in every environment until you switch it on.",
            )
            return redirect("flags:detail", app=app, key=flag.key)
    return render(
        request, "flags/edit.html", _form_context(request, application, form, problems=problems)
    )


@login_required
def flag_edit(request: HttpRequest, app: str, key: str) -> HttpResponse:
    flag = _flag(request, app, key, ENGINEER)
    initial = {
        "name": flag.name,
        "description": flag.description,
        "kind": flag.kind,
        "owner": flag.owner.get_username() if flag.owner_id else "",
        "off_variant": flag.off_variant,
    }
    form = FlagForm(
        request.POST or None, owners=_owners(flag.application), editing=True, initial=initial
    )
    problems: list[str] = []
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            services.update_flag(
                actor=request.user,
                flag=flag,
                name=data["name"],
                description=data["description"],
                kind=data["kind"],
                owner=_owner_user(data["owner"]),
                variants=data["variants"] if data["variants"] is not None else flag.variants,
                off_variant=data["off_variant"] or flag.off_variant,
            )
        except ValidationError as exc:
            problems = apply_errors([form], exc)
        else:
            messages.success(request, f"Saved {flag.key}.")
            return redirect("flags:detail", app=app, key=flag.key)
    return render(
        request,
        "flags/edit.html",
        _form_context(request, flag.application, form, flag=flag, problems=problems),
    )


# ------------------------------------------------------------------------------ detail


def _detail_context(request: HttpRequest, flag: Flag, env_key: str | None) -> dict:
    states = selectors.flag_states(flag)
    current = next(
        (s for s in states if s.environment.key == env_key), states[0] if states else None
    )
    versions = selectors.rule_versions(current.head) if current and current.head else []
    attributes = {"targetingKey"}
    for state in states:
        for rule in state.rules:
            attributes.update(c.get("attribute", "") for c in rule.get("conditions", []))
    return {
        "attributes": sorted(a for a in attributes if a),
        "application": flag.application,
        "flag": flag,
        "states": states,
        "current": current,
        "versions": versions,
        "can_edit": ENGINEER in request.app_perms,
        "operators": list(OPERATORS.items()),
        "variant_keys": flag.variant_keys,
        "content_json": json.dumps(current.content if current else {}, indent=2),
    }


@login_required
@require_GET
def flag_detail(request: HttpRequest, app: str, key: str) -> HttpResponse:
    flag = _flag(request, app, key)
    context = _detail_context(request, flag, request.GET.get("env"))
    if request.htmx and request.htmx.target == "env-panel":
        return render(request, "flags/detail.html#env_panel", context)
    context["history"] = events_for_object(object_type="flag", object_id=flag.pk, limit=25)
    context["evaluation_env"] = context["current"].environment.key if context["current"] else ""
    return render(request, "flags/detail.html", context)


@login_required
@require_POST
def save_rules(request: HttpRequest, app: str, key: str, env: str) -> HttpResponse:
    flag = _flag(request, app, key, ENGINEER)
    environment = _environment(flag, env)
    target = reverse("flags:detail", kwargs={"app": app, "key": key}) + f"?env={env}"
    form = RulesForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(m for errs in form.errors.values() for m in errs))
        return redirect(target)
    try:
        result = services.save_rules(
            actor=request.user,
            flag=flag,
            environment=environment,
            content=form.cleaned_data["content"],
            base_number=form.cleaned_data["base_number"],
            message=form.cleaned_data["message"],
        )
    except services.PromotionRequired as exc:
        messages.error(request, str(exc))
    except VersionConflict as exc:
        messages.error(request, str(exc))
    except ValidationError as exc:
        detail = (
            "; ".join(f"{k}: {', '.join(v)}" for k, v in exc.message_dict.items())
            if hasattr(exc, "error_dict")
            else " ".join(exc.messages)
        )
        messages.error(request, f"Not saved — {detail}")
    else:
        if result.created:
            messages.success(
                request, f"Saved {flag.key} rules v{result.version.number} in {environment.name}."
            )
        else:
            messages.info(request, "No changes: the rules are identical to the latest version.")
    return redirect(target)


def _kill_or_restore(request: HttpRequest, app: str, key: str, env: str, kill: bool):
    flag = _flag(request, app, key, ENGINEER)
    environment = _environment(flag, env)
    target = reverse("flags:detail", kwargs={"app": app, "key": key}) + f"?env={env}"
    form = ReasonForm(request.POST)
    if not form.is_valid():
        messages.error(
            request,
            f"Say why you {'kill' if kill else 'restore'} {flag.key} in {environment.name}: "
            "the reason is required and goes into the audit log.",
        )
        return redirect(target)
    service = services.kill_flag if kill else services.restore_flag
    head, changed = service(
        actor=request.user,
        flag=flag,
        environment=environment,
        reason=form.cleaned_data["reason"],
    )
    if not changed:
        messages.info(
            request,
            f"{flag.key} was already {'killed' if kill else 'live'} in {environment.name}.",
        )
    elif kill:
        messages.warning(
            request,
            f"Killed {flag.key} in {environment.name}: it serves "
            f"“{services.served_off_variant(head)}” from now on.",
        )
    else:
        messages.success(
            request, f"Restored {flag.key} in {environment.name}: its rules apply again."
        )
    return redirect(target)


@login_required
@require_POST
def kill(request: HttpRequest, app: str, key: str, env: str) -> HttpResponse:
    return _kill_or_restore(request, app, key, env, kill=True)


@login_required
@require_POST
def restore(request: HttpRequest, app: str, key: str, env: str) -> HttpResponse:
    return _kill_or_restore(request, app, key, env, kill=False)


# ------------------------------------------------------------------ evaluate and diff


def _parse_attributes(raw: str) -> dict:
    """A JSON object, or one `name = value` per line (numbers and true/false understood)."""
    raw = raw.strip()
    if not raw:
        return {}
    if raw.startswith("{"):
        value = loads(raw)
        if not isinstance(value, dict):
            raise ValueError("attributes must be a JSON object")
        return value
    out: dict = {}
    for line in raw.splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"write “name = value” (got {line.strip()!r})")
        text = value.strip()
        try:
            out[name.strip()] = loads(text) if text else ""
        except JSONInputError:
            out[name.strip()] = text
    return out


@login_required
@require_GET
def evaluate_view(request: HttpRequest, app: str, key: str) -> HttpResponse:
    """The "who gets what" panel: the variant a context gets, and which rule decided."""
    flag = _flag(request, app, key)
    env_key = request.GET.get("environment", "")
    environment = _environment(flag, env_key) if env_key else None
    context = {"application": flag.application, "flag": flag, "environment": environment}
    targeting_key = request.GET.get("targeting_key", "").strip()
    try:
        attributes = _parse_attributes(request.GET.get("attributes", ""))
        if targeting_key:
            attributes["targetingKey"] = targeting_key
        definitions = selectors.environment_flags(environment).definitions if environment else {}
        context["resolution"] = evaluate(definitions[flag.key], check_context(attributes))
    except (ValueError, json.JSONDecodeError) as exc:
        context["error"] = f"Attributes: {exc}"
    except EvaluationError as exc:
        context["error"] = f"{exc.code}: {exc.details}"
    except KeyError:
        context["error"] = "Choose an environment."
    return render(request, "flags/detail.html#evaluation", context)


def _diffable(value):
    """Lists become {"1": ..., "2": ...} so a diff names `rules.2.conditions.1.value`, not
    one opaque `rules` blob."""
    if isinstance(value, dict):
        return {k: _diffable(v) for k, v in value.items()}
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        return {str(i): _diffable(v) for i, v in enumerate(value, start=1)}
    return value


@login_required
@require_GET
def diff(request: HttpRequest, app: str, key: str, env: str) -> HttpResponse:
    flag = _flag(request, app, key)
    environment = _environment(flag, env)
    head = flag.rule_sets.filter(environment=environment).first()
    if head is None:
        raise Http404("No rules in this environment")
    numbers = list(
        FlagRulesVersion.objects.filter(head=head).values_list("number", flat=True)[:500]
    )
    try:
        b = int(request.GET.get("b") or head.latest_number)
        a = int(request.GET.get("a") or max(b - 1, 1))
        if not (0 < a < 2**31 and 0 < b < 2**31):
            raise ValueError
    except ValueError:
        raise Http404("Version numbers must be integers") from None
    versions = {
        v.number: v
        for v in FlagRulesVersion.objects.filter(head=head, number__in=[a, b]).select_related(
            "author"
        )
    }
    if a not in versions or b not in versions:
        raise Http404("No such version")
    old, new = versions[a], versions[b]
    changes = diff_contents(_diffable(old.content), _diffable(new.content))
    return render(
        request,
        "flags/diff.html",
        {
            "application": flag.application,
            "flag": flag,
            "environment": environment,
            "head": head,
            "old": old,
            "new": new,
            "changes": changes,
            "changed_count": sum(1 for c in changes if c.changed),
            "show_all": request.GET.get("all") == "1",
            "numbers": numbers,
        },
    )
