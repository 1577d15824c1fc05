"""Online experiments: every flag that splits traffic, and its report with "Conclude"."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from console.core.permissions import ENGINEER, access_application
from console.experiments import report as report_mod
from console.experiments import services
from console.flags.models import Flag
from console.registry.models import Environment
from console.releases.services import EvidenceMissing


@login_required
@require_GET
def experiment_list(request: HttpRequest, app: str) -> HttpResponse:
    application = access_application(request, app)
    rows = [
        {"flag": flag, "environment": env, "split": split, "since": since}
        for flag, env, split, since in report_mod.experiments(application)
    ]
    return render(
        request, "experiments/list.html", {"application": application, "experiments": rows}
    )


def _subject(application, env: str, flag: str) -> tuple[Flag, Environment]:
    environment = Environment.objects.filter(application=application, key=env).first()
    found = Flag.objects.filter(application=application, key=flag).first()
    if environment is None or found is None:
        raise Http404("No such flag or environment")
    return found, environment


def _page(request: HttpRequest, application, flag: Flag, environment: Environment, **extra):
    try:
        report = report_mod.build(flag, environment)
    except report_mod.NotAnExperiment as exc:
        report, problem = None, str(exc)
    else:
        problem = ""
    concludable = [
        v
        for v in (report or {}).get("variants", [])
        if (v.get("ref") or {}).get("kind") and v["key"] != report["control"]
    ]
    chosen = next((v for v in concludable if v["key"] == extra.get("variant")), None)
    if chosen and extra.get("missing"):
        ref = chosen["ref"]
        kind = "prompt" if ref["kind"] == "prompt" else "model_config"
        extra["promotion_url"] = reverse("releases:new", args=[application.key]) + "?" + urlencode(
            {"kind": kind, "key": ref["key"], "version": ref["version"],
             "environment": environment.key}
        )  # fmt: skip
    context = {
        "application": application,
        "flag": flag,
        "environment": environment,
        "report": report,
        "problem": problem,
        "concludable": concludable,
        "can_conclude": ENGINEER in request.app_perms,
        "since": datetime.fromisoformat(report["since"]) if report else None,
        "as_of": datetime.fromisoformat(report["as_of"]) if report else None,
        **extra,
    }
    return render(request, "experiments/report.html", context, status=extra.get("status", 200))


@login_required
@require_GET
def report(request: HttpRequest, app: str, env: str, flag: str) -> HttpResponse:
    application = access_application(request, app)
    found, environment = _subject(application, env, flag)
    return _page(request, application, found, environment)


@login_required
@require_POST
def conclude(request: HttpRequest, app: str, env: str, flag: str) -> HttpResponse:
    application = access_application(request, app, ENGINEER)
    found, environment = _subject(application, env, flag)
    variant = request.POST.get("variant", "")
    try:
        promotion, created = services.conclude(
            actor=request.user,
            flag=found,
            environment=environment,
            variant=variant,
            justification=request.POST.get("justification", ""),
        )
    except EvidenceMissing as exc:
        return _page(
            request, application, found, environment, missing=exc.missing, variant=variant,
            status=422,
        )  # fmt: skip
    except ValidationError as exc:
        errors = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
        return _page(request, application, found, environment, errors=errors, status=422)
    if created:
        messages.success(
            request,
            f"Requested #{promotion.pk}: {promotion.label}, with the experiment report as "
            "evidence; approvers have been notified.",
        )
    else:
        messages.success(
            request,
            f"#{promotion.pk} already asks for {promotion.label}: the experiment report is now "
            "part of its evidence.",
        )
    return redirect("releases:detail", app=app, pk=promotion.pk)
