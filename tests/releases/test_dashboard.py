"""The application dashboard's release panels: kill switches that are on, staged rollouts and
shadows per environment (each linking to its page), and the promotions awaiting the viewer —
never their own requests, nothing they already decided, and policy changes only for admins."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from console.accounts.roles import Role
from console.accounts.services import grant_role
from console.audit.services import SYSTEM
from console.flags import services as flags
from console.flags.models import FlagType
from console.releases import policies, services
from console.releases.models import PromotionRequest, Rollout

pytestmark = pytest.mark.django_db


def dashboard(world, who: str) -> str:
    client = Client()
    client.force_login(world.users[who])
    response = client.get(f"/apps/{world.application.key}/")
    assert response.status_code == 200
    return response.content.decode()


def awaiting_ids(html: str) -> list[int]:
    section = html.split('id="awaiting-title"', 1)[1].split("</section>", 1)[0]
    return [int(n) for n in re.findall(r'data-request="(\d+)"', section)]


def env_card(html: str, env: str) -> str:
    return html.split(f'data-environment="{env}"', 1)[1].split('data-environment="', 1)[0]


def open_prompt_request(world, number: int, who: str = "engineer", **extra) -> PromotionRequest:
    world.passing_run(number)
    return services.open_request(
        actor=world.users[who],
        environment=world.prod,
        version=world.versions[number],
        justification=f"ship v{number}",
        **extra,
    )


def kill(world, key: str, env: str = "prod"):
    flag = flags.create_flag(
        actor=world.users["engineer"],
        application=world.application,
        key=key,
        name=key,
        flag_type=FlagType.BOOLEAN,
    )
    flags.kill_flag(
        actor=world.users["engineer"],
        flag=flag,
        environment=world.envs[env],
        reason="Answers quote the old refund policy",
    )
    return flag


def test_an_approver_sees_requests_awaiting_them_linked_to_each(world):
    request = open_prompt_request(world, 2)
    html = dashboard(world, "approver")
    assert awaiting_ids(html) == [request.pk]
    assert f'href="/apps/{world.application.key}/releases/{request.pk}/"' in html
    assert "answer@2 → prod" in html and "asked by eng" in html


def test_my_own_request_is_not_awaiting_me(world):
    # The admin holds the approve permission, but nobody decides on their own request.
    own = open_prompt_request(world, 2, who="admin")
    assert awaiting_ids(dashboard(world, "admin")) == []
    assert "Nothing waits for your decision" in dashboard(world, "admin")
    assert awaiting_ids(dashboard(world, "approver")) == [own.pk]
    services.withdraw(actor=world.users["admin"], request=own)
    other = open_prompt_request(world, 3, who="engineer")
    assert awaiting_ids(dashboard(world, "admin")) == [other.pk]


def test_a_request_i_decided_or_that_is_approved_no_longer_awaits_me(world):
    request = open_prompt_request(world, 2)
    services.decide(actor=world.users["approver"], request=request, decision="approve")
    assert awaiting_ids(dashboard(world, "approver")) == []
    assert awaiting_ids(dashboard(world, "approver2")) == []  # approved: nothing left to decide
    html = dashboard(world, "approver")
    assert "Nothing waits for your decision" in html


def test_a_policy_change_awaits_admins_only(world):
    content, number = policies.current(world.prod)
    request = services.open_policy_request(
        actor=world.users["admin"],
        environment=world.prod,
        proposal={**content, "eval_gate": False},
        base_number=number,
        justification="",
        loosenings=["prod no longer requires evals"],
    )
    assert request.kind == PromotionRequest.Kind.POLICY
    grant_role(actor=SYSTEM, user=world.users["approver2"], application=world.application,
               role=Role.ADMIN)  # fmt: skip
    assert awaiting_ids(dashboard(world, "approver")) == []
    assert awaiting_ids(dashboard(world, "approver2")) == [request.pk]
    assert awaiting_ids(dashboard(world, "admin")) == []  # their own


def test_people_who_cannot_decide_get_no_awaiting_panel(world):
    open_prompt_request(world, 2)
    for who in ("engineer", "viewer", "curator"):
        assert 'id="awaiting-title"' not in dashboard(world, who), who


def test_killed_switches_show_in_their_environment_with_a_link(world):
    kill(world, "answers-enabled", env="prod")
    html = dashboard(world, "viewer")
    prod = env_card(html, "prod")
    assert "Killed" in prod and "answers-enabled" in prod
    assert f'href="/apps/{world.application.key}/flags/answers-enabled/#env-prod"' in prod
    assert "Answers quote the old refund policy" in prod
    assert "answers-enabled" not in env_card(html, "dev")
    assert "Nothing running" in env_card(html, "dev")


def test_a_restored_switch_is_gone_from_the_dashboard(world):
    flag = kill(world, "answers-enabled", env="dev")
    flags.restore_flag(
        actor=world.users["engineer"], flag=flag, environment=world.envs["dev"], reason="fixed"
    )
    html = dashboard(world, "viewer").split('id="ops-title"', 1)[1].split("</section>", 1)[0]
    assert "answers-enabled" not in html
    assert "Nothing running in 3 environments" in html


def test_running_rollouts_and_shadows_show_per_environment(world):
    request = open_prompt_request(world, 2, staged=True)
    services.decide(actor=world.users["approver"], request=request, decision="approve")
    services.apply(actor=world.users["engineer"], request=request)
    rollout = Rollout.objects.get(request=request)
    services.start_shadow(
        actor=world.users["engineer"], environment=world.envs["staging"], version=world.versions[3]
    )
    html = dashboard(world, "viewer")
    prod, staging = env_card(html, "prod"), env_card(html, "staging")
    assert "Rollout" in prod and "answer@2 → prod" in prod and "5% of traffic" in prod
    assert f'href="/apps/{world.application.key}/releases/{request.pk}/"' in prod
    assert "Shadow" in staging and "answer@3" in staging
    assert f'href="/apps/{world.application.key}/releases/history/staging/"' in staging
    assert "Shadow" not in prod

    # A finished rollout is no longer running.
    Rollout.objects.filter(pk=rollout.pk).update(status=Rollout.Status.COMPLETED)
    assert "5% of traffic" not in env_card(dashboard(world, "viewer"), "prod")


def test_the_dashboard_keeps_a_fixed_number_of_queries(world, django_assert_max_num_queries):
    def load() -> str:
        client = Client()
        client.force_login(world.users["approver"])
        with django_assert_max_num_queries(22) as captured:
            response = client.get(f"/apps/{world.application.key}/")
        assert response.status_code == 200
        return len(captured.captured_queries)

    content, number = policies.current(world.prod)
    services.open_policy_request(
        actor=world.users["admin"], environment=world.prod,
        proposal={**content, "eval_gate": False}, base_number=number, justification="",
        loosenings=["prod no longer requires evals"],
    )  # fmt: skip
    few = load()
    for i in range(6):
        kill(world, f"flag-{i}", env=("dev", "staging", "prod")[i % 3])
    for env in ("dev", "staging"):
        for number in (2, 3):
            services.start_shadow(
                actor=world.users["engineer"], environment=world.envs[env],
                version=world.versions[number],
            )  # fmt: skip
    request = open_prompt_request(world, 3, who="engineer2", staged=True)
    services.decide(actor=world.users["approver2"], request=request, decision="approve")
    services.apply(actor=world.users["engineer2"], request=request)
    assert load() == few
