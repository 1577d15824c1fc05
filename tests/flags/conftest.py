from __future__ import annotations

import pytest
from django.test import Client

from console.accounts.roles import Role
from tests.flags.helpers import make_flag


@pytest.fixture
def flag(application, engineer):
    return make_flag(application, engineer)


@pytest.fixture
def viewer_client(member):
    client = Client()
    client.force_login(member(Role.VIEWER, "watcher"))
    return client


@pytest.fixture
def outsider_client(db):
    from tests.factories import make_application, make_member

    other = make_application("elsewhere")
    client = Client()
    client.force_login(make_member(other, Role.ADMIN, "stranger"))
    return client
