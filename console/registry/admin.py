from django.contrib import admin

from console.registry import models


@admin.register(models.Application)
class ApplicationAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "created_at"]


@admin.register(models.Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    """Read-only policy fields: an environment's protection changes through its release policy
    (versioned, audited, four-eyes for loosening), never through the Django admin."""

    list_display = ["application", "key", "order", "protected", "required_approvals"]
    list_select_related = ["application"]
    readonly_fields = ["protected", "required_approvals", "eval_gate_required"]
