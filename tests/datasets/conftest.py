"""Golden-set fixtures: a curated dataset and clients per role."""

from __future__ import annotations

import pytest
from django.test import Client

from console.accounts.roles import Role
from console.datasets import services
from tests.datasets.helpers import seed


@pytest.fixture
def curator(member):
    return member(Role.CURATOR, "cur")


@pytest.fixture
def viewer(member):
    return member(Role.VIEWER, "view")


@pytest.fixture
def curator_client(client, curator):
    client.force_login(curator)
    return client


@pytest.fixture
def viewer_client(viewer):
    c = Client()
    c.force_login(viewer)
    return c


@pytest.fixture
def second_curator_client(member):
    c = Client()
    c.force_login(member(Role.CURATOR, "cur2"))
    return c


@pytest.fixture
def dataset(application, curator):
    return services.create_dataset(
        actor=curator, application=application, key="golden", name="Golden"
    )


@pytest.fixture
def filled(dataset, curator):
    """A dataset with three known items, all published as v1."""
    seed(
        dataset,
        [
            {
                "id": "refund-1",
                "question": "How long do I have to return an item?",
                "expected_contains": ["30 days"],
                "tags": ["refunds"],
                "variables": {"tier": "gold"},
            },
            {
                "id": "ship-1",
                "question": "How much is standard shipping?",
                "expected_contains": ["$4.99"],
                "tags": ["shipping"],
            },
            {
                "id": "acct-1",
                "question": "How do I reset my password?",
                "expected_contains": ["Forgot password"],
                "tags": ["account", "shipping"],
            },
        ],
        actor=curator,
    )
    services.publish(actor=curator, dataset=dataset, message="first")
    dataset.refresh_from_db()
    return dataset


@pytest.fixture
def fresh(application, curator):
    """fresh(key) → a new empty dataset in the same application."""

    def make(key: str = "fresh"):
        return services.create_dataset(actor=curator, application=application, key=key, name=key)

    return make
