"""Who may see and do what, per application (object permissions via django-guardian).

`access_application` is the one door every view goes through: an application the user is not a
member of is "not found" (404), exactly like one that does not exist, so nobody learns about an
application they do not belong to; a member lacking the permission gets "forbidden" (403).
"""

from __future__ import annotations

from django.apps import apps
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest
from guardian.shortcuts import get_objects_for_user, get_user_perms

# The object permissions on an Application (declared on registry.Application's Meta). Views of
# every app name them from here; console.accounts.roles bundles them into roles.
VIEW = "view_application"
CURATE = "curate_application"
ENGINEER = "engineer_application"
APPROVE = "approve_application"
ADMIN = "admin_application"


class ApplicationPermissionDenied(PermissionDenied):
    """A member of `application` whose role lacks `perm`: the 403 page names both (and the
    member's role), so the refusal explains itself and says who can change it."""

    def __init__(self, application, perm: str):
        super().__init__(f"Your role in {application.name} does not allow this.")
        self.application = application
        self.perm = perm


def application_model():
    return apps.get_model("registry", "Application")


def user_applications(user) -> QuerySet:
    """Applications the user is a member of (any role), one query."""
    model = application_model()
    if not user.is_authenticated:
        return model.objects.none()
    return get_objects_for_user(
        user, f"registry.{VIEW}", klass=model, accept_global_perms=False, with_superuser=False
    )


def application_perms(user, application) -> frozenset[str]:
    if not user.is_authenticated:
        return frozenset()
    # The user's own grants only: guardian's get_perms() would hand a superuser everything,
    # and membership — not the superuser flag — decides who sees an application.
    return frozenset(get_user_perms(user, application))


def access_application(request: HttpRequest, key: str, perm: str | None = None):
    """Return the application `key` for this request's user, or raise 404/403.

    Caches the permission set on the request as `request.app_perms` for templates.
    """
    application = application_model().objects.filter(key=key).first()
    if application is None:
        raise Http404("No such application")
    perms = application_perms(request.user, application)
    if VIEW not in perms:
        raise Http404("No such application")
    # Set before the permission check too: a refused member still sees the application's
    # navigation on the 403 page, which is theirs to see.
    request.application = application
    request.app_perms = perms
    if perm is not None and perm not in perms:
        raise ApplicationPermissionDenied(application, perm)
    return application
