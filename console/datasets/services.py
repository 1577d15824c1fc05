"""Golden-set writes: draft edits, imports and publishing — each audited, each all-or-nothing."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Min, Q
from django.utils import timezone

from console.audit import services as audit
from console.core.canonical import canonical_json
from console.core.versioning import save_version
from console.datasets import io as dataset_io
from console.datasets import safety
from console.datasets.items import (
    CONTENT_FIELDS,
    ItemError,
    clean_field,
    clean_item,
    item_content,
    item_hash,
    new_item_id,
    tags_text,
)
from console.datasets.models import (
    Dataset,
    DatasetItem,
    DatasetVersion,
    ImportJob,
    ItemSnapshot,
    PublishedItem,
)
from console.registry.models import Application

BATCH = 1000
EDIT_FIELDS = [*CONTENT_FIELDS, "content_hash", "tags_text", "updated_at", "updated_by", "revision"]


class ItemConflict(Exception):
    """The cell changed since the editor opened it; carries the value now stored."""

    def __init__(self, item: DatasetItem, field_name: str, current: Any):
        self.item = item
        self.field = field_name
        self.current = current
        who = item.updated_by.get_username() if item.updated_by_id else "someone"
        super().__init__(
            f"{who} changed {field_name} of {item.item_id} while you were editing; "
            "their value is shown — edit again to replace it."
        )


def _label(dataset: Dataset) -> str:
    return f"{dataset.application.key}/{dataset.key}"


def _stamp(item: DatasetItem, actor) -> None:
    item.content_hash = item_hash(item_content(item))
    item.tags_text = tags_text(item.tags)
    item.updated_at = timezone.now()
    item.updated_by = actor if getattr(actor, "pk", None) else None


def create_dataset(
    *,
    actor,
    application: Application,
    key: str,
    name: str,
    description: str = "",
    templates: list[str] | tuple[str, ...] = (),
    variables: dict | None = None,
) -> Dataset:
    """A new golden set, empty or holding the cases of the chosen safety templates (see
    add_safety_cases): both land, or neither does."""
    with transaction.atomic():
        dataset = Dataset(application=application, key=key, name=name, description=description)
        dataset.full_clean(validate_constraints=False)
        try:
            with transaction.atomic():
                dataset.save()
        except IntegrityError:
            raise ValidationError({"key": f"Dataset {key!r} already exists"}) from None
        audit.record(
            actor=actor, action="dataset.create", obj=dataset, object_label=_label(dataset),
            application=application, after={"key": key, "name": name},
        )  # fmt: skip
        if templates:
            add_safety_cases(actor=actor, dataset=dataset, templates=templates, variables=variables)
    return dataset


def add_safety_cases(
    *,
    actor,
    dataset: Dataset,
    templates: list[str] | tuple[str, ...],
    variables: dict | None = None,
) -> dict:
    """Merge the cases of built-in safety templates (console.datasets.safety) into the draft, as
    one import: ids are stable, so adding a template again updates its cases instead of doubling
    them. `variables` (e.g. what the application's prompt needs, {"customer_tier": "standard"})
    go into every case; a case's own variables win."""
    unknown = [key for key in templates if key not in safety.TEMPLATES]
    if unknown or not templates:
        raise ValidationError(
            {"templates": f"choose from: {', '.join(safety.TEMPLATES)}" + (
                f" (not {', '.join(map(repr, unknown))})" if unknown else ""
            )}
        )  # fmt: skip
    try:
        extra = clean_field("variables", variables or {})
    except ItemError as exc:
        raise ValidationError({"variables": exc.message}) from None
    rows = []
    for key in dict.fromkeys(templates):
        for case in safety.cases(key):
            content, errors = clean_item({**case, "variables": {**extra, **case["variables"]}})
            if errors:  # the templates are built in: a problem here is a bug, not bad input
                raise ValueError(f"safety template {key}: {errors[0]}")
            rows.append(dataset_io.Row(len(rows) + 1, content.pop("id"), content))
    return apply_import(
        actor=actor, dataset=dataset, rows=rows, mode="merge",
        filename=f"safety templates: {', '.join(dict.fromkeys(templates))}",
    )  # fmt: skip


def add_item(
    *, actor, dataset: Dataset, values: dict, after: DatasetItem | None = None
) -> DatasetItem:
    """Add one item to the draft; `values` uses the import field names.

    The item goes first in the draft, where the editor shows a newly added row, or straight
    after `after` (a duplicate sits under its original): the position is stored, so the row
    stays where it appeared when the page is reloaded."""
    content, errors = clean_item(values)
    if errors:
        raise ValidationError({e.field: e.message for e in errors})
    with transaction.atomic():
        item_id = content.pop("id") or new_item_id()
        if after is None:
            first = dataset.draft_items.aggregate(m=Min("position"))["m"]
            position = 1 if first is None else first - 1
        else:
            # Make room in one statement: everything shown after `after` moves down by two,
            # so the new item fits between even when positions tie (ties order by id).
            dataset.draft_items.filter(
                Q(position__gt=after.position) | Q(position=after.position, pk__gt=after.pk)
            ).update(position=F("position") + 2)
            position = after.position + 1
        item = DatasetItem(dataset=dataset, item_id=item_id, position=position, **content)
        _stamp(item, actor)
        try:
            with transaction.atomic():
                item.save()
        except IntegrityError:
            raise ValidationError({"id": f"an item with id {item_id!r} already exists"}) from None
        audit.record(
            actor=actor, action="dataset.item.create", obj=dataset,
            object_label=f"{_label(dataset)}#{item.item_id}", application=dataset.application_id,
            after={"item_id": item.item_id, **item_content(item)},
        )  # fmt: skip
    return item


def duplicate_item(*, actor, item: DatasetItem) -> DatasetItem:
    values = {"id": "", **item_content(item)}
    return add_item(actor=actor, dataset=item.dataset, values=values, after=item)


def update_item_field(
    *, actor, item: DatasetItem, field_name: str, value: Any, base: Any
) -> DatasetItem:
    """Change one cell. `base` is the value the editor started from: if the stored value
    differs, someone else saved first and ItemConflict is raised instead of overwriting."""
    if field_name not in CONTENT_FIELDS:
        raise ValidationError({field_name: "is not an editable field"})
    try:
        cleaned = clean_field(field_name, value)
    except ItemError as exc:
        raise ValidationError({exc.field: exc.message}) from None
    with transaction.atomic():
        # Lock only the item row: PostgreSQL refuses FOR UPDATE across the nullable joins.
        locked = (
            DatasetItem.objects.select_for_update(of=("self",))
            .select_related("updated_by", "dataset__application")
            .get(pk=item.pk)
        )
        current = getattr(locked, field_name)
        if canonical_json(current) == canonical_json(cleaned):
            return locked
        if canonical_json(current) != canonical_json(base):
            raise ItemConflict(locked, field_name, current)
        setattr(locked, field_name, cleaned)
        _stamp(locked, actor)
        locked.revision += 1
        locked.save()
        audit.record(
            actor=actor, action="dataset.item.update", obj=locked.dataset,
            object_label=f"{_label(locked.dataset)}#{locked.item_id}",
            application=locked.dataset.application_id,
            before={field_name: current}, after={field_name: cleaned},
        )  # fmt: skip
    return locked


def delete_items(*, actor, dataset: Dataset, item_ids: list[str]) -> int:
    with transaction.atomic():
        qs = dataset.draft_items.filter(item_id__in=item_ids)
        found = sorted(qs.values_list("item_id", flat=True))
        if not found:
            return 0
        qs.delete()
        audit.record(
            actor=actor, action="dataset.item.delete", obj=dataset, object_label=_label(dataset),
            application=dataset.application_id, before={"item_ids": found},
        )  # fmt: skip
    return len(found)


def tag_items(
    *, actor, dataset: Dataset, item_ids: list[str], tag: str, remove: bool = False
) -> int:
    """Add (or remove) one tag on the selected items, as one audited change."""
    try:
        (tag,) = clean_field("tags", [tag])
    except (ItemError, ValueError):
        raise ValidationError({"tags": f"{tag!r} is not a tag (a-z, 0-9, - and _)"}) from None
    with transaction.atomic():
        items = list(dataset.draft_items.select_for_update().filter(item_id__in=item_ids))
        changed = []
        for item in items:
            tags = set(item.tags)
            (tags.discard if remove else tags.add)(tag)
            if sorted(tags) != item.tags:
                item.tags = sorted(tags)
                _stamp(item, actor)
                item.revision += 1
                changed.append(item)
        DatasetItem.objects.bulk_update(
            changed,
            ["tags", "tags_text", "content_hash", "updated_at", "updated_by", "revision"],
            batch_size=BATCH,
        )
        if changed:
            audit.record(
                actor=actor, action="dataset.items.untag" if remove else "dataset.items.tag",
                obj=dataset, object_label=_label(dataset), application=dataset.application_id,
                after={"tag": tag, "item_ids": [i.item_id for i in changed]},
            )  # fmt: skip
    return len(changed)


# ---------------------------------------------------------------- import


@dataclass
class ImportPlan:
    """What applying a parsed file would do to the draft (the preview step)."""

    added: list[dataset_io.Row] = field(default_factory=list)
    changed: list[tuple[dataset_io.Row, DatasetItem | None]] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)

    @property
    def summary(self) -> dict:
        return {
            "added": len(self.added),
            "changed": len(self.changed),
            "unchanged": self.unchanged,
            "removed": len(self.removed),
        }


