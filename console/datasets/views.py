"""Golden-set pages: list, inline editor (htmx cells), import with preview, publish, diff."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget

from console.accounts.roles import CURATE
from console.audit.selectors import events_for_object
from console.core.canonical import canonical_json, loads
from console.core.jsoninput import JSONInputError
from console.core.permissions import access_application
from console.datasets import io as dataset_io
from console.datasets import safety, selectors, services
from console.datasets.cells import from_text, to_text
from console.datasets.forms import DatasetForm, ImportForm, PublishForm
from console.datasets.items import CONTENT_FIELDS, FIELDS, ItemError
from console.datasets.models import Dataset, DatasetItem, DatasetVersion, ImportJob

MAX_UPLOAD_BYTES = 100 * 1024 * 1024
COLUMNS = [
    ("question", "Question"),
    ("expected_contains", "Expected facts"),
    ("expected_not_contains", "Must not say"),
    ("expected_sources", "Sources"),
    ("expected_tools", "Tool calls"),
    ("reference_answer", "Reference answer"),
    ("variables", "Variables"),
    ("unanswerable", "Unanswerable"),
    ("tags", "Tags"),
    ("note", "Note"),
]
LABELS = dict(COLUMNS)


def _dataset(request: HttpRequest, app: str, key: str, perm: str | None = None) -> Dataset:
    application = access_application(request, app, perm)
    dataset = Dataset.objects.filter(application=application, key=key).first()
    if dataset is None:
        raise Http404("No such dataset")
    dataset.application = application
    return dataset


def _item(dataset: Dataset, item_id: str) -> DatasetItem:
    item = dataset.draft_items.select_related("updated_by").filter(item_id=item_id).first()
    if item is None:
        raise Http404("No such item (it may have been deleted)")
    return item


def _version(dataset: Dataset, number) -> DatasetVersion:
    try:
        number = int(number)
    except (TypeError, ValueError):
        raise Http404("Version numbers are integers") from None
    version = (
        DatasetVersion.objects.filter(head=dataset, number=number).select_related("author").first()
    )
    if version is None:
        raise Http404(f"{dataset.key} has no version {number}")
    return version


def _errors(exc: ValidationError) -> str:
    """A refusal as one line that names each field: `variables: "foo" is not …`."""
    if hasattr(exc, "error_dict"):
        named = exc.message_dict.items()
        return "; ".join(f"{name}: {msg}" for name, msgs in named for msg in msgs)
    return "; ".join(exc.messages)


# ---------------------------------------------------------------- list and create


@login_required
@require_GET
def dataset_list(request: HttpRequest, app: str) -> HttpResponse:
    application = access_application(request, app)
    datasets = list(application.datasets.order_by("key"))
    counts = selectors.draft_counts(application)
    for dataset in datasets:
        dataset.counts = counts.get(dataset.pk, {"items": 0, "changed": 0})
    return render(request, "datasets/list.html", {"application": application, "datasets": datasets})


@login_required
def dataset_new(request: HttpRequest, app: str) -> HttpResponse:
    application = access_application(request, app, CURATE)
    form = DatasetForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            dataset = services.create_dataset(
                actor=request.user, application=application, **form.cleaned_data
            )
        except ValidationError as exc:
            for field, errs in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errs)
        else:
            return redirect("datasets:editor", app=app, key=dataset.key)
    templates = [(key, t, safety.case_count(key)) for key, t in safety.TEMPLATES.items()]
    return render(
        request,
        "datasets/new.html",
        {"application": application, "form": form, "safety_templates": templates},
    )


# ---------------------------------------------------------------- editor


@login_required
@require_GET
def editor(request: HttpRequest, app: str, key: str) -> HttpResponse:
    dataset = _dataset(request, app, key)
    filters = selectors.ItemFilters.from_query(request.GET)
    page = selectors.draft_page(dataset, filters, request.GET.get("page"))
    context = {
        "application": dataset.application,
        "dataset": dataset,
        "page": page,
        "filters": filters,
        "columns": COLUMNS,
        "can_edit": CURATE in request.app_perms,
        "latest": selectors.latest_version(dataset),
    }
    if request.htmx and request.htmx.target == "items":
        return render(request, "datasets/editor.html#items", context)
    context["tags"] = selectors.all_tags(dataset)
    context["variable_gaps"] = selectors.prompt_variable_gaps(dataset)
    context["history"] = events_for_object(object_type="dataset", object_id=dataset.pk, limit=10)
    return render(request, "datasets/editor.html", context)


@login_required
@require_GET
def variable_gaps(request: HttpRequest, app: str, key: str) -> HttpResponse:
    """The prompt-variables warning, refreshed after each edit."""
    dataset = _dataset(request, app, key)
    return render(
        request,
        "datasets/editor.html#variable_gaps",
        {
            "application": dataset.application,
            "dataset": dataset,
            "variable_gaps": selectors.prompt_variable_gaps(dataset),
        },
    )


@login_required
@require_GET
def hints(request: HttpRequest, app: str, key: str) -> HttpResponse:
    dataset = _dataset(request, app, key)
    return render(
        request,
        "datasets/editor.html#hints",
        {
            "application": dataset.application,
            "dataset": dataset,
            "hints": selectors.quality_hints(dataset),
        },
    )


def _cell_context(dataset: Dataset, item: DatasetItem, field: str, **extra) -> dict:
    value = getattr(item, field)
    return {
        "application": dataset.application,
        "dataset": dataset,
        "item": item,
        "field": field,
        "label": LABELS[field],
        "value": value,
        "text": to_text(field, value),
        "base": canonical_json(value),
        "can_edit": True,
        **extra,
    }


@login_required
def cell(request: HttpRequest, app: str, key: str, item_id: str, field: str) -> HttpResponse:
    """One cell of the editor: GET shows it (?edit=1 opens the editor), POST saves it."""
    if field not in CONTENT_FIELDS:
        raise Http404("No such column")
    dataset = _dataset(
        request, app, key, CURATE if request.method == "POST" or request.GET.get("edit") else None
    )
    item = _item(dataset, item_id)
    if request.method == "GET":
        template = (
            "datasets/editor.html#cell_edit"
            if request.GET.get("edit")
            else "datasets/editor.html#cell"
        )
        return render(
            request,
            template,
            _cell_context(dataset, item, field, can_edit=CURATE in request.app_perms),
        )
    if request.method != "POST":
        return HttpResponse(status=405)
    text = request.POST.get("value", "")
    try:
        base = loads(request.POST.get("base", "null"))
    except JSONInputError:
        base = None  # no usable base: the save is checked against the current value
    try:
        saved = services.update_item_field(
            actor=request.user, item=item, field_name=field, value=from_text(field, text), base=base
        )
    except (ItemError, ValidationError) as exc:
        error = str(exc) if isinstance(exc, ItemError) else _errors(exc)
        context = _cell_context(dataset, item, field, error=error)
        context["text"] = text  # keep what the curator typed
        context["base"] = request.POST.get("base", "")
        return render(request, "datasets/editor.html#cell_edit", context)
    except services.ItemConflict as exc:
        context = _cell_context(
            dataset, exc.item, field, conflict=exc, theirs=to_text(field, exc.current)
        )
        context["text"] = text  # keep mine; the new base makes the next save deliberate
        return render(request, "datasets/editor.html#cell_edit", context)
    response = render(request, "datasets/editor.html#cell", _cell_context(dataset, saved, field))
    response["HX-Trigger"] = "dataset-changed"
    return response


@login_required
@require_POST
def item_add(request: HttpRequest, app: str, key: str) -> HttpResponse:
    dataset = _dataset(request, app, key, CURATE)
    try:
        item = services.add_item(
            actor=request.user,
            dataset=dataset,
            values={
                "question": request.POST.get("question", ""),
                "tags": request.POST.getlist("tags") or None,
            },
        )
    except ValidationError as exc:
        response = render(request, "datasets/editor.html#add_error", {"error": _errors(exc)})
        return reswap(retarget(response, "#add-error"), "innerHTML")
    if not _showing_first_page(request):
        # The new item is first in the unfiltered draft: show it there rather than on top of
        # a page or a filter it does not belong to (a reload would then move it).
        messages.success(request, f"Added {item.item_id} at the top of the golden set.")
        return HttpResponseClientRedirect(
            reverse("datasets:editor", kwargs={"app": app, "key": key})
        )
    response = render(request, "datasets/editor.html#row", _row_context(request, dataset, item))
    response["HX-Trigger"] = "dataset-changed"
    return response


def _showing_first_page(request: HttpRequest) -> bool:
    """Whether the editor page that sent an htmx request shows the first page, unfiltered."""
    current = request.headers.get("HX-Current-URL", "")
    query = parse_qs(urlsplit(current).query)
    filters = selectors.ItemFilters.from_query({k: v[-1] for k, v in query.items()})
    first = query.get("page", ["1"])[-1] in {"", "1"}
    return first and not (filters.q or filters.tag or filters.changed)


def _row_context(request, dataset: Dataset, item: DatasetItem) -> dict:
    return {
        "application": dataset.application,
        "dataset": dataset,
        "item": item,
        "columns": COLUMNS,
        "can_edit": CURATE in request.app_perms,
        "fresh": True,
    }


@login_required
@require_POST
def item_duplicate(request: HttpRequest, app: str, key: str, item_id: str) -> HttpResponse:
    dataset = _dataset(request, app, key, CURATE)
    copy = services.duplicate_item(actor=request.user, item=_item(dataset, item_id))
    response = render(request, "datasets/editor.html#row", _row_context(request, dataset, copy))
    response["HX-Trigger"] = "dataset-changed"
    return response


@login_required
@require_POST
def bulk(request: HttpRequest, app: str, key: str) -> HttpResponse:
    dataset = _dataset(request, app, key, CURATE)
    ids = request.POST.getlist("ids")
    action = request.POST.get("action")
    try:
        if not ids:
            raise ValidationError("Select at least one item first.")
        if action == "delete":
            n = services.delete_items(actor=request.user, dataset=dataset, item_ids=ids)
            messages.success(request, f"Deleted {n} item{'s' if n != 1 else ''}.")
        elif action in {"tag", "untag"}:
            tag = request.POST.get("tag", "").strip()
            if not tag:
                raise ValidationError("Type a tag to add or remove.")
            n = services.tag_items(
                actor=request.user, dataset=dataset, item_ids=ids, tag=tag, remove=action == "untag"
            )
            verb = "Removed" if action == "untag" else "Added"
            messages.success(request, f"{verb} tag “{tag}” on {n} item{'s' if n != 1 else ''}.")
        else:
            raise ValidationError("Unknown bulk action.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    target = reverse("datasets:editor", kwargs={"app": app, "key": key})
    query = request.POST.get("return_query", "")
    return redirect(f"{target}?{query}" if query else target)


# ---------------------------------------------------------------- import / export


@login_required
def import_start(request: HttpRequest, app: str, key: str) -> HttpResponse:
    dataset = _dataset(request, app, key, CURATE)
    form = ImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        if upload.size > MAX_UPLOAD_BYTES:
            form.add_error(
                "file", f"the file is {upload.size:,} bytes; the limit is {MAX_UPLOAD_BYTES:,}"
            )
        else:
            job = services.start_import_job(
                actor=request.user,
                dataset=dataset,
                data=upload.read(),
                filename=upload.name,
                fmt=form.cleaned_data["format"] or None,
                mode=form.cleaned_data["mode"],
            )
            return redirect("datasets:import_job", app=app, key=key, job=job.pk)
    return render(
        request,
        "datasets/import.html",
        {"application": dataset.application, "dataset": dataset, "form": form, "fields": FIELDS},
    )


@login_required
def import_job(request: HttpRequest, app: str, key: str, job: int) -> HttpResponse:
    dataset = _dataset(request, app, key, CURATE)
    record = ImportJob.objects.filter(dataset=dataset, pk=job).first()
    if record is None:
        raise Http404("No such import")
    if request.method == "POST":
        try:
            record = services.confirm_import_job(actor=request.user, job=record)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        return redirect("datasets:import_job", app=app, key=key, job=record.pk)
    context = {"application": dataset.application, "dataset": dataset, "job": record}
    template = "datasets/import_job.html#status" if request.htmx else "datasets/import_job.html"
    return render(request, template, context)


@login_required
@require_GET
def export(request: HttpRequest, app: str, key: str) -> HttpResponse:
    dataset = _dataset(request, app, key)
    fmt = request.GET.get("format", "csv")
    if fmt not in dataset_io.FORMATS:
        return HttpResponse("format must be csv or jsonl", status=400, content_type="text/plain")
    version_param = request.GET.get("version")
    if version_param:
        version = _version(dataset, version_param)
        items, suffix = selectors.version_items(version), f"v{version.number}"
    else:
        items, suffix = selectors.draft_export_items(dataset), "draft"
    content_type = "text/csv" if fmt == "csv" else "application/x-ndjson"
    response = StreamingHttpResponse(dataset_io.export_lines(items, fmt), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{dataset.key}-{suffix}.{fmt}"'
    return response


# ---------------------------------------------------------------- publish / versions / diff


@login_required
def publish(request: HttpRequest, app: str, key: str) -> HttpResponse:
    dataset = _dataset(request, app, key, CURATE)
    form = PublishForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            version = services.publish(
                actor=request.user, dataset=dataset, message=form.cleaned_data["message"]
            )
        except ValidationError as exc:
            form.add_error(None, exc.messages)
        else:
            if version is None:
                messages.info(request, "Nothing to publish: the draft equals the latest version.")
            else:
                messages.success(request, f"Published {dataset.key} v{version.number}.")
            return redirect("datasets:editor", app=app, key=key)
    latest = selectors.latest_version(dataset)
    diff, changes = selectors.detailed_diff(dataset, latest, None)
    return render(
        request,
        "datasets/publish.html",
        {
            "application": dataset.application,
            "dataset": dataset,
            "form": form,
            "latest": latest,
            "diff": diff,
            "changes": changes,
            "labels": LABELS,
        },
    )


@login_required
@require_GET
def versions(request: HttpRequest, app: str, key: str) -> HttpResponse:
    dataset = _dataset(request, app, key)
    rows = list(
        DatasetVersion.objects.filter(head=dataset).select_related("author").order_by("-number")
    )
    return render(
        request,
        "datasets/versions.html",
        {"application": dataset.application, "dataset": dataset, "versions": rows},
    )


@login_required
@require_GET
def version_detail(request: HttpRequest, app: str, key: str, number: int) -> HttpResponse:
    """A published version's items as a read-only table, a page at a time."""
    dataset = _dataset(request, app, key)
    version = _version(dataset, number)
    q = (request.GET.get("q") or "").strip()[:200]
    page = selectors.version_page(version, q, request.GET.get("page"))
    return render(
        request,
        "datasets/version.html",
        {
            "application": dataset.application,
            "dataset": dataset,
            "version": version,
            "page": page,
            "q": q,
            "columns": COLUMNS,
            "is_latest": version.number == dataset.latest_number,
        },
    )


@login_required
@require_GET
def diff(request: HttpRequest, app: str, key: str) -> HttpResponse:
    dataset = _dataset(request, app, key)
    b_param = request.GET.get("b") or str(dataset.latest_number)
    new = None if b_param == "draft" else _version(dataset, b_param)
    default_a = (new.number - 1) if new is not None else dataset.latest_number
    a_param = request.GET.get("a") or str(default_a)
    old = _version(dataset, a_param) if a_param not in {"0", ""} else None
    manifest, changes = selectors.detailed_diff(dataset, old, new)
    numbers = list(
        DatasetVersion.objects.filter(head=dataset)
        .order_by("-number")
        .values_list("number", flat=True)
    )
    return render(
        request,
        "datasets/diff.html",
        {
            "application": dataset.application,
            "dataset": dataset,
            "old": old,
            "new": new,
            "diff": manifest,
            "changes": changes,
            "numbers": numbers,
            "labels": LABELS,
            "now": timezone.now(),
        },
    )
