"""Golden sets: a working draft of items, published as immutable numbered versions.

A published version is a DatasetVersion (the versioning core) whose content is a small
manifest summary; its items are PublishedItem rows pointing at content-addressed, immutable
ItemSnapshots, so republishing 10,000 items stores only the ones that changed.
Items keep a stable `item_id` across versions so eval results compare item by item.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone

from console.core.versioning import ImmutableVersionError, Version, VersionedHead, VersionQuerySet
from console.datasets.cells import ToolChip, tool_chips
from console.registry.models import Application


class Dataset(VersionedHead):
    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="datasets")

    class Meta:
        ordering = ["key"]
        constraints = [
            models.UniqueConstraint(fields=["application", "key"], name="dataset_unique_key")
        ]


class DatasetVersion(Version):
    """content: {"count": n, "digest": sha256 over (item_id, snapshot hash) in order}"""

    head = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="versions")

    class Meta(Version.Meta):
        pass


class ItemSnapshot(models.Model):
    """One item's content at publish time, stored once per distinct content."""

    content_hash = models.CharField(max_length=64, unique=True)
    content = models.JSONField()

    objects = VersionQuerySet.as_manager()

    def __str__(self) -> str:
        return self.content_hash[:12]

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ImmutableVersionError("item snapshots are immutable")
        super().save(*args, **kwargs)


class PublishedItem(models.Model):
    version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="items")
    item_id = models.CharField(max_length=64)
    position = models.PositiveIntegerField()
    snapshot = models.ForeignKey(ItemSnapshot, on_delete=models.PROTECT, related_name="+")

    objects = VersionQuerySet.as_manager()

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["version", "item_id"], name="publisheditem_unique_id")
        ]
        indexes = [models.Index(fields=["version", "position"], name="publisheditem_pos")]

    def __str__(self) -> str:
        return f"{self.version_id}:{self.item_id}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ImmutableVersionError("published items are immutable")
        super().save(*args, **kwargs)


class DatasetItem(models.Model):
    """An item of the working draft. `revision` guards inline edits against lost updates;
    `published_hash` is the item's hash in the latest published version (None if new)."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="draft_items")
    item_id = models.CharField(max_length=64)
    # Display and publish order. Items added in the editor go first (below the lowest
    # position, so it may be negative), imports append, duplicates follow their original.
    position = models.IntegerField(default=0)
    question = models.TextField()
    variables = models.JSONField(default=dict, blank=True)
    expected_contains = models.JSONField(default=list, blank=True)
    expected_not_contains = models.JSONField(default=list, blank=True)
    expected_sources = models.JSONField(default=list, blank=True)
    expected_tools = models.JSONField(default=list, blank=True)  # console.datasets.tools
    reference_answer = models.TextField(blank=True)
    unanswerable = models.BooleanField(default=False)
    tags = models.JSONField(default=list, blank=True)
    tags_text = models.CharField(max_length=1000, blank=True, db_index=False)
    note = models.TextField(blank=True)
    content_hash = models.CharField(max_length=64)
    published_hash = models.CharField(max_length=64, null=True, blank=True)
    revision = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "item_id"], name="datasetitem_unique_id")
        ]
        indexes = [models.Index(fields=["dataset", "position"], name="datasetitem_pos")]

    def __str__(self) -> str:
        return self.item_id

    @property
    def changed_since_published(self) -> bool:
        return self.published_hash != self.content_hash

    @property
    def tool_chips(self) -> list[ToolChip]:
        return tool_chips(self.expected_tools)


class ImportJob(models.Model):
    """A large import runs in Celery; the editor polls this row for progress and the report."""

    class Status(models.TextChoices):
        PENDING = "pending"
        VALIDATING = "validating"
        VALIDATED = "validated"  # preview ready, waiting for the curator to apply
        APPLYING = "applying"
        DONE = "done"
        FAILED = "failed"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="import_jobs")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    applied_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True, blank=True)  # when a worker took it up
    filename = models.CharField(max_length=255)
    fmt = models.CharField(max_length=8)
    mode = models.CharField(max_length=8, default="merge")
    data = models.BinaryField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    total_rows = models.PositiveIntegerField(default=0)
    processed_rows = models.PositiveIntegerField(default=0)
    report = models.JSONField(default=dict, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"import {self.filename} ({self.status})"

    @property
    def percent(self) -> int:
        return int(100 * self.processed_rows / self.total_rows) if self.total_rows else 0