def _partial_bases(dataset: Dataset, rows: list[dataset_io.Row]) -> dict[str, dict]:
    """Stored content of the items that rows give only some fields for."""
    ids = [r.item_id for r in rows if r.item_id and r.provided != frozenset(CONTENT_FIELDS)]
    bases: dict[str, dict] = {}
    for start in range(0, len(ids), BATCH):
        chunk = dataset.draft_items.filter(item_id__in=ids[start : start + BATCH])
        for row in chunk.values("item_id", *CONTENT_FIELDS):
            bases[row.pop("item_id")] = row
    return bases


def merged_content(row: dataset_io.Row, base: dict | None) -> dict:
    """The item's content after the row: fields the file did not give keep their value."""
    if base is None:
        return row.content
    return {**base, **{name: row.content[name] for name in row.provided}}


def plan_import(dataset: Dataset, rows: list[dataset_io.Row], mode: str = "merge") -> ImportPlan:
    """Merge updates only the fields a file gives; replace makes the draft exactly the file
    (missing columns mean empty fields, missing items are removed)."""
    if mode == "replace":
        rows = [replace(r, provided=frozenset(CONTENT_FIELDS)) for r in rows]
    existing = dict(dataset.draft_items.values_list("item_id", "content_hash"))
    bases = _partial_bases(dataset, rows)
    plan = ImportPlan()
    for row in rows:
        if not row.item_id or row.item_id not in existing:
            plan.added.append(row)
        elif existing[row.item_id] != item_hash(merged_content(row, bases.get(row.item_id))):
            plan.changed.append((row, None))
        else:
            plan.unchanged += 1
    if mode == "replace":
        in_file = {r.item_id for r in rows if r.item_id}
        plan.removed = sorted(set(existing) - in_file)
    return plan


