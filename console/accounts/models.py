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
