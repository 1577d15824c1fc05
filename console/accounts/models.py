from django.conf import settings
from django.db import models
from django.utils import timezone
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

from console.accounts.roles import Role
from console.registry.models import Application


class Membership(models.Model):
    """A user's role in one application. The permissions themselves live in guardian's
    direct-foreign-key tables below; services keep the two in step in one transaction."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    application = models.ForeignKey(
        Application, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    granted_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["application_id", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["user", "application"], name="membership_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} · {self.role} · {self.application}"


class ApplicationUserObjectPermission(UserObjectPermissionBase):
    """guardian's documented speed-up: a real FK to Application instead of a generic key."""

    content_object = models.ForeignKey(Application, on_delete=models.CASCADE)


class ApplicationGroupObjectPermission(GroupObjectPermissionBase):
    content_object = models.ForeignKey(Application, on_delete=models.CASCADE)


class ApiKeyScope(models.TextChoices):
    CONFIG_READ = "config:read", "Read config and evaluate flags"
    USAGE_WRITE = "usage:write", "Write usage events"
    SAMPLES_WRITE = "samples:write", "Send production samples"


class ApiKey(models.Model):
    """A production application's credential for one environment of one application.

    Only the sha256 of the key is stored; the key itself is shown once, at creation. `prefix`
    (the first characters) lets people tell keys apart without revealing them.
    """

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="api_keys")
    environment = models.ForeignKey(
        "registry.Environment", on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16)
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    rate_limit_per_minute = models.PositiveIntegerField(default=6000)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    # Set when the key was rotated with a grace period: the runtime API honours the key until
    # then, and treats it as unknown (401) from then on, exactly like a revoked key.
    expires_at = models.DateTimeField(null=True, blank=True)
    # The key that took over when this one was rotated.
    replaced_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def active(self) -> bool:
        """Accepted by the runtime API right now: not revoked and not past its expiry."""
        return self.revoked_at is None and not self.expired

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()
