"""Sign-in throttling over HTTP, in production mode: one lockout per identity however it is
spelled, a limit per address whatever usernames it tries, and the Django admin's sign-in behind
the same throttle. Counts live in the shared cache."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import SESSION_KEY
from django.test import Client

from tests.factories import make_user

pytestmark = pytest.mark.django_db

PASSWORD = "pw-test-12345"  # what tests.factories.make_user sets
LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/django-admin/login/"
ATTACKER = "198.51.100.7"
LOCKED = re.compile(r"Too many failed sign-ins\. Try again in (\d+) minutes?\.")


@pytest.fixture
def limits(production):
    production.LOGIN_FAILURE_LIMIT = 5
    production.LOGIN_ADDRESS_FAILURE_LIMIT = 12
    production.LOGIN_FAILURE_WINDOW_S = 15 * 60
    return production


def browser(address: str = ATTACKER) -> Client:
    return Client(REMOTE_ADDR=address)


def sign_in(client: Client, username: str, password: str, url: str = LOGIN):
    return client.post(url, {"username": username, "password": password}, secure=True)


def fail(client: Client, username: str, times: int, url: str = LOGIN) -> None:
    for _ in range(times):
        response = sign_in(client, username, "wrong-password", url)
        assert response.status_code == 200, "still counting, not yet locked"


def assert_refused(response, client: Client, status: int = 429) -> None:
    assert response.status_code == status
    body = response.content.decode()
    match = LOCKED.search(body)
    assert match, body[-2000:]
    assert 1 <= int(match.group(1)) <= 15
    assert SESSION_KEY not in client.session


def assert_signed_in(response, client: Client, user) -> None:
    assert response.status_code == 302, response.content.decode()[-1500:]
    assert client.session.get(SESSION_KEY) == str(user.pk)


# --- one identity, however it is spelled --------------------------------------------------------


def test_locked_out_username_is_refused_even_with_the_right_password(limits):
    make_user("curator")
    client = browser()
    fail(client, "curator", 5)
    assert_refused(sign_in(client, "curator", PASSWORD), client)


@pytest.mark.parametrize(
    "spelling",
    ["ｃurator", "ＣＵＲＡＴＯＲ", "Curator", " curator "],
    ids=["fullwidth-c", "fullwidth-upper", "capitalised", "padded"],
)
def test_another_spelling_of_a_locked_out_username_is_refused(limits, spelling):
    make_user("curator")
    client = browser()
    fail(client, "curator", 5)
    assert_refused(sign_in(client, spelling, PASSWORD), client)


def test_failures_under_other_spellings_count_towards_one_lockout(limits):
    make_user("curator")
    client = browser()
    for spelling in ["ｃurator", "CURATOR", "curator", "ｃｕｒａｔｏｒ", "Curator"]:
        assert sign_in(client, spelling, "wrong-password").status_code == 200
    assert_refused(sign_in(client, "curator", PASSWORD), client)


def test_the_owner_at_another_address_is_not_locked_out_by_an_attacker(limits):
    curator = make_user("curator")
    fail(browser(), "curator", 5)
    owner = browser("203.0.113.20")
    assert_signed_in(sign_in(owner, "curator", PASSWORD), owner, curator)


def test_a_right_password_before_the_limit_clears_the_count(limits):
    curator = make_user("curator")
    client = browser()
    fail(client, "curator", 4)
    assert_signed_in(sign_in(client, "curator", PASSWORD), client, curator)
    client.logout()
    fail(client, "curator", 4)
    assert_signed_in(sign_in(client, "curator", PASSWORD), client, curator)


# --- one address, whatever usernames it tries -------------------------------------------------


def test_an_address_spraying_many_usernames_is_locked_out(limits):
    victim = make_user("victim")
    client = browser()
    for i in range(12):  # a few guesses each at many usernames, under the per-name limit
        assert sign_in(client, f"user{i % 4}", "wrong-password").status_code == 200
    assert_refused(sign_in(client, "victim", PASSWORD), client)
    elsewhere = browser("203.0.113.21")
    assert_signed_in(sign_in(elsewhere, "victim", PASSWORD), elsewhere, victim)


# --- the Django admin's sign-in ---------------------------------------------------------------


@pytest.fixture
def staff():
    user = make_user("root")
    user.is_staff = user.is_superuser = True
    user.save()
    return user


def test_admin_login_is_throttled(limits, staff):
    client = browser()
    fail(client, "root", 5, url=ADMIN_LOGIN)
    response = sign_in(client, "root", PASSWORD, url=ADMIN_LOGIN)
    assert_refused(response, client, status=200)  # the admin's own page shows the error
    assert client.get("/django-admin/", secure=True).status_code == 302


def test_admin_login_is_throttled_for_other_spellings_too(limits, staff):
    client = browser()
    fail(client, "root", 5, url=ADMIN_LOGIN)
    assert_refused(sign_in(client, "ｒoot", PASSWORD, url=ADMIN_LOGIN), client, status=200)


def test_console_and_admin_share_one_count(limits, staff):
    client = browser()
    fail(client, "root", 3)
    fail(client, "root", 2, url=ADMIN_LOGIN)
    assert_refused(sign_in(client, "root", PASSWORD), client)
    assert_refused(sign_in(client, "root", PASSWORD, url=ADMIN_LOGIN), client, status=200)


def test_admin_login_still_works_for_staff(limits, staff):
    client = browser()
    response = sign_in(client, "root", PASSWORD, url=ADMIN_LOGIN)
    assert_signed_in(response, client, staff)
