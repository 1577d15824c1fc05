"""One word for each thing, and "just now" rather than "0 minutes ago", on every page."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from console.accounts.roles import Role
from console.datasets import services as datasets
from console.registry import services as registry
from console.registry.kinds import PROMPT
from tests.factories import PROMPT_CONTENT, make_prompt

TEMPLATES = Path(settings.BASE_DIR) / "templates"


def test_relative_times_all_go_through_the_ago_partial():
    # _ago.html says "just now" for under a minute; a bare |timesince says "0 minutes ago".
    offenders = [
        str(path.relative_to(TEMPLATES))
        for path in TEMPLATES.rglob("*.html")
        if path.name != "_ago.html" and "|timesince" in path.read_text()
    ]
    assert offenders == []


def test_versions_are_diffed_and_eval_runs_compared():
    # "Diff" is what two versions of a record have; "Compare" is what two eval runs have.
    diff_pages = ["registry/diff.html", "flags/diff.html", "datasets/diff.html"]
    for name in [*diff_pages, "registry/head_detail.html", "datasets/versions.html"]:
        text = (TEMPLATES / name).read_text()
        assert not re.search(r">\s*Compare\b|\bCompare <", text), name
    assert ">Compare" not in (TEMPLATES / "registry/head_detail.html").read_text()
    assert re.search(r">Diff\b", (TEMPLATES / "evals/compare.html").read_text()) is None


@pytest.mark.django_db
def test_a_fresh_golden_set_was_updated_just_now(client, member, application):
    user = member(Role.CURATOR, "cora")
    datasets.create_dataset(actor=user, application=application, key="fresh", name="Fresh")
    client.force_login(user)
    body = client.get(reverse("datasets:list", args=[application.key])).content.decode()
    assert "just now" in body and "0 minutes" not in body


@pytest.mark.django_db
def test_the_diff_page_says_diff(client, member, application):
    user = member(Role.ENGINEER, "eve")
    head = make_prompt(application, user)
    content = copy.deepcopy(PROMPT_CONTENT) | {"user": "Q: {{ question }}"}
    registry.save_head_version(
        actor=user, head=head, content=content, base_number=head.latest_number
    )
    client.force_login(user)
    url = reverse("registry:diff", args=[application.key, PROMPT.slug, head.key])
    response = client.get(url, {"a": 1, "b": 2})
    assert response.status_code == 200
    body = response.content.decode()
    assert '<button class="btn small">Diff</button>' in body and ">Compare<" not in body
    detail = client.get(
        reverse("registry:head_detail", args=[application.key, "prompts", head.key])
    )
    assert ">Compare <" not in detail.content.decode()