class ImportRejected(Exception):
    def __init__(self, problems: list[dataset_io.Problem], truncated: bool = False):
        self.problems = problems
        self.truncated = truncated
        first = problems[0] if problems else "no rows"
        super().__init__(f"{len(problems)} problem(s); first: {first}")


def apply_import(
    *, actor, dataset: Dataset, rows: list[dataset_io.Row], mode: str, filename: str
) -> dict:
    """Apply parsed rows in one transaction: all rows land, or none do."""
    if mode not in {"merge", "replace"}:
        raise ValidationError({"mode": "must be merge or replace"})
    with transaction.atomic():
        Dataset.objects.select_for_update().get(pk=dataset.pk)
        plan = plan_import(dataset, rows, mode)
        now = timezone.now()
        user = actor if getattr(actor, "pk", None) else None
        position = dataset.draft_items.aggregate(m=Max("position"))["m"] or 0
        new_items = []
        for row in plan.added:
            position += 1
            item = DatasetItem(
                dataset=dataset, item_id=row.item_id or new_item_id(), position=position,
                updated_at=now, updated_by=user, **row.content,
            )  # fmt: skip
            item.content_hash = item_hash(row.content)
            item.tags_text = tags_text(item.tags)
            new_items.append(item)
        DatasetItem.objects.bulk_create(new_items, batch_size=BATCH)
        changed_rows = {row.item_id: row for row, _ in plan.changed}
        ids = list(changed_rows)
        for start in range(0, len(ids), BATCH):
            batch = list(dataset.draft_items.filter(item_id__in=ids[start : start + BATCH]))
            for item in batch:
                row = changed_rows[item.item_id]
                for name in row.provided:
                    setattr(item, name, row.content[name])
                item.content_hash = item_hash(item_content(item))
                item.tags_text = tags_text(item.tags)
                item.updated_at, item.updated_by = now, user
                item.revision += 1
            DatasetItem.objects.bulk_update(batch, EDIT_FIELDS)
        for start in range(0, len(plan.removed), BATCH):
            dataset.draft_items.filter(item_id__in=plan.removed[start : start + BATCH]).delete()
        summary = plan.summary
        audit.record(
            actor=actor, action="dataset.import", obj=dataset, object_label=_label(dataset),
            application=dataset.application_id,
            after={"file": filename, "mode": mode, **summary},
        )  # fmt: skip
    return summary


