"""The release policy page: everyone reads it, admins change it; loosening a protected
environment becomes a request another admin approves, tightening applies at once, and bad input
is named by field and leaves the policy as it was."""

from __future__ import annotations

import pytest
from django.test import Client

from console.accounts.roles import Role
from console.releases import policies
from console.releases.models import PromotionRequest
from tests.factories import make_member

pytestmark = pytest.mark.django_db


def page(world) -> str:
    return f"/apps/{world.application.key}/releases/policy/prod/"


def form(world, **changes) -> dict:
    content, number = policies.current(world.prod)
    data = {k: v for k, v in policies_form(content, number).items() if v is not False}
    data.update(changes)
    return {k: ("on" if v is True else v) for k, v in data.items() if v is not False}


def policies_form(content, number):
    from console.releases.forms import PolicyForm

    return PolicyForm.initial_from(content, number)


def as_(world, who: str) -> Client:
    client = Client()
    client.force_login(world.users[who])
    return client


def test_everyone_reads_the_policy_only_admins_change_it(world):
    html = as_(world, "viewer").get(page(world)).content.decode()
    assert "Release policy of prod" in html and "pass_rate &gt;= 0.8" in html
    assert "Change the policy" not in html
    assert as_(world, "engineer").post(page(world), form(world, protected=False)).status_code == 403
    assert world.prod.protected


def test_tightening_applies_at_once_and_loosening_waits_for_another_admin(world):
    admin = as_(world, "admin")
    response = admin.post(page(world), form(world, gates="pass_rate >= 0.9", message="stricter"))
    assert response.status_code == 302 and response["Location"].endswith("/policy/prod/")
    content, number = policies.current(world.prod)
    assert number == 2 and content["gates"][0]["threshold"] == 0.9
    response = admin.post(page(world), form(world, required_approvals="1", eval_gate=False))
    request = PromotionRequest.objects.get(kind=PromotionRequest.Kind.POLICY)
    assert response["Location"].endswith(f"/releases/{request.pk}/")
    assert policies.current(world.prod)[1] == 2 and world.prod.eval_gate_required
    detail = as_(world, "admin").get(response["Location"]).content.decode()
    assert "turns the eval gate off" in detail
    assert "<td><code>eval_gate</code></td><td>yes</td><td>no</td>" in detail
    admin2 = make_member(world.application, Role.ADMIN, "adm2")
    other = Client()
    other.force_login(admin2)
    # The approver's inbox does not offer it (they cannot decide it); another admin's does.
    inbox = f"/apps/{world.application.key}/releases/"
    as_approver = as_(world, "approver").get(response["Location"]).content.decode()
    assert "Only another admin decides on a release policy change." in as_approver
    assert 'value="approve"' not in as_approver
    assert request not in as_(world, "approver").get(inbox).context["awaiting"]
    assert request in other.get(inbox).context["awaiting"]
    other.post(f"{inbox}{request.pk}/act/", {"action": "approve"})
    other.post(f"{inbox}{request.pk}/act/", {"action": "apply"})
    world.prod.refresh_from_db()
    assert not world.prod.eval_gate_required
    assert policies.current(world.prod)[1] == 3


def test_bad_input_names_the_field_and_changes_nothing(world):
    before = policies.current(world.prod)
    response = as_(world, "admin").post(
        page(world), form(world, gates="pass_rate at least 0.9", datasets="golden nosuch")
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "line 1: “pass_rate at least 0.9”" in html
    assert policies.current(world.prod) == before
    response = as_(world, "admin").post(page(world), form(world, datasets="golden nosuch"))
    assert "no golden set nosuch in this application" in response.content.decode()
    response = as_(world, "admin").post(page(world), form(world, breakers="nosuch:big"))
    assert "is not &lt;flag&gt;:&lt;variant&gt; of a flag here" in response.content.decode()
    assert policies.current(world.prod) == before
