"""Eval pages: run list, launch (with a cost estimate first), live run page, comparison."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from console.accounts.roles import CURATE, ENGINEER
from console.core.permissions import access_application
from console.datasets.models import DatasetVersion
from console.evals import selectors, services
from console.evals.forms import LaunchForm, gates_to_text
from console.evals.metrics import METRICS
from console.evals.models import EvalResult, EvalRun
from console.evals.scorers import DEFAULT_K, DEFAULT_MAX_STEPS, DEFAULT_SCORERS, JUDGED
from console.registry.models import ModelConfigVersion, PromptVersion


def _run(application, pk: int) -> EvalRun:
    run = (
        EvalRun.objects.filter(application=application, pk=pk)
        .select_related(
            "prompt_version__head", "model_version__head", "dataset_version__head", "created_by"
        )
        .first()
    )
    if run is None:
        raise Http404("No such eval run")
    return run


@login_required
@require_GET
def run_list(request: HttpRequest, app: str) -> HttpResponse:
    application = access_application(request, app)
    prompt, model = request.GET.get("prompt", ""), request.GET.get("model", "")
    page = Paginator(selectors.runs(application, prompt=prompt, model=model), 50).get_page(
        request.GET.get("page")
    )
    runs = list(page.object_list)
    for run in runs:
        run.note = selectors.verdict_note(run)
    # Compare picks the newest run (B) against the newest earlier one on the same golden set (A):
    # runs on different golden sets share no items to compare.
    newest = runs[0] if runs else None
    same_set = [r for r in runs[1:] if newest and r.dataset_version_id == newest.dataset_version_id]
    compare_a = (same_set or runs[1:2] or [None])[0]
    return render(
        request,
        "evals/run_list.html",
        {
            "application": application,
            "page": page,
            "prompt": prompt,
            "model": model,
            "compare_a": compare_a.pk if compare_a else None,
        },
    )


def _pick(model, application, pk):
    if not pk or not str(pk).isdigit():
        return None
    return model.objects.filter(head__application=application, pk=pk).select_related("head").first()


def _initial(application, choices, dataset_pk: str | None = None) -> dict:
    """What the launch form starts from: the chosen golden set version (else the first) with its
    gates, the first prompt and model config, and the judge when there is one."""

    def first(name, predicate=lambda label: True):
        return next((v for v, label in choices[name] if v and predicate(label)), "")

    if dataset_pk not in {v for v, _label in choices["dataset_version"]}:
        dataset_pk = first("dataset_version")
    dataset = (
        DatasetVersion.objects.filter(pk=dataset_pk).select_related("head").first()
        if dataset_pk
        else None
    )
    gates, _ = services.default_gates(application, dataset.head if dataset else None)
    initial = {
        "dataset_version": dataset_pk,
        "prompt_version": first("prompt_version", lambda label: not label.startswith("judge-")),
        "model_version": first("model_version", lambda label: not label.startswith("judge")),
        "judge_model_version": first(
            "judge_model_version", lambda label: label.startswith("judge")
        ),
        "judge_faithfulness": first(
            "judge_faithfulness", lambda label: label.startswith("judge-faith")
        ),
        "judge_relevance": first("judge_relevance", lambda label: label.startswith("judge-relev")),
        "gates": gates_to_text(gates),
    }
    # With a judge preselected, measure what the judge is for (the default gates need it).
    if initial["judge_model_version"]:
        initial["scorers"] = [*DEFAULT_SCORERS, *JUDGED]
    return initial


@login_required
def run_new(request: HttpRequest, app: str) -> HttpResponse:
    application = access_application(request, app, ENGINEER)
    choices = selectors.launch_choices(application)
    form = LaunchForm(
        request.POST or None,
        choices=choices,
        initial=_initial(application, choices, request.GET.get("dataset_version")),
        gates_url=reverse("evals:new", args=[application.key]),
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        http = data["target_type"] == "http"
        judge_prompts = {
            metric: _pick(PromptVersion, application, data[f"judge_{metric}"])
            for metric in JUDGED
            if data.get(f"judge_{metric}")
        }
        try:
            run = services.launch_run(
                actor=request.user,
                application=application,
                dataset_version=_pick(DatasetVersion, application, data["dataset_version"]),
                prompt_version=None
                if http
                else _pick(PromptVersion, application, data["prompt_version"]),
                model_version=None
                if http
                else _pick(ModelConfigVersion, application, data["model_version"]),
                http_target={
                    "url": data["http_url"],
                    "answer_path": data["http_answer_path"] or "answer",
                    "sources_path": data["http_sources_path"] or "sources",
                    **(
                        {"context_path": data["http_context_path"]}
                        if data["http_context_path"]
                        else {}
                    ),
                    "tool_calls_path": data["http_tool_calls_path"] or "tool_calls",
                }
                if http
                else None,
                judge_model_version=_pick(
                    ModelConfigVersion, application, data["judge_model_version"]
                ),
                judge_prompts=judge_prompts,
                scorers=data["scorers"],
                scorer_options={
                    "k": data["retrieval_k"] or DEFAULT_K,
                    "max_steps": data["max_steps"] or DEFAULT_MAX_STEPS,
                },
                gates=data["gates"],
                cost_cap=data["cost_cap"],
                concurrency=data["concurrency"],
            )
        except services.DuplicateRun as exc:
            messages.warning(request, str(exc))
            return redirect("evals:run", app=app, pk=exc.run.pk)
        except ValidationError as exc:
            for field, errs in exc.message_dict.items():
                field = "http_url" if field == "http_target" else field
                form.add_error(field if field in form.fields else None, errs)
        else:
            messages.success(request, f"Launched run #{run.pk}.")
            return redirect("evals:run", app=app, pk=run.pk)
    return render(
        request,
        "evals/run_new.html",
        {
            "application": application,
            "form": form,
            "estimate": _estimate(application, form.data or form.initial),
        },
    )


def _estimate(application, data) -> dict | None:
    dataset = _pick(DatasetVersion, application, data.get("dataset_version"))
    if dataset is None:
        return None
    http = data.get("target_type") == "http"
    scorers = data.getlist("scorers") if hasattr(data, "getlist") else data.get("scorers") or []
    return services.estimate(
        prompt_version=None
        if http
        else _pick(PromptVersion, application, data.get("prompt_version")),
        model_version=None
        if http
        else _pick(ModelConfigVersion, application, data.get("model_version")),
        dataset_version=dataset,
        judge_model_version=_pick(ModelConfigVersion, application, data.get("judge_model_version")),
        scorers=scorers,
    )


@login_required
@require_POST
def estimate(request: HttpRequest, app: str) -> HttpResponse:
    application = access_application(request, app, ENGINEER)
    return render(
        request, "evals/run_new.html#estimate", {"estimate": _estimate(application, request.POST)}
    )


@login_required
@require_GET
def run_detail(request: HttpRequest, app: str, pk: int) -> HttpResponse:
    application = access_application(request, app)
    run = _run(application, pk)
    which = request.GET.get("show", "all")
    context = {
        "application": application,
        "run": run,
        "which": which if which in selectors.RESULT_FILTERS else "all",
        "page": selectors.results_page(run, which, request.GET.get("page")),
        "metric_rows": [
            (label, run.metrics[key])
            for key, (label, _higher) in METRICS.items()
            if run.metrics.get(key) is not None
        ],
        **_slice_table(run.metrics.get("slices") or {}),
        "review": selectors.human_review(run) if not run.active else None,
        "can_edit": ENGINEER in request.app_perms,
        "can_review": CURATE in request.app_perms,
    }
    if request.htmx and request.htmx.target == "progress":
        response = render(request, "evals/run_detail.html#progress", context)
        if not run.active:
            response["HX-Refresh"] = "true"  # the run finished: show results and verdict
        return response
    context["golden_sets"] = _golden_sets(request, application)  # for "Add to golden set"
    if request.htmx and request.htmx.target == "results":
        return render(request, "evals/run_detail.html#results", context)
    return render(request, "evals/run_detail.html", context)


@login_required
@require_POST
def result_review(request: HttpRequest, app: str, pk: int, result: int) -> HttpResponse:
    """A person marks one answer pass or fail, with a note (curators, engineers, admins)."""
    application, run, row = _reviewable(request, app, pk, result)
    try:
        revision = int(request.POST.get("base_revision") or 0)
    except ValueError:
        revision = -1  # not a revision anyone saw: reported as a conflict
    error = ""
    try:
        services.review_result(
            actor=request.user,
            result=row,
            verdict=request.POST.get("verdict", ""),
            note=request.POST.get("note", ""),
            base_revision=revision,
        )
    except ValidationError as exc:
        error = " ".join(exc.messages)
    return _review_response(request, application, run, row, error, f"Reviewed item {row.item_id}.")


@login_required
@require_POST
def result_to_item(request: HttpRequest, app: str, pk: int, result: int) -> HttpResponse:
    """A reviewed answer becomes an item of a golden set (curators, engineers, admins)."""
    application, run, row = _reviewable(request, app, pk, result)
    dataset = application.datasets.filter(key=request.POST.get("dataset", "")).first()
    error, done = "", ""
    if dataset is None:
        error = "choose a golden set of this application"
    else:
        try:
            item = services.reviewed_to_item(actor=request.user, result=row, dataset=dataset)
        except ValidationError as exc:
            error = " ".join(exc.messages)
        else:
            done = f"Added to {dataset.name} as {item.item_id}: publish it to use it in runs."
    return _review_response(request, application, run, row, error, done, added=done)


def _reviewable(request: HttpRequest, app: str, pk: int, result: int):
    application = access_application(request, app, CURATE)
    run = _run(application, pk)
    row = EvalResult.objects.select_related("review__reviewer").filter(run=run, pk=result).first()
    if row is None:
        raise Http404("No such result in this run")
    return application, run, row


def _review_response(request, application, run, row, error: str, done: str, added: str = ""):
    """The row's review cell (htmx), or back to the review queue with a message."""
    if request.htmx:
        row = EvalResult.objects.select_related("review__reviewer").get(pk=row.pk)
        context = {
            "application": application,
            "run": run,
            "r": row,
            "can_review": True,
            "golden_sets": _golden_sets(request, application),
            "review_error": error,
            "review_added": added,
        }
        return render(request, "evals/run_detail.html#review", context)
    if error:
        messages.error(request, f"Item {row.item_id}: {error}")
    else:
        messages.success(request, done)
    return redirect(f"{reverse('evals:run', args=[application.key, run.pk])}?show=unreviewed")


