"""Production samples: the curators' list and detail (with "Add to golden set"), the quality
page everyone reads, and the admins' sample policy."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from console.core.forms import apply_errors
from console.core.permissions import ADMIN, CURATE, ENGINEER, access_application
from console.datasets.models import Dataset
from console.evals.selectors import launch_choices
from console.registry.models import ModelConfigVersion, PromptVersion
from console.samples import charts, selectors, services
from console.samples.forms import CurateForm, MonitorForm, PolicyForm
from console.samples.models import Monitor, MonitorAlert, Sample


@login_required
@require_GET
def sample_list(request: HttpRequest, app: str) -> HttpResponse:
    application = access_application(request, app, CURATE)
    filters, errors = selectors.SampleFilters.from_query(request.GET)
    rows, cursor = selectors.page(
        application, filters, timezone.now(), request.GET.get("after", "")
    )
    context = {
        "application": application,
        "filters": filters,
        "errors": errors,
        "samples": rows,
        "next_query": {**filters.query(), "after": cursor} if cursor else None,
        "environments": list(application.environments.values_list("name", flat=True)),
        "versions": selectors.versions(application),
        "paged": bool(request.GET.get("after")),
    }
    template = "samples/list.html#rows" if request.htmx else "samples/list.html"
    return render(request, template, context)


def _sample(application, pk: int) -> Sample:
    sample = (
        Sample.objects.filter(application=application, pk=pk).select_related("environment").first()
    )
    if sample is None:
        raise Http404("No such sample (it may have passed its retention)")
    return sample


def _golden_sets(application) -> list[tuple[str, str]]:
    return [(key, f"{name} ({key})") for key, name in Dataset.objects.filter(
        application=application
    ).order_by("key").values_list("key", "name")]  # fmt: skip


@login_required
@require_GET
def detail(request: HttpRequest, app: str, pk: int) -> HttpResponse:
    application = access_application(request, app, CURATE)
    sample = _sample(application, pk)
    form = CurateForm(
        initial=CurateForm.initial_from(services.prefill(sample)),
        golden_sets=_golden_sets(application),
    )
    return render(request, "samples/detail.html", _detail_context(application, sample, form))


def _detail_context(application, sample: Sample, form: CurateForm) -> dict:
    return {
        "application": application,
        "sample": sample,
        "form": form,
        "has_golden_sets": bool(form.fields["dataset"].choices),
    }


@login_required
@require_POST
def curate(request: HttpRequest, app: str, pk: int) -> HttpResponse:
    application = access_application(request, app, CURATE)
    sample = _sample(application, pk)
    form = CurateForm(request.POST, golden_sets=_golden_sets(application))
    if form.is_valid():
        dataset = Dataset.objects.get(application=application, key=form.cleaned_data["dataset"])
        try:
            item = services.curate(
                actor=request.user, sample=sample, dataset=dataset, values=form.item_values()
            )
        except ValidationError as exc:
            for problem in apply_errors([form], exc):
                form.add_error(None, problem)
        else:
            messages.success(
                request,
                f"Added to {dataset.name} as draft item {item.item_id}: publish the golden set "
                "for evals to use it.",
            )
            url = reverse("datasets:editor", args=[application.key, dataset.key])
            return redirect(f"{url}?q={item.item_id}")
    context = _detail_context(application, sample, form)
    return render(request, "samples/detail.html", context, status=400)


@login_required
@require_GET
def quality(request: HttpRequest, app: str) -> HttpResponse:
    application = access_application(request, app)
    environments = list(application.environments.order_by("order", "pk"))
    chosen = request.GET.get("environment") or next(
        (e.name for e in environments if e.name == "prod"),
        environments[-1].name if environments else "",
    )
    environment = next((e for e in environments if e.name == chosen), None)
    days = request.GET.get("days", "7")
    days = int(days) if days.isdigit() and 1 <= int(days) <= selectors.MAX_DAYS else 7
    now = timezone.now()
    rows = selectors.quality(application, environment, days, now)
    policy = services.policy_of(application)
    spent, judged = selectors.judge_spend(application, now.date())
    context = {
        "application": application,
        "environments": environments,
        "environment": environment,
        "days": days,
        "rows": rows,
        "figures": charts.quality(rows),
        "policy": policy,
        "spent": spent,
        "judged_today": judged,
        "waiting": selectors.waiting(application),
        "open_alerts": MonitorAlert.objects.filter(monitor__application=application)
        .exclude(state=MonitorAlert.State.RESOLVED)
        .count(),
        "can_curate": CURATE in request.app_perms,
        "can_admin": ADMIN in request.app_perms,
    }
    return render(request, "samples/quality.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def policy(request: HttpRequest, app: str) -> HttpResponse:
    application = access_application(request, app, ADMIN)
    current = services.policy_of(application)
    choices = launch_choices(application)
    models = [c for c in choices["judge_model_version"] if c[0]]
    prompts = [c for c in choices["judge_faithfulness"] if c[0]]
    if request.method == "POST":
        form = PolicyForm(request.POST, models=models, prompts=prompts)
        if form.is_valid():
            data = form.cleaned_data
            judge_prompts = {
                metric: PromptVersion.objects.get(pk=data[f"judge_{metric}"])
                for metric in services.JUDGED_METRICS
                if data[f"judge_{metric}"]
            }
            try:
                services.update_policy(
                    actor=request.user,
                    application=application,
                    revision=data["revision"],
                    redact_kinds=data["redact_kinds"],
                    redact_patterns=data["redact_patterns"],
                    judge_rate=data["judge_rate"],
                    judge_daily_cap=Decimal(data["judge_daily_cap"]),
                    judge_model=(
                        ModelConfigVersion.objects.get(pk=data["judge_model"])
                        if data["judge_model"]
                        else None
                    ),
                    judge_prompts=judge_prompts,
                )
            except ValidationError as exc:
                for problem in apply_errors([form], exc):
                    form.add_error(None, problem)
            else:
                messages.success(request, "Sample policy saved; it applies to the next batch.")
                return redirect("samples:policy", app=app)
        status = 400
    else:
        form = PolicyForm(
            initial={
                "revision": current.revision if current.pk else 0,
                "redact_kinds": current.redact_kinds,
                "redact_patterns": "\n".join(
                    f"{p['name']}: {p['pattern']}" for p in current.redact_patterns
                ),
                "judge_rate": current.judge_rate,
                "judge_daily_cap": current.judge_daily_cap,
                "judge_model": current.judge_model_id or "",
                **{
                    f"judge_{metric}": (current.judge_prompts or {}).get(metric, "")
                    for metric in services.JUDGED_METRICS
                },
            },
            models=models,
            prompts=prompts,
        )
        status = 200
    context = {
        "application": application,
        "form": form,
        "policy": current,
        "retention_days": settings.SAMPLE_RETENTION_DAYS,
    }
    return render(request, "samples/policy.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def monitors(request: HttpRequest, app: str) -> HttpResponse:
    """The monitors of every environment with their last reading, the alerts (open first), and
    for engineers the form to add one."""
    application = access_application(request, app, ENGINEER if request.method == "POST" else None)
    environments = list(application.environments.order_by("order", "pk"))
    form = MonitorForm(
        request.POST if request.method == "POST" else None,
        environments=[(e.key, e.name) for e in environments],
        metrics=Monitor.Metric.choices,
    )
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                monitor = services.create_monitor(
                    actor=request.user,
                    application=application,
                    environment=next(e for e in environments if e.key == data["environment"]),
                    metric=data["metric"],
                    version=data["version"].strip(),
                    window_minutes=data["window_minutes"],
                    baseline_minutes=data["baseline_minutes"],
                    warn=data["warn"],
                    critical=data["critical"],
                    min_samples=data["min_samples"],
                    cooldown_minutes=data["cooldown_minutes"],
                )
            except ValidationError as exc:
                for problem in apply_errors([form], exc):
                    form.add_error(None, problem)
            else:
                messages.success(request, f"Monitor added: {monitor}. It is checked every minute.")
                return redirect("samples:monitors", app=app)
        status = 400
    alerts = list(
        MonitorAlert.objects.filter(monitor__application=application)
        .select_related("monitor__environment", "acknowledged_by", "resolved_by")
        .order_by("-opened_at")[:50]
    )
    alerts.sort(key=lambda a: a.state == MonitorAlert.State.RESOLVED)
    context = {
        "application": application,
        "monitors": list(
            Monitor.objects.filter(application=application).select_related("environment")
        ),
        "alerts": alerts,
        "form": form,
        "can_engineer": ENGINEER in request.app_perms,
    }
    return render(request, "samples/monitors.html", context, status=status)


def _monitor(application, pk: int) -> Monitor:
    monitor = Monitor.objects.filter(application=application, pk=pk).first()
    if monitor is None:
        raise Http404("No such monitor")
    return monitor


@login_required
@require_POST
def monitor_enabled(request: HttpRequest, app: str, pk: int) -> HttpResponse:
    application = access_application(request, app, ENGINEER)
    monitor = services.set_monitor_enabled(
        actor=request.user,
        monitor=_monitor(application, pk),
        enabled=request.POST.get("enabled") == "1",
    )
    messages.success(request, f"{monitor}: {'on' if monitor.enabled else 'paused'}.")
    return redirect("samples:monitors", app=app)


@login_required
@require_POST
def alert_decide(request: HttpRequest, app: str, pk: int) -> HttpResponse:
    application = access_application(request, app, ENGINEER)
    alert = MonitorAlert.objects.filter(monitor__application=application, pk=pk).first()
    if alert is None:
        raise Http404("No such alert")
    action = request.POST.get("action", "")
    try:
        alert = services.decide_alert(
            actor=request.user, alert=alert, action=action, note=request.POST.get("note", "")
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"Alert {alert.state}.")
    return redirect("samples:monitors", app=app)
