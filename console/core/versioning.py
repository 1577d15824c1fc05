"""Head + immutable version: the one versioning mechanism every versioned thing uses.

A head is the stable identity (application, key, name) and is mutable; a version is a numbered,
immutable snapshot of canonical JSON content. `save_version` is the only way to add a version:
it locks the head row, refuses a save based on an outdated version (no lost updates), does
nothing when the content equals the latest version, and numbers 1..n without gaps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models, transaction
from django.utils import timezone

from console.core.canonical import content_hash, normalise
from console.core.diff import FieldDiff, diff_contents


class ImmutableVersionError(Exception):
    """Raised on any attempt to change or delete a stored version."""


class VersionQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        raise ImmutableVersionError("versions are immutable; save a new version instead")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise ImmutableVersionError("versions are immutable and cannot be deleted")

    def bulk_update(self, *args: Any, **kwargs: Any) -> int:
        raise ImmutableVersionError("versions are immutable; save a new version instead")

    def bulk_create(self, objs, *args: Any, **kwargs: Any):
        if kwargs.get("update_conflicts"):
            raise ImmutableVersionError("append-only rows cannot be overwritten on conflict")
        return super().bulk_create(objs, *args, **kwargs)


class VersionedHead(models.Model):
    """A versioned thing's stable identity. `latest_number` is the counter the lock protects."""

    key = models.SlugField(max_length=80)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    latest_number = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.key

    @property
    def latest_version(self):
        return self.versions.filter(number=self.latest_number).first()


class Version(models.Model):
    """An immutable, numbered snapshot. Concrete classes add `head = ForeignKey(...)`."""

    number = models.PositiveIntegerField()
    content = models.JSONField()
    content_hash = models.CharField(max_length=64)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    message = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = VersionQuerySet.as_manager()

    class Meta:
        abstract = True
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["head", "number"], name="%(app_label)s_%(class)s_unique_number"
            )
        ]

    def __str__(self) -> str:
        return f"{self.head.key}@{self.number}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ImmutableVersionError("versions are immutable; save a new version instead")
        kwargs["force_insert"] = True  # an explicit pk must never become an UPDATE
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any):
        raise ImmutableVersionError("versions are immutable and cannot be deleted")

    @property
    def label(self) -> str:
        return f"v{self.number}"


V = TypeVar("V", bound=Version)


class VersionConflict(Exception):
    """A save based on version `base` while `latest` already exists.

    Carries what the other person changed (`changes`: base → latest), so the editor can show it
    instead of silently overwriting their work.
    """

    def __init__(self, head: VersionedHead, base: Version | None, latest: Version):
        self.head = head
        self.base = base
        self.latest = latest
        self.changes: list[FieldDiff] = [
            d for d in diff_contents(base.content if base else {}, latest.content) if d.changed
        ]
        who = getattr(latest.author, "username", "someone")
        base_label = f"v{base.number}" if base else "an empty draft"
        fields = ", ".join(d.path for d in self.changes) or "nothing visible"
        super().__init__(
            f"{head.key} changed while you were editing: you started from {base_label}, "
            f"but {who} saved v{latest.number} ({fields}). Review their changes and save again."
        )


@dataclass(frozen=True)
class SaveResult(Generic[V]):
    version: V
    created: bool


SYSTEM_USERNAME = "airlock-system"


def acting_user(actor: Any):
    """The user behind an action, or None when the system or a script acts (an Actor)."""
    return actor if isinstance(actor, get_user_model()) else None


def version_author(actor: Any):
    """The user a version is recorded under: the acting user, or for system actions (budget
    breakers, rollout halts, scripts) a dedicated inactive account that cannot sign in."""
    if getattr(actor, "_meta", None) is not None and getattr(actor, "pk", None):
        return actor
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(
        username=SYSTEM_USERNAME, defaults={"is_active": False}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def version_model(head: VersionedHead) -> type[Version]:
    return head.versions.model


def save_version(
    head: VersionedHead,
    content: dict,
    *,
    author: Any,
    message: str = "",
    base_number: int | None,
) -> SaveResult:
    """Add the next version of `head` unless the content is unchanged.

    `base_number` is the version the author started from (0 or None for a new head). If a newer
    version exists and differs from the submitted content, `VersionConflict` is raised. Must run
    inside the caller's transaction so the audit event lands with the version.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("save_version must run inside transaction.atomic()")
    locked = type(head).objects.select_for_update().get(pk=head.pk)
    model = version_model(head)
    latest = model.objects.filter(head=locked, number=locked.latest_number).first()
    stored = normalise(content)
    digest = content_hash(stored)
    if latest is not None and latest.content_hash == digest:
        return SaveResult(latest, created=False)
    base = base_number or 0
    if latest is not None and base != latest.number:
        base_version = model.objects.filter(head=locked, number=base).first()
        raise VersionConflict(locked, base_version, latest)
    version = model.objects.create(
        head=locked,
        number=locked.latest_number + 1,
        content=stored,
        content_hash=digest,
        parent=latest,
        author=version_author(author),
        message=message,
    )
    now = timezone.now()
    type(head).objects.filter(pk=locked.pk).update(latest_number=version.number, updated_at=now)
    for instance in (head, locked):
        instance.latest_number = version.number
        instance.updated_at = now
    return SaveResult(version, created=True)


@contextmanager
def dated(model: type[models.Model], moment: datetime) -> Iterator[None]:
    """Versions of `model` created inside this block are dated `moment`: for demo seeding and
    tests that need history (an experiment running since yesterday). Single-threaded use only;
    the database still refuses any later edit of the version."""
    field = model._meta.get_field("created_at")
    cached = field.__dict__.get("_get_default")
    field._get_default = lambda: moment  # Field caches its default callable here
    try:
        yield
    finally:
        if cached is None:
            del field.__dict__["_get_default"]
        else:
            field._get_default = cached
