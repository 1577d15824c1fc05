"""The world the governance sweep runs in: one application whose prod is protected (one
approval, eval gate on a published golden set), with something live in every corner of what prod
serves, built through the real services (or, where no door exists yet, as the door would have
left it) so that every route of the console has a real target.

What prod serves when the world is built:
- prompt `answer` v2 (v1 was live before: a rollback target; v3 awaits approval; v4 was never
  reviewed), model config `main` v1 (v2 approved, not applied; v3 never reviewed), prompt
  `summary` v1 with a staged rollout of v2 running at 5% through the flag `canary-summary-prod`;
- flags: `answers-enabled` (boolean kill switch, on), `support-prompt` (string experiment whose
  variants point at prompt versions, split 90/10 with a staff rule), `max-docs` (number,
  operational, killed in prod);
- an active shadow of `answer` v3.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone

from console.accounts import keys
from console.accounts.models import ApiKeyScope
from console.accounts.roles import Role
from console.accounts.services import grant_role
from console.audit.services import SYSTEM
from console.datasets import services as datasets
from console.evals import services as evals
from console.evals.models import EvalRun
from console.flags.models import FlagKind, FlagType
from console.notifications import services as notifications
from console.registry import services as registry
from console.releases import policies
from console.releases import services as releases
from console.releases.models import PromotionRequest, Rollout, ShadowDeployment
from console.samples import services as sample_services
from console.samples.models import MonitorAlert, Sample
from console.usage import budgets as usage_budgets
from console.usage import services as usage
from tests.evals.helpers import publish_items
from tests.factories import MODEL_CONTENT, make_application
from tests.flags.helpers import make_flag, on, set_rules, split

# The four people the sweep acts as, and the role each holds in the application.
ROLES = {
    "engineer": Role.ENGINEER,
    "curator": Role.CURATOR,
    "approver": Role.APPROVER,
    "lone-admin": Role.ADMIN,  # the application's only admin
}

GOLDEN_ITEMS = [
    {"id": "refund-1", "question": "How long do I have to return an item?", "tags": ["refunds"]},
    {"id": "ship-1", "question": "How much is standard shipping?", "tags": ["shipping"]},
]


def prompt_content(key: str, n: int) -> dict:
    return {
        "system": f"{key} v{n}.\nContext:\n{{{{ context }}}}",
        "user": "{{ question }}",
        "variables": ["context", "question"],
        "params": {"top_k": n},
    }


def quick_user(username: str):
    """A user without a usable password (force_login only): no password hashing."""
    return get_user_model().objects.create_user(username=username)


@dataclass
class World:
    app: object
    envs: dict  # key → Environment
    users: dict  # role name (ROLES) → user; also "requester" (an engineer), "candidate"
    prompts: dict  # key → PromptHead
    model: object  # ModelConfigHead "main"
    flags: dict  # key → Flag
    dataset: object  # the golden set prod's release policy names (published, with a draft)
    job: object  # a validated import into it, waiting to be applied
    eval_post: dict  # a valid launch form
    queued_run: object  # a cancellable eval run
    pending: object  # requester's answer v3 → prod, awaiting a decision
    approved: object  # requester's main v2 → prod, approved by the approver
    rollout: object  # the running staged rollout of summary v2 in prod
    shadow: object  # the active shadow of answer v3 in prod
    budget: object  # a budget whose breaker kills answers-enabled in dev
    webhook: object
    disabled_webhook: object
    sample: object = None  # a thumbs-down production sample of prod
    monitor: object = None  # a faithfulness monitor on prod
    alert: object = None  # its open warning
    secrets: dict = field(default_factory=dict)  # name → runtime API key secret
    api_keys: dict = field(default_factory=dict)  # name → ApiKey
    once_live: dict = field(default_factory=dict)  # prompt key → version numbers live in prod

    @property
    def prod(self):
        return self.envs["prod"]


def passing_run(world_app, golden_version, author, prompt_version, model_version) -> EvalRun:
    """A completed, passing run (evidence for the eval gate) without calling a model."""
    return EvalRun.objects.create(
        application=world_app,
        target_type=EvalRun.Target.PROMPT_MODEL,
        prompt_version=prompt_version,
        model_version=model_version,
        dataset_version=golden_version,
        fingerprint=f"sweep-{prompt_version.pk}-{model_version.pk}",
        label=f"{prompt_version.head.key}@{prompt_version.number}",
        status=EvalRun.Status.COMPLETED,
        verdict=EvalRun.Verdict.PASSED,
        verdict_detail={"gates": [], "reason": "all gates met"},
        metrics={"items": 2, "errors": 0, "error_rate": 0.0, "pass_rate": 1.0, "cost_model": 0.002},
        created_by=author,
        finished_at=timezone.now(),
    )


def build_world() -> World:
    from console.registry.kinds import MODEL_CONFIG, PROMPT

    app = make_application("sweep")
    envs = {e.key: e for e in app.environments.all()}
    assert envs["prod"].protected and envs["prod"].eval_gate_required
    users = {name: quick_user(f"sweep-{name}") for name in ROLES}
    for name, role in ROLES.items():
        grant_role(actor=SYSTEM, user=users[name], application=app, role=role)
    users["requester"] = quick_user("sweep-requester")
    grant_role(actor=SYSTEM, user=users["requester"], application=app, role=Role.ENGINEER)
    users["candidate"] = quick_user("sweep-candidate")
    requester, approver = users["requester"], users["approver"]

    def create(kind, key, contents):
        head = registry.create_head(
            actor=requester, kind=kind, application=app, key=key, name=key.title(),
            content=contents[0],
        ).version.head  # fmt: skip
        for n, content in enumerate(contents[1:], start=2):
            registry.save_head_version(
                actor=requester, head=head, content=content, base_number=n - 1, message=f"v{n}"
            )
        return head

    answer = create(PROMPT, "answer", [prompt_content("answer", n) for n in (1, 2, 3, 4)])
    summary = create(PROMPT, "summary", [prompt_content("summary", n) for n in (1, 2)])
    model = create(
        MODEL_CONFIG, "main", [dict(MODEL_CONTENT, max_tokens=256 + n) for n in (1, 2, 3)]
    )
    version = {("answer", n): answer.versions.get(number=n) for n in (1, 2, 3, 4)} | {
        ("summary", n): summary.versions.get(number=n) for n in (1, 2)
    }
    main = {n: model.versions.get(number=n) for n in (1, 2, 3)}

    # Unprotected environments serve the newest reviewed things; prod served answer v1, then
    # v2 (as promotions left it), summary v1 and main v1.
    for env in ("dev", "staging"):
        for v in (version["answer", 3], version["summary", 2], main[2]):
            registry.bind_version(actor=requester, environment=envs[env], version=v)
    for v in (version["answer", 1], version["answer", 2], version["summary", 1], main[1]):
        registry.bind_version(
            actor=requester, environment=envs["prod"], version=v, via_promotion=True
        )

    # The golden set prod's eval gate names, and passing evidence for what awaits approval.
    dataset, golden = publish_items(app, users["curator"], "golden", GOLDEN_ITEMS[:1])
    datasets.import_file(
        actor=users["curator"], dataset=dataset, filename="more.jsonl",
        data=(json.dumps(GOLDEN_ITEMS[1]) + "\n").encode(),
    )  # fmt: skip
    job = datasets.start_import_job(
        actor=users["curator"], dataset=dataset, data=b"question\nFrom the sweep?\n",
        filename="sweep.csv", fmt=None, mode="merge",
    )  # fmt: skip
    job.refresh_from_db()
    dataset.refresh_from_db()
    prod_policy, number = policies.current(envs["prod"])
    policies.apply_content(
        actor=users["lone-admin"],
        environment=envs["prod"],
        content=policies.clean(
            envs["prod"],
            {
                **prod_policy,
                "datasets": [dataset.key],
                "gates": [{"metric": "pass_rate", "op": ">=", "threshold": 0.5}],
            },
        ),
        message="sweep policy",
        number=number,
    )
    for prompt_version, model_version in (
        (version["answer", 3], main[1]),
        (version["summary", 2], main[1]),
        (version["answer", 2], main[2]),
        # Baselines: what prod serves now.
        (version["answer", 2], main[1]),
        (version["summary", 1], main[1]),
    ):
        passing_run(app, golden, requester, prompt_version, model_version)
    queued_run = evals.launch_run(
        actor=requester, application=app, dataset_version=golden,
        prompt_version=version["answer", 4], model_version=main[1], scorers=["contains_all"],
    )  # fmt: skip
    eval_post = {
        "target_type": "prompt_model",
        "dataset_version": str(golden.pk),
        "prompt_version": str(version["answer", 4].pk),
        "model_version": str(main[1].pk),
        "scorers": ["contains_all", "refusal"],
        "gates": "pass_rate >= 0.5",
    }

    # Flags of every kind, with rules in every environment (prod's as a promotion left them).
    switch = make_flag(app, requester, "answers-enabled", kind=FlagKind.KILL_SWITCH)
    experiment = make_flag(
        app, requester, "support-prompt", flag_type=FlagType.STRING, kind=FlagKind.EXPERIMENT,
        variants=[
            {"key": "stable", "value": "answer@1",
             "ref": {"kind": "prompt", "key": "answer", "version": 1}},
            {"key": "canary", "value": "answer@2",
             "ref": {"kind": "prompt", "key": "answer", "version": 2}},
        ],
        off_variant="stable",
    )  # fmt: skip
    docs = make_flag(
        app, requester, "max-docs", flag_type=FlagType.NUMBER, kind=FlagKind.OPERATIONAL,
        variants=[{"key": "five", "value": 5}, {"key": "three", "value": 3}], off_variant="five",
    )  # fmt: skip
    staff = [
        {
            "name": "Staff",
            "conditions": [{"attribute": "email", "operator": "ends_with", "value": "@acme.com"}],
            "serve": {"variant": "canary"},
        }
    ]
    for env in ("dev", "staging", "prod"):
        set_rules(switch, env, on("on"), requester)
        set_rules(docs, env, on("three"), requester)
    set_rules(experiment, "dev", on("canary"), requester)
    set_rules(experiment, "staging", split(("stable", 50), ("canary", 50)), requester)
    set_rules(experiment, "prod", split(("stable", 80), ("canary", 20)), requester)
    set_rules(experiment, "prod", split(("stable", 90), ("canary", 10), rules=staff), requester)

    # Promotions: one awaiting a decision, one approved and ready to apply, one staged and
    # rolling out (each requested by the requester, decided by the approver).
    pending = releases.open_request(
        actor=requester, environment=envs["prod"], version=version["answer", 3],
        justification="better refunds answers", paired=main[1],
    )  # fmt: skip
    approved = releases.open_request(
        actor=requester, environment=envs["prod"], version=main[2],
        justification="longer answers", paired=version["answer", 2],
    )  # fmt: skip
    approved = releases.decide(actor=approver, request=approved, decision="approve")
    assert approved.status == PromotionRequest.Status.APPROVED
    staged = releases.open_request(
        actor=requester, environment=envs["prod"], version=version["summary", 2],
        justification="canary the new summary", staged=True, paired=main[1],
    )  # fmt: skip
    staged = releases.decide(actor=approver, request=staged, decision="approve")
    releases.apply(actor=approver, request=staged)
    rollout = Rollout.objects.get(request=staged)
    assert rollout.status == Rollout.Status.RUNNING

    # Kill max-docs in prod (a restore target), and an active shadow of answer v3 in prod, as
    # an approved change would have left it (no door for shadows in prod exists yet).
    from console.flags import services as flag_services

    flag_services.kill_flag(
        actor=requester, flag=docs, environment=envs["prod"], reason="too many documents"
    )
    shadow = ShadowDeployment.objects.create(
        environment=envs["prod"], kind="prompt", prompt_version=version["answer", 3],
        created_by=requester,
    )  # fmt: skip

    # Usage in prod and staging today (a budget created in the sweep has spend to react to);
    # the world's own budget breaks in dev only.
    now = timezone.now()
    for env in ("prod", "staging"):
        usage.ingest(
            application=app,
            environment=envs[env],
            events=[
                {
                    "event_id": f"sweep-{env}-{n}",
                    "time": (now - timedelta(seconds=5 + n)).isoformat(),
                    "model": "gpt-4o-mini",
                    "input_tokens": 100_000,
                    "output_tokens": 20_000,
                    "feature": "chat",
                }
                for n in range(3)
            ],
        )
    usage.rollup(settle=timedelta(0))
    budget = usage_budgets.create_budget(
        actor=requester, application=app, name="Monthly dev", period="monthly", amount="100",
        environment=envs["dev"], action={"type": "kill_switch", "flag": "answers-enabled"},
    )  # fmt: skip

    webhook = notifications.create_webhook(
        actor=users["lone-admin"], application=app, url="https://hooks.sweep-receiver.net/airlock"
    ).webhook
    disabled = notifications.create_webhook(
        actor=users["lone-admin"], application=app, url="https://hooks.sweep-receiver.net/old"
    ).webhook
    notifications.set_webhook_active(actor=users["lone-admin"], webhook=disabled, active=False)

    world = World(
        app=app, envs=envs, users=users, prompts={"answer": answer, "summary": summary},
        model=model, flags={f.key: f for f in (switch, experiment, docs, rollout.flag)},
        dataset=dataset, job=job, eval_post=eval_post, queued_run=queued_run, pending=pending,
        approved=approved, rollout=rollout, shadow=shadow, budget=budget, webhook=webhook,
        disabled_webhook=disabled,
    )  # fmt: skip
    world.once_live = {"answer": [1, 2], "summary": [1]}
    recently = (timezone.now() - timedelta(minutes=5)).isoformat()
    sample_services.ingest(
        application=app, environment=envs["prod"],
        samples=[{"sample_id": "sweep-1", "time": recently, "output": "Forever.",
                  "inputs": {"question": "How long is the return window?"}, "feedback": "down"}],
    )  # fmt: skip
    world.sample = Sample.objects.get(application=app, sample_id="sweep-1")
    world.monitor = sample_services.create_monitor(
        actor=requester, application=app, environment=envs["prod"], metric="faithfulness"
    )
    world.alert = MonitorAlert.objects.create(
        monitor=world.monitor, severity="warning", value=0.7, baseline=0.8, change=12.5,
        opened_at=timezone.now(), notified_at=timezone.now(),
    )  # fmt: skip
    for name, env, scopes in (
        ("observer-prod", "prod", [ApiKeyScope.CONFIG_READ]),
        ("observer-staging", "staging", [ApiKeyScope.CONFIG_READ]),
        ("observer-dev", "dev", [ApiKeyScope.CONFIG_READ]),
        ("prod-app", "prod", [ApiKeyScope.CONFIG_READ]),  # revoked/rotated by the sweep
        ("prod-usage", "prod", [ApiKeyScope.USAGE_WRITE]),
        ("prod-both", "prod", [ApiKeyScope.CONFIG_READ, ApiKeyScope.USAGE_WRITE]),
    ):
        issued = keys.create_api_key(actor=SYSTEM, environment=envs[env], name=name, scopes=scopes)
        world.secrets[name] = issued.secret
        world.api_keys[name] = issued.api_key
    return world
