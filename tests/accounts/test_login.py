"""Signing in and out of the console."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import SESSION_KEY
from django.urls import reverse

from console.accounts.roles import Role
from tests.factories import make_member, make_user

pytestmark = pytest.mark.django_db

PASSWORD = "pw-test-12345"  # what tests.factories.make_user sets
LOGIN = "/accounts/login/"
LOGOUT = "/accounts/logout/"


def signed_in_user_id(client) -> str | None:
    return client.session.get(SESSION_KEY)


def test_urls_are_where_the_settings_say():
    assert reverse("accounts:login") == LOGIN
    assert reverse("accounts:logout") == LOGOUT


def test_login_page_renders_a_form(client):
    response = client.get(LOGIN)
    assert response.status_code == 200
    assert next(t.name for t in response.templates) == "accounts/login.html"
    body = response.content.decode()
    assert 'name="username"' in body
    assert 'name="password"' in body
    assert 'name="csrfmiddlewaretoken"' in body


def test_good_credentials_sign_in_and_go_home(client):
    user = make_user("olga")
    response = client.post(LOGIN, {"username": "olga", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == reverse("registry:home")
    assert signed_in_user_id(client) == str(user.pk)
    assert client.get(reverse("registry:home")).status_code == 200


def test_good_credentials_follow_next_inside_the_site(client, application):
    user = make_member(application, Role.VIEWER, "pete")
    target = reverse("registry:dashboard", kwargs={"app": application.key})
    anonymous = client.get(target)
    assert anonymous.status_code == 302
    login_url = anonymous["Location"]
    assert urlsplit(login_url).path == LOGIN
    assert parse_qs(urlsplit(login_url).query) == {"next": [target]}

    response = client.post(login_url, {"username": "pete", "password": PASSWORD, "next": target})
    assert response.status_code == 302
    assert response["Location"] == target
    assert signed_in_user_id(client) == str(user.pk)
    assert client.get(target).status_code == 200


def test_next_pointing_off_site_is_ignored(client):
    make_user("quinn")
    response = client.post(
        LOGIN,
        {"username": "quinn", "password": PASSWORD, "next": "https://evil.example.com/"},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("registry:home")


@pytest.mark.parametrize(
    ("username", "password"),
    [("rosa", "wrong-password"), ("nobody", PASSWORD)],
    ids=["wrong-password", "unknown-user"],
)
def test_bad_credentials_show_an_error(client, username, password):
    make_user("rosa")
    response = client.post(LOGIN, {"username": username, "password": password})
    assert response.status_code == 200
    assert response.context["form"].non_field_errors()
    body = response.content.decode()
    assert "flash-error" in body
    assert "Please enter a correct username and password" in body
    assert SESSION_KEY not in client.session
    assert client.get(reverse("registry:home")).status_code == 302


def test_inactive_user_cannot_sign_in(client):
    user = make_user("sven")
    user.is_active = False
    user.save()
    response = client.post(LOGIN, {"username": "sven", "password": PASSWORD})
    assert response.status_code == 200
    assert SESSION_KEY not in client.session


def test_signed_in_user_visiting_login_is_sent_home(client):
    client.force_login(make_user("tara"))
    response = client.get(LOGIN)
    assert response.status_code == 302
    assert response["Location"] == reverse("registry:home")


def test_logout_is_post_only(client):
    user = make_user("ugo")
    client.force_login(user)
    response = client.get(LOGOUT)
    assert response.status_code == 405
    assert signed_in_user_id(client) == str(user.pk)


def test_logout_signs_out_and_returns_to_login(client):
    client.force_login(make_user("vera"))
    response = client.post(LOGOUT)
    assert response.status_code == 302
    assert response["Location"] == LOGIN
    assert SESSION_KEY not in client.session
    home = client.get(reverse("registry:home"))
    assert home.status_code == 302
    assert urlsplit(home["Location"]).path == LOGIN


def test_logout_needs_the_csrf_token(application):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    user = make_member(application, Role.VIEWER, "walt")
    browser.force_login(user)
    assert browser.post(LOGOUT).status_code == 403
    assert signed_in_user_id(browser) == str(user.pk)

    page = browser.get(reverse("registry:home"))
    token = page.context["csrf_token"]
    assert f'action="{LOGOUT}"' in page.content.decode()
    response = browser.post(LOGOUT, {"csrfmiddlewaretoken": str(token)})
    assert response.status_code == 302
    assert SESSION_KEY not in browser.session