def _golden_sets(request: HttpRequest, application) -> list:
    """The golden sets a reviewer may add a reviewed answer to (none for who cannot)."""
    if CURATE not in request.app_perms:
        return []
    return list(application.datasets.order_by("key").values_list("key", "name"))


def _slice_table(slices: dict) -> dict:
    """The run page's "By tag" table: the metrics any slice measured, in METRICS order."""
    keys = [k for k in METRICS if k != "items" and any(k in f for f in slices.values())]
    return {
        "slice_labels": [METRICS[k][0] for k in keys],
        "slice_rows": [
            (tag, figures.get("items"), [figures.get(k) for k in keys])
            for tag, figures in sorted(slices.items())
        ],
    }


@login_required
@require_POST
def run_cancel(request: HttpRequest, app: str, pk: int) -> HttpResponse:
    application = access_application(request, app, ENGINEER)
    try:
        run = services.cancel_run(actor=request.user, run=_run(application, pk))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request,
            f"Run #{pk} cancelled."
            if not run.active
            else f"Cancelling run #{pk}: no new items start.",
        )
    return redirect("evals:run", app=app, pk=pk)


@login_required
@require_GET
def compare(request: HttpRequest, app: str) -> HttpResponse:
    application = access_application(request, app)
    try:
        base = _run(application, int(request.GET.get("a", "")))
        candidate = _run(application, int(request.GET.get("b", "")))
    except ValueError:
        raise Http404("Choose two runs to compare") from None
    context = {
        "application": application,
        "base": base,
        "candidate": candidate,
        "metric_labels": METRICS,
        "can_launch": ENGINEER in request.app_perms,
    }
    if base.dataset_version_id != candidate.dataset_version_id:
        # Items cannot be paired across versions; offer to run A where B ran instead.
        return render(request, "evals/compare.html", context | {"mismatch": True})
    return render(
        request,
        "evals/compare.html",
        context | {"cmp": selectors.cached_comparison(base, candidate)},
    )


