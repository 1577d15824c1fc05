"""Roles are named bundles of object permissions on an Application (granted with guardian).

This table is the single source of truth for what each role may do; the README's role table and
the URL × role test matrix are written against it.
"""

from django.db import models

# The permission names live in core (registry's views check them without importing accounts).
from console.core.permissions import ADMIN, APPROVE, CURATE, ENGINEER, VIEW


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    CURATOR = "curator", "Curator"
    ENGINEER = "engineer", "Engineer"
    APPROVER = "approver", "Approver"
    ADMIN = "admin", "Admin"


ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    Role.VIEWER: frozenset({VIEW}),
    Role.CURATOR: frozenset({VIEW, CURATE}),
    Role.ENGINEER: frozenset({VIEW, CURATE, ENGINEER}),
    Role.APPROVER: frozenset({VIEW, APPROVE}),
    Role.ADMIN: frozenset({VIEW, CURATE, ENGINEER, APPROVE, ADMIN}),
}

ALL_PERMISSIONS = frozenset().union(*ROLE_PERMISSIONS.values())

# What each permission lets a member do, in the words the 403 page uses:
# "your role in Support Bot (viewer) cannot edit prompts, …; admins can grant it".
PERMISSION_ACTIONS: dict[str, str] = {
    VIEW: "see this application",
    CURATE: "curate golden sets or review eval answers",
    ENGINEER: "edit prompts, model configs and flags, rebind environments or launch evals",
    APPROVE: "approve promotions",
    ADMIN: "manage members, API keys, webhooks and release policies",
}


def roles_with(perm: str) -> list[str]:
    """The roles holding `perm`, in the table's order."""
    return [role for role in Role.values if perm in ROLE_PERMISSIONS[role]]