def import_file(
    *, actor, dataset: Dataset, data: bytes, filename: str, fmt: str | None = None,
    mode: str = "merge", progress=None,
) -> dict:  # fmt: skip
    """Parse, validate and apply a file; ImportRejected (changing nothing) on any problem."""
    parsed = dataset_io.parse(data, dataset_io.detect_format(filename, fmt), progress=progress)
    if not parsed.ok:
        raise ImportRejected(parsed.problems, parsed.truncated)
    if not parsed.rows:
        raise ImportRejected([dataset_io.Problem(1, "(file)", "the file has no items")])
    return apply_import(
        actor=actor, dataset=dataset, rows=parsed.rows, mode=mode, filename=filename
    )


SYNC_IMPORT_BYTES = 512 * 1024  # smaller files are validated and applied within the request


def start_import_job(
    *, actor, dataset: Dataset, data: bytes, filename: str, fmt: str | None, mode: str
) -> ImportJob:
    """Store an uploaded file and validate it: in the request when small, else in Celery.

    Nothing changes in the draft until the curator has seen the preview and applies it.
    """
    if mode not in {"merge", "replace"}:
        raise ValidationError({"mode": "must be merge or replace"})
    job = ImportJob.objects.create(
        dataset=dataset, created_by=actor, filename=filename[:255],
        fmt=dataset_io.detect_format(filename, fmt), mode=mode, data=data,
    )  # fmt: skip
    _dispatch(job, apply=False)
    return job


def confirm_import_job(*, actor, job: ImportJob) -> ImportJob:
    """Apply a validated import; the change is recorded as the person who applied it."""
    ready = ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.VALIDATED)
    if not ready.update(applied_by=actor if getattr(actor, "pk", None) else None):
        job.refresh_from_db()
        raise ValidationError(
            {"job": f"this import is {job.get_status_display()}, not ready to apply"}
        )
    job.refresh_from_db()
    _dispatch(job, apply=True)
    job.refresh_from_db()
    return job


def _dispatch(job: ImportJob, *, apply: bool) -> None:
    if len(job.data) <= SYNC_IMPORT_BYTES:
        run_import_job(job.pk, apply=apply)
        return
    from console.datasets.tasks import run_import

    transaction.on_commit(lambda: run_import.delay(job.pk, apply))


STALE_CLAIM = timedelta(minutes=10)


def _claim(job: ImportJob, expected: str, new: str) -> bool:
    """Move the job from `expected` to `new`; False if another run holds it. A claim older
    than STALE_CLAIM belongs to a worker that died, so a redelivered task takes it over."""
    now = timezone.now()
    free = Q(status=expected) | Q(status=new, claimed_at__lt=now - STALE_CLAIM)
    return bool(ImportJob.objects.filter(free, pk=job.pk).update(status=new, claimed_at=now))


def run_import_job(job_id: int, *, apply: bool) -> ImportJob:
    """Validate (preview) or apply a stored import. Safe to run twice: a redelivered task
    finds the job already claimed and does nothing; one that crashes marks the job failed."""
    job = ImportJob.objects.select_related("dataset__application", "created_by", "applied_by").get(
        pk=job_id
    )
    ready, working = (
        (ImportJob.Status.VALIDATED, ImportJob.Status.APPLYING)
        if apply
        else (ImportJob.Status.PENDING, ImportJob.Status.VALIDATING)
    )
    if not _claim(job, ready, working):
        return job
    try:
        update = _run(job, apply)
    except Exception as exc:
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.FAILED,
            report={"problems": [{"line": 0, "field": "(import)", "message": f"stopped: {exc}"}]},
            finished_at=timezone.now(),
        )
        raise
    except BaseException:
        # The worker is going away (shutdown, lost): hand the job back so the redelivered
        # task starts it again. A hard kill leaves the claim to expire (STALE_CLAIM).
        ImportJob.objects.filter(pk=job.pk, status=working).update(status=ready, claimed_at=None)
        raise
    ImportJob.objects.filter(pk=job.pk).update(**update)
    job.refresh_from_db()
    return job


