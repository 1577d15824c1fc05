"""403, 404 and 500 render inside the console's layout and say why, in DEBUG and production."""

from __future__ import annotations

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse

from console.accounts.roles import Role
from console.core import errors
from tests.factories import make_application, make_member

LAYOUT = b'class="topbar"'  # templates/base.html's header


@pytest.fixture(params=[False, True], ids=["production", "debug"])
def debug_mode(request, settings):
    settings.DEBUG = request.param
    return request.param


@pytest.mark.django_db
def test_a_role_check_names_the_application_the_role_and_what_it_cannot_do(
    client, member, application, debug_mode
):
    client.force_login(member(Role.VIEWER, "vera"))
    response = client.get(reverse("registry:head_new", args=[application.key, "prompts"]))
    assert response.status_code == 403
    body = response.content.decode()
    assert LAYOUT.decode() in body
    assert (
        f"Your role in {application.name} (viewer) cannot edit prompts, model configs and "
        "flags, rebind environments or launch evals; admins can grant it." in body
    )
    assert "Roles that can: engineer, admin." in body
    # The refused member still has the application's navigation.
    assert reverse("registry:dashboard", args=[application.key]) in body
    assert "403 Forbidden" not in body


@pytest.mark.django_db
def test_an_admin_only_page_says_which_roles_can(client, member, application):
    client.force_login(member(Role.APPROVER, "april"))
    response = client.get(reverse("accounts:members", args=[application.key]))
    assert response.status_code == 403
    body = response.content.decode()
    assert f"Your role in {application.name} (approver) cannot manage members" in body
    assert "Roles that can: admin." in body


@pytest.mark.django_db
def test_the_console_own_not_found_is_friendly_in_debug_too(client, member, debug_mode):
    other = make_application("hidden")
    client.force_login(make_member(other, Role.ADMIN, "owner"))
    client.force_login(member(Role.ADMIN, "outsider"))
    for url in (
        reverse("registry:dashboard", args=["hidden"]),  # exists, not a member
        reverse("registry:dashboard", args=["no-such-app"]),  # does not exist
    ):
        response = client.get(url)
        assert response.status_code == 404
        body = response.content.decode()
        assert LAYOUT.decode() in body and "Not found" in body
        assert "ask an admin of the application to add you" in body
        # Never Django's technical page listing the URL patterns.
        assert "URLconf" not in body and "django-admin/" not in body
    # Not a member and not existing read exactly alike.
    hidden = main(client.get(reverse("registry:dashboard", args=["hidden"])).content)
    missing = main(client.get(reverse("registry:dashboard", args=["no-such-app"])).content)
    assert hidden.replace("hidden", "x") == missing.replace("no-such-app", "x")


def main(content: bytes) -> str:
    """The page's <main> (the header carries a per-response CSRF token)."""
    body = content.decode()
    return body[body.index("<main") : body.index("</main>")]


@pytest.mark.django_db
def test_an_unknown_url_in_production_gets_the_console_page(client, member, settings):
    settings.DEBUG = False
    client.force_login(member(Role.VIEWER, "vic"))
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert LAYOUT in response.content and b"Not found" in response.content
    assert b"URLconf" not in response.content


@pytest.mark.django_db
def test_a_server_error_renders_the_layout_in_production(settings, member):
    settings.DEBUG = False
    settings.ROOT_URLCONF = "tests.core.boom_urls"
    client = Client(raise_request_exception=False)
    client.force_login(member(Role.ADMIN, "ann"))
    response = client.get("/boom/")
    assert response.status_code == 500
    assert LAYOUT in response.content and b"Something went wrong" in response.content
    assert b"the kind of bug" not in response.content


def test_the_500_page_needs_no_database_and_no_context_processors(settings):
    # No django_db mark: any query would fail this test. Context processors that would break
    # are never called, because the page renders without the request.
    settings.TEMPLATES = [
        {
            **settings.TEMPLATES[0],
            "OPTIONS": {
                **settings.TEMPLATES[0]["OPTIONS"],
                "context_processors": ["tests.core.test_error_pages.broken_processor"],
            },
        }
    ]
    response = errors.server_error(RequestFactory().get("/anything/"))
    assert response.status_code == 500
    assert LAYOUT in response.content and b"Something went wrong" in response.content


def broken_processor(request):
    raise AssertionError("the 500 page must not run context processors")
