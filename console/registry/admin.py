from django.contrib import admin

from console.registry import models


@admin.register(models.Application)
class ApplicationAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "created_at"]


@admin.register(models.Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    list_display = ["application", "key", "order", "protected", "required_approvals"]
    list_select_related = ["application"]
