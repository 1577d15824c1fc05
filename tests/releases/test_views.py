"""Release pages: the approver's inbox, the request page's actions (POST), role checks, the new
request page and the environment history with its rollback form."""

from __future__ import annotations

import pytest
from django.test import Client

from console.audit.models import AuditEvent
from console.registry import services as registry
from console.releases import services
from console.releases.models import Approval, PromotionRequest

pytestmark = pytest.mark.django_db


def client_for(world, who: str) -> Client:
    client = Client()
    client.force_login(world.users[who])
    return client


def base(world) -> str:
    return f"/apps/{world.application.key}/releases/"


@pytest.fixture
def request_(world) -> PromotionRequest:
    world.passing_run(2)
    return services.open_request(
        actor=world.users["engineer"],
        environment=world.prod,
        version=world.versions[2],
        justification="v2 grounds its answers",
    )


def act(world, who: str, request, action: str, **data):
    return client_for(world, who).post(
        f"{base(world)}{request.pk}/act/", {"action": action, **data}, follow=True
    )


def flashes(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_the_inbox_shows_the_request_to_approvers_not_to_the_requester(world, request_):
    page = client_for(world, "approver").get(base(world))
    assert page.status_code == 200
    assert [r.pk for r in page.context["awaiting"]] == [request_.pk]
    html = page.content.decode()
    assert f"#{request_.pk} answer@2 → prod" in html and "✓ policy gates met" in html

    own = client_for(world, "engineer").get(base(world))
    assert own.context["awaiting"] == []
    assert [r.pk for r in own.context["mine"]] == [request_.pk]
    assert "Nothing waits for you." in own.content.decode()
    # Engineers and viewers have nothing to decide; an approver who decided sees it leave.
    assert client_for(world, "viewer").get(base(world)).context["awaiting"] == []
    act(world, "approver", request_, "approve")
    assert client_for(world, "approver").get(base(world)).context["awaiting"] == []
    assert client_for(world, "approver2").get(base(world)).context["awaiting"] == []  # approved


def test_the_detail_page_shows_the_evidence_and_the_right_controls(world, request_):
    url = f"{base(world)}{request_.pk}/"
    approver = client_for(world, "approver").get(url)
    html = approver.content.decode()
    assert approver.context["can_decide"] is True and approver.context["can_apply"] is False
    assert 'value="approve"' in html and 'value="reject"' in html
    assert "golden@1" in html and "policy gates met" in html
    assert "answer@2 × main@1" in html  # the exact bundle that goes live
    assert "release policy v1" in html
    assert approver.context["timeline"][0].action == "promotion.request"
    requester = client_for(world, "engineer").get(url)
    assert requester.context["can_decide"] is False
    assert "You cannot decide on your own request." in requester.content.decode()
    assert 'value="approve"' not in requester.content.decode()


def test_approve_apply_through_the_page(world, request_):
    response = act(world, "approver", request_, "approve", comment="ship it")
    assert response.redirect_chain[-1][0] == f"{base(world)}{request_.pk}/"
    assert flashes(response) == [f"You approved #{request_.pk}."]
    request_.refresh_from_db()
    assert request_.status == PromotionRequest.Status.APPROVED
    page = client_for(world, "engineer").get(f"{base(world)}{request_.pk}/")
    assert "Apply: make answer@2 × main@1 live in prod" in page.content.decode()
    response = act(world, "engineer", request_, "apply")
    assert flashes(response) == ["Applied."]
    assert world.live() == 2
    assert PromotionRequest.objects.get(pk=request_.pk).status == "applied"


def test_reject_needs_a_comment(world, request_):
    response = act(world, "approver", request_, "reject", comment="")
    assert flashes(response) == ["say why you reject it"]
    assert PromotionRequest.objects.get(pk=request_.pk).status == "pending"
    assert not Approval.objects.exists()
    act(world, "approver", request_, "reject", comment="too risky on a Friday")
    assert PromotionRequest.objects.get(pk=request_.pk).status == "rejected"


def test_reconfirm_and_withdraw_through_the_page(world, request_):
    world.passing_run(3)
    world.passing_run(2)  # re-confirming needs evidence against the new baseline too
    # What another applied request does (one open request per prompt, so not through one).
    registry.bind_version(
        actor=world.users["engineer2"],
        environment=world.prod,
        version=world.versions[3],
        via_promotion=True,
    )

    page = client_for(world, "approver").get(f"{base(world)}{request_.pk}/")
    assert "prod changed from v1 to v3 since this was opened" in page.content.decode()
    stale = act(world, "approver", request_, "approve")
    assert "the requester must re-confirm it" in flashes(stale)[0]
    assert flashes(act(world, "engineer2", request_, "reconfirm")) == [
        "Only the requester can re-confirm a request."
    ]
    response = act(world, "engineer", request_, "reconfirm")
    assert flashes(response) == ["Re-confirmed against what is live now; approvals start over."]
    request_.refresh_from_db()
    assert (request_.base_live_version, request_.revision) == (3, 2)
    response = act(world, "engineer", request_, "withdraw")
    assert flashes(response) == ["Withdrawn."]
    assert PromotionRequest.objects.get(pk=request_.pk).status == "withdrawn"


def test_edit_through_the_page_voids_approvals(world, request_):
    act(world, "approver", request_, "approve")
    response = act(world, "engineer", request_, "edit", justification="clearer wording")
    assert flashes(response) == ["Saved. Approvals given so far no longer count."]
    request_.refresh_from_db()
    assert (request_.status, request_.justification) == ("pending", "clearer wording")
    page = client_for(world, "approver").get(f"{base(world)}{request_.pk}/")
    assert "an earlier revision — no longer counts" in page.content.decode()
    assert page.context["can_decide"] is True


@pytest.mark.parametrize("who", ["viewer", "curator"])
def test_viewers_and_curators_cannot_act(world, request_, who):
    assert client_for(world, who).get(f"{base(world)}{request_.pk}/").status_code == 200
    response = act(world, who, request_, "approve")
    assert flashes(response) == ["Only approvers can decide on promotions."]
    act(world, "approver", request_, "approve")
    response = act(world, who, request_, "apply")
    assert flashes(response) == ["The requester or an approver applies a request."]
    assert flashes(act(world, who, request_, "withdraw")) == [
        "Only the requester can withdraw a request."
    ]
    assert flashes(act(world, who, request_, "pause")) == [
        f"Your role in {world.application.name} does not allow this."
    ]
    assert world.live() == 1
    assert Approval.objects.filter(approver=world.users[who]).count() == 0
    url = f"{base(world)}new/?kind=prompt&key=answer&version=3&environment=prod"
    assert client_for(world, who).get(url).status_code == 403


def test_approvers_cannot_open_requests(world):
    url = f"{base(world)}new/?kind=prompt&key=answer&version=2&environment=prod"
    assert client_for(world, "approver").get(url).status_code == 403
    post = client_for(world, "approver").post(
        f"{base(world)}new/",
        {"kind": "prompt", "key": "answer", "version": 2, "environment": "prod",
         "justification": "x"},
    )  # fmt: skip
    assert post.status_code == 403
    assert not PromotionRequest.objects.exists()


def test_the_new_request_page_says_what_evidence_is_missing(world):
    engineer = client_for(world, "engineer")
    url = f"{base(world)}new/?kind=prompt&key=answer&version=2&environment=prod"
    page = engineer.get(url)
    html = page.content.decode()
    assert "This request cannot be submitted yet" in html
    assert "no completed eval of answer@2 × main@1 on golden@1: launch one" in html
    assert 'disabled title="Evidence missing"' in html
    form = {"kind": "prompt", "key": "answer", "version": "2", "environment": "prod"}
    refused = engineer.post(f"{base(world)}new/", {**form, "justification": "please"})
    assert refused.status_code == 200 and not PromotionRequest.objects.exists()
    world.passing_run(2)
    created = engineer.post(
        f"{base(world)}new/", {**form, "justification": "v2 passes"}, follow=True
    )
    request = PromotionRequest.objects.get()
    assert created.redirect_chain[-1][0] == f"{base(world)}{request.pk}/"
    assert flashes(created) == [f"Requested #{request.pk}; approvers have been notified."]
    assert engineer.get(f"{base(world)}new/?kind=prompt&key=nope&version=1&environment=prod")\
        .status_code == 404  # fmt: skip


def test_the_history_page_rolls_back_for_engineers(world, request_):
    services.decide(actor=world.users["approver"], request=request_, decision="approve")
    services.apply(actor=world.users["engineer"], request=request_)
    url = f"{base(world)}history/prod/"
    page = client_for(world, "engineer").get(url)
    html = page.content.decode()
    assert page.status_code == 200
    assert 'aria-label="Version of answer"' in html and '<option value="1">v1</option>' in html
    assert [e.action for e in page.context["events"]][:2] == ["promotion.apply", "prompt.bind"]
    viewer = client_for(world, "viewer")
    assert "Roll back" not in viewer.get(url).content.decode()
    form = {"action": "rollback", "kind": "prompt", "key": "answer", "version": "1"}
    assert viewer.post(url, {**form, "reason": "x"}).status_code == 403
    assert client_for(world, "approver").post(url, {**form, "reason": "x"}).status_code == 403

    missing = client_for(world, "engineer").post(url, {**form, "reason": ""}, follow=True)
    assert flashes(missing) == ["say why you roll back (it goes into the audit log)"]
    never = client_for(world, "engineer").post(
        url, {**form, "version": "3", "reason": "x"}, follow=True
    )
    assert flashes(never) == ["v3 was never live in prod: request a promotion"]
    assert world.live() == 2
    done = client_for(world, "engineer").post(url, {**form, "reason": "v2 regressed"}, follow=True)
    assert flashes(done) == ["Rolled prod back to answer@1."]
    assert world.live() == 1
    assert AuditEvent.objects.get(action="promotion.rollback").reason == "v2 regressed"


def test_a_shadow_in_a_protected_environment_is_a_request(world):
    url = f"{base(world)}history/prod/"
    engineer = client_for(world, "engineer")
    response = engineer.post(
        url, {"action": "shadow", "kind": "prompt", "key": "answer", "version": "3"}
    )
    assert response.status_code == 302
    assert (
        "/releases/new/?kind=prompt&key=answer&version=3&environment=prod&shadow=1"
        in (response["Location"])
    )
    assert not AuditEvent.objects.filter(action__startswith="shadow.").exists()
    page = engineer.get(response["Location"])
    assert "Shadow answer@3 in prod" in page.content.decode()


def test_the_history_page_starts_and_ends_a_shadow(world):
    url = f"{base(world)}history/staging/"
    engineer = client_for(world, "engineer")
    engineer.post(url, {"action": "shadow", "kind": "prompt", "key": "answer", "version": "3"})
    page = engineer.get(url)
    [shadow] = page.context["shadows"]
    assert "answer@3" in page.content.decode()
    engineer.post(url, {"action": "end_shadow", "shadow": shadow.pk})
    assert list(engineer.get(url).context["shadows"]) == []
    assert [e.action for e in AuditEvent.objects.filter(action__startswith="shadow.")] == [
        "shadow.end",
        "shadow.start",
    ]


def test_the_diff_names_the_live_and_proposed_versions(world, request_):
    html = client_for(world, "approver").get(f"{base(world)}{request_.pk}/").content.decode()
    assert '<th colspan="2">v1</th><th colspan="2">v2</th>' in html
