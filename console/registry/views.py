"""Registry pages: application dashboard, prompt/model-config lists, detail, editor, diff."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from console.audit.selectors import events_for_object
from console.core.canonical import loads
from console.core.diff import diff_contents
from console.core.forms import apply_errors
from console.core.permissions import ENGINEER, access_application, user_applications
from console.core.versioning import VersionConflict
from console.registry import selectors, services
from console.registry.dashboard import panels as dashboard_panels
from console.registry.forms import CONTENT_FORMS, BindForm, HeadForm, VersionMetaForm
from console.registry.kinds import Kind, kind_of
from console.registry.templating import render as render_template
from console.registry.validation import model_config_problems, prompt_findings


def _unusable(kind: Kind, version) -> list[str]:
    """Why a model config version cannot be used for runs under today's rules (shown on its
    pages); [] for prompts and usable configs."""
    if version is None or kind.slug != "models":
        return []
    return model_config_problems(version.content)


def _head(kind: Kind, application, key: str):
    head = kind.head.objects.filter(application=application, key=key).first()
    if head is None:
        raise Http404(f"No {kind.label.lower()} {key!r}")
    head.application = application
    return head


def _version(kind: Kind, head, number: int):
    version = kind.version.objects.filter(head=head, number=number).select_related("author").first()
    if version is None:
        raise Http404(f"{head.key} has no version {number}")
    return version


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    applications = list(user_applications(request.user).prefetch_related("environments"))
    return render(request, "registry/home.html", {"applications": applications})


@login_required
@require_GET
def dashboard(request: HttpRequest, app: str) -> HttpResponse:
    application = access_application(request, app)
    context = selectors.dashboard(application)
    context.update(dashboard_panels(request, application))
    context["application"] = application
    context["recent_events"] = events_for_object(application=application, limit=8)
    return render(request, "registry/dashboard.html", context)


@login_required
@require_GET
def head_list(request: HttpRequest, app: str, kind: str) -> HttpResponse:
    application = access_application(request, app)
    k = kind_of(kind)
    envs = selectors.environments(application)
    heads = selectors.heads_with_bindings(k, application)
    query = request.GET.get("q", "").strip().lower()
    if query:
        heads = [h for h in heads if query in h.key.lower() or query in h.name.lower()]
    for head in heads:
        head.cells = [head.live.get(env.pk) for env in envs]
    return render(
        request,
        "registry/head_list.html",
        {"application": application, "kind": k, "heads": heads, "environments": envs, "q": query},
    )


@login_required
def head_new(request: HttpRequest, app: str, kind: str) -> HttpResponse:
    application = access_application(request, app, ENGINEER)
    k = kind_of(kind)
    content_form_class = CONTENT_FORMS[k.slug]
    head_form = HeadForm(request.POST or None)
    content_form = content_form_class(request.POST or None)
    meta_form = VersionMetaForm(request.POST or None, initial={"base_number": 0})
    problems: list[str] = []
    if request.method == "POST" and all(f.is_valid() for f in (head_form, content_form, meta_form)):
        try:
            result = services.create_head(
                actor=request.user,
                kind=k,
                application=application,
                content=content_form.content(),
                message=meta_form.cleaned_data["message"],
                **head_form.cleaned_data,
            )
        except ValidationError as exc:
            problems = apply_errors([head_form, content_form, meta_form], exc)
        else:
            messages.success(request, f"Created {result.version.head.key} v1.")
            return redirect(
                "registry:head_detail", app=app, kind=k.slug, key=result.version.head.key
            )
    return render(
        request,
        "registry/head_edit.html",
        {
            "application": application,
            "kind": k,
            "head": None,
            "head_form": head_form,
            "content_form": content_form,
            "meta_form": meta_form,
            "problems": problems,
            "preview": _preview(content_form.data if request.method == "POST" else None),
        },
    )


@login_required
@require_GET
def head_detail(request: HttpRequest, app: str, kind: str, key: str) -> HttpResponse:
    application = access_application(request, app)
    k = kind_of(kind)
    head = _head(k, application, key)
    versions = list(selectors.versions(k, head)[:200])
    bindings = selectors.head_bindings(k, head)
    live_numbers = {b.version.number: env for env, b in bindings if b}
    for version in versions:
        version.live_in = [env for env, b in bindings if b and b.version_id == version.pk]
    latest = versions[0] if versions else None
    return render(
        request,
        "registry/head_detail.html",
        {
            "application": application,
            "kind": k,
            "head": head,
            "versions": versions,
            "latest": latest,
            "bindings": bindings,
            "live_numbers": live_numbers,
            "unusable": _unusable(k, latest),
            "history": events_for_object(object_type=k.head._meta.model_name, object_id=head.pk),
        },
    )


@login_required
def head_edit(request: HttpRequest, app: str, kind: str, key: str) -> HttpResponse:
    application = access_application(request, app, ENGINEER)
    k = kind_of(kind)
    head = _head(k, application, key)
    latest = _version(k, head, head.latest_number)
    form_class = CONTENT_FORMS[k.slug]
    conflict: VersionConflict | None = None
    problems: list[str] = []
    if request.method == "POST":
        content_form = form_class(request.POST)
        meta_form = VersionMetaForm(request.POST)
        if content_form.is_valid() and meta_form.is_valid():
            try:
                result = services.save_head_version(
                    actor=request.user,
                    head=head,
                    content=content_form.content(),
                    base_number=meta_form.cleaned_data["base_number"],
                    message=meta_form.cleaned_data["message"],
                )
            except VersionConflict as exc:
                conflict = exc
                # Keep the user's text; rebase onto the latest so the next save is deliberate.
                data = request.POST.copy()
                data["base_number"] = str(exc.latest.number)
                meta_form = VersionMetaForm(data)
                meta_form.is_valid()
            except ValidationError as exc:
                problems = apply_errors([content_form, meta_form], exc)
            else:
                if result.created:
                    messages.success(request, f"Saved {head.key} v{result.version.number}.")
                else:
                    messages.info(
                        request, "No changes: the content is identical to the latest version."
                    )
                return redirect("registry:head_detail", app=app, kind=k.slug, key=head.key)
    else:
        content_form = form_class(initial=form_class.initial_from(latest.content))
        meta_form = VersionMetaForm(initial={"base_number": latest.number})
    return render(
        request,
        "registry/head_edit.html",
        {
            "application": application,
            "kind": k,
            "head": head,
            "latest": latest,
            "content_form": content_form,
            "meta_form": meta_form,
            "conflict": conflict,
            "problems": problems,
            "preview": _preview(
                content_form.data
                if request.method == "POST"
                else form_class.initial_from(latest.content)
            )
            if k.slug == "prompts"
            else None,
        },
    )


def _preview(data) -> dict | None:
    """Render the prompt with sample values and list problems, from raw form data."""
    if data is None:
        return None
    variables = [v for v in str(data.get("variables", "")).replace(",", " ").split() if v]
    content = {
        "system": data.get("system", ""),
        "user": data.get("user", ""),
        "variables": variables,
        "params": {},
    }
    errors, warnings = prompt_findings(content)
    sample_raw = (data.get("sample") or "").strip()
    sample: dict = {}
    sample_error = ""
    if sample_raw:
        try:
            sample = loads(sample_raw)
            if not isinstance(sample, dict):
                raise ValueError("sample values must be a JSON object")
        except (ValueError, json.JSONDecodeError) as exc:
            sample, sample_error = {}, f"Sample values: {exc}"
    values = {name: sample.get(name, f"⟨{name}⟩") for name in variables}
    return {
        "system": render_template(content["system"], values),
        "user": render_template(content["user"], values),
        "errors": [f"{field}: {msg}" for field, msgs in errors.items() for msg in msgs],
        "warnings": warnings,
        "sample_error": sample_error,
        "missing_samples": [n for n in variables if n not in sample],
    }


@login_required
@require_POST
def prompt_preview(request: HttpRequest, app: str) -> HttpResponse:
    access_application(request, app, ENGINEER)
    return render(request, "registry/head_edit.html#preview", {"preview": _preview(request.POST)})


@login_required
@require_GET
def version_detail(
    request: HttpRequest, app: str, kind: str, key: str, number: int
) -> HttpResponse:
    application = access_application(request, app)
    k = kind_of(kind)
    head = _head(k, application, key)
    version = _version(k, head, number)
    bindings = selectors.head_bindings(k, head)
    return render(
        request,
        "registry/version_detail.html",
        {
            "application": application,
            "kind": k,
            "head": head,
            "version": version,
            "content_json": json.dumps(version.content, indent=2, ensure_ascii=False),
            "unusable": _unusable(k, version),
            "bindings": bindings,
            "live_in": [env for env, b in bindings if b and b.version_id == version.pk],
        },
    )


@login_required
@require_GET
def diff(request: HttpRequest, app: str, kind: str, key: str) -> HttpResponse:
    application = access_application(request, app)
    k = kind_of(kind)
    head = _head(k, application, key)
    numbers = list(selectors.versions(k, head).values_list("number", flat=True)[:500])
    try:
        b = int(request.GET.get("b") or head.latest_number)
        a = int(request.GET.get("a") or max(b - 1, 1))
        if not (0 < a < 2**31 and 0 < b < 2**31):
            raise ValueError
    except ValueError:
        raise Http404("Version numbers must be integers") from None
    old, new = _version(k, head, a), _version(k, head, b)
    changes = diff_contents(old.content, new.content)
    return render(
        request,
        "registry/diff.html",
        {
            "application": application,
            "kind": k,
            "head": head,
            "old": old,
            "new": new,
            "changes": changes,
            "changed_count": sum(1 for c in changes if c.changed),
            "show_all": request.GET.get("all") == "1",
            "numbers": numbers,
        },
    )


@login_required
@require_POST
def bind(request: HttpRequest, app: str, kind: str, key: str) -> HttpResponse:
    application = access_application(request, app, ENGINEER)
    k = kind_of(kind)
    head = _head(k, application, key)
    form = BindForm(request.POST)
    target = reverse("registry:head_detail", kwargs={"app": app, "kind": k.slug, "key": key})
    if not form.is_valid():
        messages.error(request, "Choose an environment and a version to make live.")
        return redirect(target)
    environment = application.environments.filter(key=form.cleaned_data["environment"]).first()
    if environment is None:
        raise Http404("No such environment")
    version = _version(k, head, form.cleaned_data["version"])
    try:
        services.bind_version(
            actor=request.user,
            environment=environment,
            version=version,
            reason=form.cleaned_data["reason"],
        )
    except services.PromotionRequired as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, f"{head.key} v{version.number} is now live in {environment.name}."
        )
    return redirect(target)


@login_required
@require_GET
def environments(request: HttpRequest, app: str) -> HttpResponse:
    """Environments and a summary of their release policies (changed on the policy pages)."""
    application = access_application(request, app)
    return render(
        request,
        "registry/environments.html",
        {"application": application, "environments": selectors.environments(application)},
    )
