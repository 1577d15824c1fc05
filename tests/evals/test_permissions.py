"""Role × URL matrix for every route in console/evals/urls.py: viewers read, engineers and admins
launch and cancel, curators and approvers cannot, non-members get 404, anonymous users log in."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from console.accounts.roles import Role
from console.datasets.models import DatasetItem
from console.evals import services, urls
from console.evals.models import EvalRun, ResultReview
from tests.evals.helpers import answered_result, publish_items, reviewed_result
from tests.factories import make_member, make_model_config, make_prompt, make_user

pytestmark = pytest.mark.django_db

READ, WRITE, REVIEW = "read", "write", "review"
# route name → (method, kind)
ROUTES = {
    "runs": ("get", READ),
    "run": ("get", READ),
    "compare": ("get", READ),
    "new": ("get", WRITE),
    "new:post": ("post", WRITE),
    "estimate": ("post", WRITE),
    "cancel": ("post", WRITE),
    "rerun": ("post", WRITE),
    "review": ("post", REVIEW),  # marking an answer pass/fail is curation
    "review_to_item": ("post", REVIEW),  # so is making a reviewed answer a golden-set item
}
ROLES = [Role.VIEWER, Role.CURATOR, Role.ENGINEER, Role.APPROVER, Role.ADMIN]
WRITERS = {Role.ENGINEER, Role.ADMIN}
REVIEWERS = {Role.CURATOR, Role.ENGINEER, Role.ADMIN}
WHO = [*ROLES, "non-member", "anonymous"]


def test_the_matrix_covers_every_route():
    names = {p.name for p in urls.urlpatterns}
    assert names == {name.split(":")[0] for name in ROUTES}


@pytest.fixture
def world(application, engineer):
    prompt = make_prompt(application, engineer).versions.get()
    model = make_model_config(application, engineer).versions.get()
    _, version = publish_items(
        application,
        engineer,
        "golden",
        [{"id": "a", "question": "How long to return?", "expected_contains": ["30 days"]}],
    )
    kwargs = {
        "actor": engineer,
        "application": application,
        "dataset_version": version,
        "prompt_version": prompt,
        "model_version": model,
    }
    _, other_version = publish_items(
        application, engineer, "golden-next", [{"id": "b", "question": "Do you ship abroad?"}]
    )
    first = services.launch_run(**kwargs)
    second = services.launch_run(**{**kwargs, "scorers": ["contains_all"]})
    post = {
        "target_type": "prompt_model",
        "dataset_version": str(version.pk),
        "prompt_version": str(prompt.pk),
        "model_version": str(model.pk),
        "scorers": ["contains_all", "refusal"],
        "gates": "pass_rate >= 0.5",
    }
    rerun = {"dataset_version": str(other_version.pk)}
    return {"app": application, "runs": (first, second), "post": post, "rerun": rerun}


def url_for(name: str, world) -> str:
    app = world["app"].key
    first, second = world["runs"]
    route = name.split(":")[0]
    if route in {"run", "cancel"}:
        return reverse(f"evals:{route}", kwargs={"app": app, "pk": second.pk})
    if route == "rerun":
        return reverse("evals:rerun", kwargs={"app": app, "pk": first.pk})
    if route == "review":
        answer = answered_result(first)
        return reverse("evals:review", kwargs={"app": app, "pk": first.pk, "result": answer.pk})
    if route == "review_to_item":
        answer = reviewed_result(first)
        return reverse(
            "evals:review_to_item", kwargs={"app": app, "pk": first.pk, "result": answer.pk}
        )
    url = reverse(f"evals:{route}", kwargs={"app": app})
    if route == "compare":
        url += f"?a={first.pk}&b={second.pk}"
    return url


def client_for(who: str, application) -> Client:
    client = Client()
    if who == "anonymous":
        return client
    username = f"u-{who}"
    user = make_user(username) if who == "non-member" else make_member(application, who, username)
    client.force_login(user)
    return client


def expected(who: str, name: str) -> int:
    _, kind = ROUTES[name]
    if who == "anonymous":
        return 302
    if who == "non-member":
        return 404
    if kind == REVIEW:
        return 302 if who in REVIEWERS else 403
    if kind == READ or who in WRITERS:
        return 302 if name in {"new:post", "cancel", "rerun"} else 200
    return 403


@pytest.mark.parametrize("name", list(ROUTES))
@pytest.mark.parametrize("who", WHO)
def test_role_matrix(who, name, world):
    client = client_for(who, world["app"])
    method, _ = ROUTES[name]
    url = url_for(name, world)
    before = (EvalRun.objects.count(), world["runs"][1].status)
    if method == "get":
        response = client.get(url)
    else:
        data = {
            "new:post": world["post"],
            "rerun": world["rerun"],
            "review": {"verdict": "fail"},
            "review_to_item": {"dataset": world["runs"][0].dataset_version.head.key},
        }
        data = data.get(name, {})
        response = client.post(url, data)
    assert response.status_code == expected(who, name), (who, name, response.status_code)
    if who == "anonymous":
        assert response["Location"].startswith(reverse("accounts:login"))
    second = EvalRun.objects.get(pk=world["runs"][1].pk)
    if who in WRITERS and name in {"new:post", "rerun"}:
        run = EvalRun.objects.order_by("-pk").first()
        assert EvalRun.objects.count() == before[0] + 1
        assert run.created_by.username == f"u-{who}"
        assert response["Location"] == reverse(
            "evals:run", kwargs={"app": world["app"].key, "pk": run.pk}
        )
    elif who in WRITERS and name == "cancel":
        assert second.status == EvalRun.Status.CANCELLED
    elif who in REVIEWERS and name == "review":
        review = ResultReview.objects.get()
        assert (review.verdict, review.reviewer.username) == ("fail", f"u-{who}")
    elif name == "review_to_item":
        added = DatasetItem.objects.filter(item_id__startswith="rev")
        assert added.count() == (1 if who in REVIEWERS else 0)
        assert (EvalRun.objects.count(), second.status) == before
    else:
        # Nobody else changed anything.
        assert (EvalRun.objects.count(), second.status) == before
        assert not ResultReview.objects.exists()