def _golden(version: DatasetVersion) -> str:
    return f"{version.head.key} v{version.number}"


@login_required
@require_POST
def rerun(request: HttpRequest, app: str, pk: int) -> HttpResponse:
    """Launch run `pk` again — same target, judge, scorers, gates and limits — on another
    published golden set version (the one a run it is compared with used)."""
    application = access_application(request, app, ENGINEER)
    source = _run(application, pk)
    raw = request.POST.get("dataset_version", "")
    version = _pick(DatasetVersion, application, raw)
    compare_with = request.POST.get("compare_with", "")
    back = (
        redirect(f"{reverse('evals:compare', kwargs={'app': app})}?a={pk}&b={compare_with}")
        if compare_with.isdigit()
        else redirect("evals:run", app=app, pk=pk)
    )
    if version is None:
        messages.error(
            request,
            f"dataset_version: {raw!r} is not a published golden set version of "
            f"{application.name}.",
        )
        return back
    judge_prompts = {
        metric: prompt
        for metric, prompt_pk in (source.judge_prompts or {}).items()
        if (prompt := _pick(PromptVersion, application, prompt_pk)) is not None
    }
    try:
        run = services.launch_run(
            actor=request.user,
            application=application,
            dataset_version=version,
            prompt_version=source.prompt_version,
            model_version=source.model_version,
            http_target=source.http_target or None,
            judge_model_version=source.judge_model_version,
            judge_prompts=judge_prompts,
            scorers=list(source.scorers),
            scorer_options=source.scorer_options,
            gates=source.gates,
            max_error_rate=source.max_error_rate,
            cost_cap=source.cost_cap,
            concurrency=source.concurrency,
        )
    except services.DuplicateRun as exc:
        messages.warning(request, str(exc))
        return redirect("evals:run", app=app, pk=exc.run.pk)
    except ValidationError as exc:
        messages.error(
            request,
            f"Could not re-run #{pk} on {_golden(version)}: " + "; ".join(exc.messages),
        )
        return back
    follow = f" Compare it with #{compare_with} when it finishes." if compare_with.isdigit() else ""
    messages.success(
        request, f"Launched run #{run.pk}: run #{pk}'s set-up on {_golden(version)}.{follow}"
    )
    return redirect("evals:run", app=app, pk=run.pk)