def _run(job: ImportJob, apply: bool) -> dict[str, Any]:
    data = bytes(job.data)
    ImportJob.objects.filter(pk=job.pk).update(
        total_rows=max(data.count(b"\n"), 1), processed_rows=0
    )

    def progress(done: int) -> None:
        ImportJob.objects.filter(pk=job.pk).update(processed_rows=done)

    parsed = dataset_io.parse(data, job.fmt, progress=progress)
    if not parsed.rows and parsed.ok:
        parsed.problems.append(dataset_io.Problem(1, "(file)", "the file has no items"))
    update: dict[str, Any]
    if not parsed.ok:
        update = {
            "status": ImportJob.Status.FAILED,
            "report": {
                "problems": [p.as_dict() for p in parsed.problems],
                "truncated": parsed.truncated,
            },
            "finished_at": timezone.now(),
            "data": b"",
        }
    elif apply:
        summary = apply_import(
            actor=job.applied_by or job.created_by,
            dataset=job.dataset,
            rows=parsed.rows,
            mode=job.mode,
            filename=job.filename,
        )
        update = {
            "status": ImportJob.Status.DONE,
            "report": {**job.report, "applied": summary},
            "finished_at": timezone.now(),
            "data": b"",
        }
    else:
        plan = plan_import(job.dataset, parsed.rows, job.mode)
        update = {
            "status": ImportJob.Status.VALIDATED,
            "report": {
                "plan": plan.summary,
                "rows": len(parsed.rows),
                "sample_added": [r.content["question"] for r in plan.added[:5]],
                "sample_changed": [r.item_id for r, _ in plan.changed[:5]],
                "sample_removed": plan.removed[:5],
            },
        }
    update["processed_rows"] = len(parsed.rows)
    return update


# ---------------------------------------------------------------- publish


def _digest(pairs: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for item_id, digest in pairs:
        h.update(f"{item_id}:{digest}\n".encode())
    return h.hexdigest()


def publish(*, actor, dataset: Dataset, message: str) -> DatasetVersion | None:
    """Freeze the draft as the next immutable version; None when nothing changed."""
    if not message.strip():
        raise ValidationError({"message": "say what changed in this version"})
    with transaction.atomic():
        # Publishing always builds on the latest version, read under the head's lock: the
        # draft is shared, so there is no "stale base" to conflict with.
        latest = Dataset.objects.select_for_update().get(pk=dataset.pk).latest_number
        items = list(
            dataset.draft_items.order_by("position", "id").values(
                "item_id", "content_hash", *CONTENT_FIELDS
            )
        )
        if not items:
            raise ValidationError({"items": "an empty golden set cannot be published"})
        pairs = [(i["item_id"], i["content_hash"]) for i in items]
        result = save_version(
            dataset, {"count": len(items), "digest": _digest(pairs)}, author=actor,
            message=message, base_number=latest,
        )  # fmt: skip
        if not result.created:
            return None
        version = result.version
        snapshot_ids = _ensure_snapshots(items)
        PublishedItem.objects.bulk_create(
            [
                PublishedItem(
                    version=version,
                    item_id=i["item_id"],
                    position=n,
                    snapshot_id=snapshot_ids[i["content_hash"]],
                )
                for n, i in enumerate(items, start=1)
            ],
            batch_size=BATCH,
        )
        previous = version.parent
        from console.datasets.selectors import version_diff_summary

        summary = version_diff_summary(previous, version)
        dataset.draft_items.update(published_hash=F("content_hash"))
        audit.record(
            actor=actor, action="dataset.publish", obj=dataset,
            object_label=f"{_label(dataset)}@{version.number}", application=dataset.application_id,
            after={"version": version.number, "count": len(items), **summary}, reason=message,
        )  # fmt: skip
    return version


def _ensure_snapshots(items: list[dict]) -> dict[str, int]:
    by_hash = {i["content_hash"]: {k: i[k] for k in CONTENT_FIELDS} for i in items}
    hashes = list(by_hash)
    ids: dict[str, int] = {}
    for start in range(0, len(hashes), BATCH):
        chunk = hashes[start : start + BATCH]
        ids.update(
            ItemSnapshot.objects.filter(content_hash__in=chunk).values_list("content_hash", "id")
        )
    missing = [h for h in hashes if h not in ids]
    ItemSnapshot.objects.bulk_create(
        [ItemSnapshot(content_hash=h, content=by_hash[h]) for h in missing],
        batch_size=BATCH,
        ignore_conflicts=True,
    )
    for start in range(0, len(missing), BATCH):
        chunk = missing[start : start + BATCH]
        ids.update(
            ItemSnapshot.objects.filter(content_hash__in=chunk).values_list("content_hash", "id")
        )
    return ids
