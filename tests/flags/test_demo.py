"""seed_flags: the demo's kill switch and prompt canary, idempotent, through the services."""

from __future__ import annotations

from console.accounts.roles import Role
from console.flags.demo import seed_flags
from console.flags.evaluation import evaluate
from console.flags.models import Flag
from console.flags.selectors import environment_flags
from console.registry import services as registry
from tests.factories import make_prompt


def test_seed_flags_creates_the_demo_flags_once(application, member):
    engineer = member(Role.ENGINEER, "engineer")
    prompt = make_prompt(application, engineer, key="answer-question")
    for n in (2, 3):
        registry.save_head_version(
            actor=engineer,
            head=prompt,
            base_number=n - 1,
            content={**prompt.latest_version.content, "params": {"k": n}},
        )
    users = {"engineer": engineer, "admin": member(Role.ADMIN, "admin")}
    seed_flags(application, users)
    seed_flags(application, users)
    assert Flag.objects.filter(application=application).count() == 4
    for env in application.environments.all():
        switch = environment_flags(env).definitions["answers-enabled"]
        assert evaluate(switch, {}).value is True
    prod = application.environments.get(key="prod")
    canary = environment_flags(prod).definitions["support-prompt"]
    assert canary.default.rollout == (("stable", 75.0), ("canary", 25.0))
    shares = [evaluate(canary, {"targetingKey": f"u{i}"}).variant for i in range(4000)]
    assert abs(shares.count("canary") / 4000 - 0.25) < 0.03
