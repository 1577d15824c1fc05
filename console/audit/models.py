"""The append-only, hash-chained audit log.

`hash = HMAC-SHA256(key, prev_hash + canonical_json(fields))`, the key named by `key_id` and held
outside the database (AIRLOCK_AUDIT_KEYS): editing, deleting or reordering any row breaks the
chain at that row, which `manage.py audit_verify` reports by `seq`, and whoever can write the table
but lacks the key cannot recompute the chain after an edit. Events written before keys existed
have an empty `key_id` and `hash = sha256(prev_hash + canonical_json(fields))`; they verify as
before and the first keyed event chains on from them. A deleted tail leaves a valid (shorter)
chain: anchors published outside the database (`audit_anchor`) catch that.
Application and environment are kept as plain (unconstrained) foreign keys so the log outlives
anything it describes and never cascades.
"""

from datetime import UTC

from django.db import models
from django.utils import timezone

from console.core.versioning import ImmutableVersionError, VersionQuerySet

GENESIS_HASH = "0" * 64


class ActorType(models.TextChoices):
    USER = "user", "User"
    API_KEY = "api_key", "API key"
    SYSTEM = "system", "System"


class AuditEventQuerySet(VersionQuerySet):
    """Same refusals as versions: the log is append-only."""


class AuditEvent(models.Model):
    seq = models.BigIntegerField(primary_key=True)
    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_label = models.CharField(max_length=150)
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=60)
    object_id = models.CharField(max_length=64)
    object_label = models.CharField(max_length=300)
    application = models.ForeignKey(
        "registry.Application",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    environment = models.ForeignKey(
        "registry.Environment",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)
    # Which AIRLOCK_AUDIT_KEYS key signed `hash`; "" for the legacy unkeyed sha256.
    key_id = models.CharField(max_length=32, blank=True, default="")

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-seq"]
        indexes = [
            models.Index(fields=["application", "-seq"], name="audit_app_seq"),
            models.Index(fields=["action", "-seq"], name="audit_action_seq"),
            models.Index(fields=["actor_label", "-seq"], name="audit_actor_seq"),
            models.Index(fields=["object_type", "object_id", "-seq"], name="audit_object_seq"),
            # Prefix searches (LIKE 'x%') need pattern ops on PostgreSQL; other databases
            # ignore opclasses and keep a plain index.
            models.Index(
                fields=["action"], name="audit_action_prefix", opclasses=["varchar_pattern_ops"]
            ),
            models.Index(
                fields=["object_label"],
                name="audit_label_prefix",
                opclasses=["varchar_pattern_ops"],
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.object_label}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ImmutableVersionError("audit events are append-only")
        # Never let Django turn a save with an existing seq into an UPDATE.
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ImmutableVersionError("audit events are append-only")

    def chained_fields(self) -> dict:
        """The fields the hash covers, in a form that reads back identically from any DB."""
        return {
            "seq": self.seq,
            "at": self.at.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor_type": self.actor_type,
            "actor_id": self.actor_id,
            "actor_label": self.actor_label,
            "action": self.action,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "object_label": self.object_label,
            "application_id": self.application_id,
            "environment_id": self.environment_id,
            "before": self.before,
            "after": self.after,
            "reason": self.reason,
            "request_id": self.request_id,
            "ip": self.ip,
        }
