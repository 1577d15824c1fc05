"""Every console URL × every role, against the role table in console/accounts/roles.py.

The expected status of each cell is *computed* from `ROLE_PERMISSIONS` and the permission each
endpoint needs; nothing here is a recorded observation:

- anonymous → 302 to the login page (except the login page itself, and logout);
- the caller's permissions in the application lack VIEW (a non-member) → 404, never 403;
- a member whose role lacks the endpoint's permission → 403;
- otherwise the endpoint's success status (200 for pages, 302 after a successful write).

A few views refuse through their service rather than at the door: they redirect back with an
error message instead of answering 403 (promotion decisions, rules saved into a protected
environment, cancelling a finished run). Those cells are asserted as what they really do — a
redirect inside the application carrying an error message — and, like every refusal, they must
leave no trace: no audit event, no row. Allowed writes must leave exactly the audit events their
service records (usually one; applying a promotion or rolling back also records the binding).

The world every cell runs in is built once per module with the real services (flags, eval runs
executed against the bundled simulator, promotions, usage ingestion and rollups, budgets) inside
an outer transaction; each test runs in a savepoint that is rolled back, so every cell starts from
the same state.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import ERROR, get_messages
from django.core.cache import caches
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.db.models import Sum
from django.urls import URLPattern, URLResolver, reverse
from django.utils import timezone

from console.accounts import keys
from console.accounts import urls as accounts_urls
from console.accounts.models import ApiKey, Membership
from console.accounts.roles import ADMIN, APPROVE, CURATE, ENGINEER, ROLE_PERMISSIONS, VIEW, Role
from console.accounts.services import grant_role
from console.api import auth as api_auth
from console.api import snapshot
from console.audit import urls as audit_urls
from console.audit.models import AuditEvent
from console.audit.services import SYSTEM
from console.core.canonical import canonical_json
from console.datasets import services as datasets
from console.datasets import urls as datasets_urls
from console.datasets.models import Dataset, DatasetItem, DatasetVersion, ImportJob
from console.evals import services as evals
from console.evals import urls as evals_urls
from console.evals.models import EvalRun, ResultReview
from console.evals.simulator import serve_in_thread
from console.experiments import urls as experiments_urls
from console.flags import services as flags
from console.flags import urls as flags_urls
from console.flags.models import Flag, FlagKind, FlagRules, FlagType
from console.notifications import services as notifications
from console.notifications import urls as notifications_urls
from console.notifications.models import Notification, Webhook, WebhookDelivery
from console.registry import services as registry
from console.registry import urls as registry_urls
from console.registry.kinds import KINDS, MODEL_CONFIG, PROMPT
from console.registry.models import Environment
from console.releases import services as releases
from console.releases import urls as releases_urls
from console.releases.models import Approval, PromotionRequest, ShadowDeployment
from console.samples import services as sample_services
from console.samples import urls as samples_urls
from console.samples.models import Monitor, MonitorAlert, Sample, SamplePolicy
from console.usage import budgets as usage_budgets
from console.usage import services as usage
from console.usage import urls as usage_urls
from console.usage.models import Budget, PricePoint, UsageEvent
from tests.conftest import name_public_hosts, public_hosts, rolled_back_world
from tests.evals.helpers import answered_result, model_content, reviewed_result
from tests.factories import MODEL_CONTENT, PROMPT_CONTENT, make_application
from tests.samples.helpers import curate_post, monitor_post, policy_post

ANONYMOUS = "anonymous"
OUTSIDER = "outsider"  # admin of another application, member of nothing else
WHO = [*Role.values, ANONYMOUS, OUTSIDER]

LOGIN_URL = "/accounts/login/"


# ---------------------------------------------------------------------------------------------
# The world every cell runs in
# ---------------------------------------------------------------------------------------------


def quick_user(username: str):
    """A user without a usable password (force_login only): no slow password hashing."""
    return get_user_model().objects.create_user(username=username)


@dataclass
class World:
    app: object  # application A, the one under test
    other: object  # application B (with an environment "b-only-env" A does not have)
    owner: object = None  # admin of A who built A's objects (and requested its promotions)
    approver: object = None  # approver of A who approved `approved`
    heads: dict = field(default_factory=dict)  # kind slug → head in A
    other_heads: dict = field(default_factory=dict)  # kind slug → head present in B only
    candidate: object = None  # a user with no role anywhere, for the members form
    dataset: object = None  # golden set "golden" in A: v1, v2 and a changed draft
    job: object = None  # an import into it, validated and waiting to be applied
    other_datasets: dict = field(default_factory=dict)  # key → golden set in B
    api_key: object = None  # a live runtime API key of A's dev environment
    webhook: object = None  # an active webhook of A
    disabled_webhook: object = None  # a disabled webhook of A
    sample: object = None  # a thumbs-down production sample of A's prod
    monitor: object = None  # a faithfulness monitor on A's prod
    alert: object = None  # its open warning
    # Flags: "checkout" in A, on in dev (rules v2), killed in staging; B has its own "checkout"
    # and a "b-only-flag".
    flag: object = None
    other_flags: dict = field(default_factory=dict)  # key → flag in B
    # Evals: versions the launch form offers, two completed runs on the same golden set version
    # (executed against the simulator), one queued run (cancellable); B's queued run.
    eval_post: dict = field(default_factory=dict)
    runs: tuple = ()
    queued_run: object = None
    other_run: object = None
    # Releases (prod is protected, one approval, no eval gate): answer v2 → prod awaiting a
    # decision, main v2 → prod approved and ready to apply, an active shadow of answer v1 in
    # staging; dev served answer v1 then v2 (rollback target: v1). B's pending promotion.
    pending: object = None
    approved: object = None
    shadow: object = None
    other_promotion: object = None
    # Usage: events in A's dev rolled up, a monthly budget.
    budget: object = None
    # What every test starts from: the row fingerprint and the last audit seq after building.
    baseline: tuple = ()


def make_head(kind, application, author, key: str, content: dict, versions: int = 2):
    head = registry.create_head(
        actor=author, kind=kind, application=application, key=key, name=key.title(),
        content=content,
    ).version.head  # fmt: skip
    for n in range(2, versions + 1):
        changed = dict(content)
        if kind is PROMPT:
            changed["params"] = {"top_k": n}
        else:
            changed["max_tokens"] = 100 + n
        registry.save_head_version(
            actor=author, head=head, content=changed, base_number=n - 1, message=f"v{n}"
        )
    return head


def make_other_application():
    """Application B: the usual environments plus one whose key A does not have."""
    return registry.create_application(
        actor=SYSTEM, key="app-b", name="App B",
        environments=[
            {"key": "dev", "name": "dev"},
            {"key": "staging", "name": "staging"},
            {"key": "prod", "name": "prod", "protected": True, "required_approvals": 1},
            {"key": "b-only-env", "name": "B-ONLY-SECRET env"},
        ],
    )  # fmt: skip


def build_world(base_url: str) -> World:
    """Everything the matrix needs, through the real services; `base_url` is a running model
    simulator the eval runs call."""
    app = make_application("app-a")
    other = make_other_application()
    owner = quick_user("owner-a")
    grant_role(actor=SYSTEM, user=owner, application=app, role=Role.ADMIN)
    other_owner = quick_user("owner-b")
    grant_role(actor=SYSTEM, user=other_owner, application=other, role=Role.ADMIN)
    world = World(app=app, other=other, owner=owner, candidate=quick_user("candidate"))
    world.heads = {
        PROMPT.slug: make_head(PROMPT, app, owner, "answer", PROMPT_CONTENT),
        MODEL_CONFIG.slug: make_head(MODEL_CONFIG, app, owner, "main", MODEL_CONTENT),
    }
    secret_prompt = dict(PROMPT_CONTENT, system="B-ONLY-SECRET {{ context }}")
    world.other_heads = {
        PROMPT.slug: make_head(PROMPT, other, other_owner, "b-only", secret_prompt),
        MODEL_CONFIG.slug: make_head(
            MODEL_CONFIG, other, other_owner, "b-only-model", dict(MODEL_CONTENT, model="b-model")
        ),
    }
    # Same key in both applications: B's copy must never be reachable through A.
    make_head(PROMPT, other, other_owner, "answer", secret_prompt)
    world.dataset, world.job = make_golden_set(app, owner)
    dev = Environment.objects.get(application=app, key="dev")
    world.api_key = keys.create_api_key(actor=owner, environment=dev, name="world-key").api_key
    world.webhook = notifications.create_webhook(
        actor=owner, application=app, url="https://hooks.app-a.net/airlock"
    ).webhook
    world.disabled_webhook = notifications.create_webhook(
        actor=owner, application=app, url="https://hooks.app-a.net/old", events="budget."
    ).webhook
    notifications.set_webhook_active(actor=owner, webhook=world.disabled_webhook, active=False)
    world.other_datasets = {
        key: make_golden_set(other, other_owner, key, secret=True)[0]
        for key in ("golden", "b-only-set")
    }
    build_flags(world, other_owner)
    build_evals(world, other_owner, base_url)
    build_releases(world, other_owner)
    build_usage(world)
    world.baseline = (_fingerprint(world), last_audit_seq())
    return world


def rules(variant: str) -> dict:
    return {"enabled": True, "rules": [], "default": {"variant": variant}}


def make_flag(application, author, key: str, description: str = ""):
    return flags.create_flag(
        actor=author, application=application, key=key, name=key.title(),
        description=description, flag_type=FlagType.BOOLEAN, kind=FlagKind.RELEASE, owner=author,
    )  # fmt: skip


def build_flags(world: World, other_owner) -> None:
    world.flag = make_flag(world.app, world.owner, "checkout")
    envs = {e.key: e for e in world.app.environments.all()}
    flags.save_rules(
        actor=world.owner, flag=world.flag, environment=envs["dev"], content=rules("on"),
        base_number=1, message="on in dev",
    )  # fmt: skip
    flags.kill_flag(actor=world.owner, flag=world.flag, environment=envs["staging"], reason="w")
    world.other_flags = {
        key: make_flag(world.other, other_owner, key, description="B-ONLY-SECRET flag")
        for key in ("checkout", "b-only-flag")
    }
    b_dev = world.other.environments.get(key="dev")
    for flag in world.other_flags.values():
        flags.save_rules(
            actor=other_owner, flag=flag, environment=b_dev, content=rules("on"), base_number=1
        )
        flags.kill_flag(
            actor=other_owner, flag=flag, environment=world.other.environments.get(key="staging"),
            reason="B-ONLY-SECRET",
        )  # fmt: skip


def build_evals(world: World, other_owner, base_url: str) -> None:
    prompt = world.heads[PROMPT.slug]
    simulated = registry.create_head(
        actor=world.owner, kind=MODEL_CONFIG, application=world.app, key="sim", name="Sim",
        content=model_content(base_url),
    ).version  # fmt: skip
    golden = DatasetVersion.objects.get(head=world.dataset, number=2)
    launch = {
        "actor": world.owner,
        "application": world.app,
        "dataset_version": golden,
        "model_version": simulated,
        "scorers": ["contains_all", "refusal"],
    }
    runs = []
    for number in (1, 2):
        run = evals.launch_run(**launch, prompt_version=prompt.versions.get(number=number))
        evals.execute_run(run.pk)
        run.refresh_from_db()
        assert run.status == EvalRun.Status.COMPLETED, run.status
        runs.append(run)
    world.runs = tuple(runs)
    world.queued_run = evals.launch_run(
        **launch | {"scorers": ["contains_none"]}, prompt_version=prompt.versions.get(number=2)
    )
    world.eval_post = {
        "target_type": "prompt_model",
        "dataset_version": str(golden.pk),
        "prompt_version": str(prompt.versions.get(number=1).pk),
        "model_version": str(simulated.pk),
        "scorers": ["contains_all", "contains_none", "refusal"],
        "gates": "pass_rate >= 0.5",
    }
    world.other_run = evals.launch_run(
        actor=other_owner,
        application=world.other,
        dataset_version=DatasetVersion.objects.get(head=world.other_datasets["golden"], number=2),
        prompt_version=world.other_heads[PROMPT.slug].versions.get(number=1),
        model_version=world.other_heads[MODEL_CONFIG.slug].versions.get(number=1),
    )


def open_promotion(environment, version, requester, approver=None, paired=None):
    """A promotion request into a protected environment, approved when `approver` is given."""
    promotion = releases.open_request(
        actor=requester, environment=environment, version=version, justification="ship it",
        paired=paired,
    )  # fmt: skip
    if approver is not None:
        promotion = releases.decide(actor=approver, request=promotion, decision="approve")
        assert promotion.status == PromotionRequest.Status.APPROVED
    return promotion


def build_releases(world: World, other_owner) -> None:
    envs = {e.key: e for e in world.app.environments.all()}
    # Protected, one approval, no eval gate: a request needs no evidence.
    envs["prod"] = registry.update_environment_policy(
        actor=SYSTEM, environment=envs["prod"], protected=True, required_approvals=1,
        eval_gate_required=False,
    )  # fmt: skip
    world.approver = quick_user("approver-a")
    grant_role(actor=SYSTEM, user=world.approver, application=world.app, role=Role.APPROVER)
    prompt, model = world.heads[PROMPT.slug], world.heads[MODEL_CONFIG.slug]
    for number in (1, 2):  # dev served v1, then v2: v1 is a rollback target
        registry.bind_version(
            actor=world.owner, environment=envs["dev"], version=prompt.versions.get(number=number)
        )
    # Nothing is live in prod yet: each request names the other half it runs with.
    world.pending = open_promotion(
        envs["prod"], prompt.versions.get(number=2), world.owner,
        paired=model.versions.get(number=1),
    )  # fmt: skip
    world.approved = open_promotion(
        envs["prod"], model.versions.get(number=2), world.owner, world.approver,
        paired=prompt.versions.get(number=1),
    )  # fmt: skip
    world.shadow = releases.start_shadow(
        actor=world.owner, environment=envs["staging"], version=prompt.versions.get(number=1)
    )
    b_prod = world.other.environments.get(key="prod")
    world.other_promotion = releases.open_request(
        actor=other_owner, environment=b_prod, justification="B-ONLY-SECRET",
        version=world.other_heads[PROMPT.slug].versions.get(number=2),
        paired=world.other_heads[MODEL_CONFIG.slug].versions.get(number=1),
    )  # fmt: skip


def build_usage(world: World) -> None:
    hour = timezone.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    events = [
        {
            "event_id": f"matrix-{n}",
            "time": (hour - timedelta(hours=n + 1)).isoformat(),
            "model": "gpt-4o-mini",
            "input_tokens": 1000 * (n + 1),
            "output_tokens": 200,
            "feature": "chat",
        }
        for n in range(3)
    ]
    usage.ingest(
        application=world.app, environment=world.app.environments.get(key="dev"), events=events
    )
    usage.rollup(settle=timedelta(0))
    world.budget = usage_budgets.create_budget(
        actor=world.owner, application=world.app, name="Monthly", period="monthly", amount="100"
    )
    sample_services.ingest(
        application=world.app,
        environment=world.app.environments.get(key="prod"),
        samples=[
            {
                "sample_id": "matrix-1",
                "time": (timezone.now() - timedelta(minutes=5)).isoformat(),
                "inputs": {"question": "How long do I have to return an item?"},
                "output": "Forever.",
                "feedback": "down",
            }
        ],
    )
    world.sample = Sample.objects.get(application=world.app, sample_id="matrix-1")
    world.monitor = sample_services.create_monitor(
        actor=world.owner, application=world.app,
        environment=world.app.environments.get(key="prod"), metric="faithfulness",
    )  # fmt: skip
    world.alert = MonitorAlert.objects.create(
        monitor=world.monitor, severity="warning", value=0.7, baseline=0.8, change=12.5,
        opened_at=timezone.now(), notified_at=timezone.now(),
    )  # fmt: skip


GOLDEN_ITEMS = [
    {"id": "refund-1", "question": "How long do I have to return an item?", "tags": ["refunds"]},
    {"id": "ship-1", "question": "How much is standard shipping?", "tags": ["shipping"]},
]


def make_golden_set(application, owner, key: str = "golden", secret: bool = False):
    """A golden set with v1, v2, a draft that differs from v2, and a validated import job."""
    dataset = datasets.create_dataset(actor=owner, application=application, key=key, name=key)
    items = [
        dict(i, question=f"B-ONLY-SECRET {i['question']}") if secret else i for i in GOLDEN_ITEMS
    ]

    def load(rows: list[dict], name: str) -> None:
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
        datasets.import_file(actor=owner, dataset=dataset, data=data, filename=name)

    load(items[:1], "v1.jsonl")
    datasets.publish(actor=owner, dataset=dataset, message="v1")
    load(items[1:], "v2.jsonl")
    datasets.publish(actor=owner, dataset=dataset, message="v2")
    load([{"id": "draft-1", "question": "Not published yet?"}], "draft.jsonl")
    job = datasets.start_import_job(
        actor=owner, dataset=dataset, data=b"question\nFrom the matrix import?\n",
        filename="matrix.csv", fmt=None, mode="merge",
    )  # fmt: skip
    job.refresh_from_db()
    assert job.status == ImportJob.Status.VALIDATED
    dataset.refresh_from_db()
    return dataset, job


# The layout's per-response CSRF tokens (htmx header, sign-out form): a fresh random mask on
# every page, which says nothing about what was asked for.
_CSRF_TOKENS = re.compile(rb'("X-CSRFToken": "|name="csrfmiddlewaretoken" value=")[^"]*"')


def body(response) -> bytes:
    """A response's content without its per-response CSRF tokens, to compare two answers."""
    return _CSRF_TOKENS.sub(rb'\1"', response.content)


def last_audit_seq() -> int:
    return AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def login_as(client, world: World, who: str):
    if who == ANONYMOUS:
        return None
    user = quick_user(f"as-{who}")
    if who == OUTSIDER:
        grant_role(actor=SYSTEM, user=user, application=world.other, role=Role.ADMIN)
    else:
        grant_role(actor=SYSTEM, user=user, application=world.app, role=who)
    client.force_login(user)
    return user


# The webhook receivers the world names (resolved from a table: no DNS query is sent).
PUBLIC_HOSTS = {"hooks.app-a.net": "93.184.216.34", "hooks.matrix.net": "93.184.216.35"}


@pytest.fixture(scope="module")
def shared_world(django_db_setup, django_db_blocker):
    """The world, built once for the module inside a transaction rolled back at the end.

    pytest-django runs each test in a savepoint inside it (its TestCase skips the class-level
    transaction so that tests can be wrapped like this), so every cell sees exactly this state.
    """
    server, base_url = serve_in_thread(0)
    simulator = urlsplit(base_url).netloc

    def build() -> World:
        with public_hosts(PUBLIC_HOSTS, also=(simulator,)):
            world = build_world(base_url)
        world.simulator = simulator
        return world

    try:
        with rolled_back_world(django_db_blocker, build) as world:
            yield world
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def world(shared_world, db, settings, dns) -> World:
    """The shared world for one test (its writes roll back); runtime caches start empty."""
    name_public_hosts(settings, dns, PUBLIC_HOSTS, shared_world.simulator)
    caches["default"].clear()
    api_auth.forget_all()
    snapshot.forget_all()
    # Nothing an earlier test did is left over.
    assert (_fingerprint(shared_world), last_audit_seq()) == shared_world.baseline
    return shared_world


# ---------------------------------------------------------------------------------------------
# POST bodies that succeed when the caller is allowed
# ---------------------------------------------------------------------------------------------


def _prompt_form(content: dict, **extra) -> dict:
    return {
        "system": content["system"],
        "user": content["user"],
        "variables": ", ".join(content["variables"]),
        "params": '{"top_k": 9}',
        **extra,
    }


def _model_form(content: dict, **extra) -> dict:
    return {k: str(v) for k, v in content.items()} | {"max_tokens": "999"} | extra


def head_new_data(kind_slug: str) -> Callable[[World], dict]:
    def data(world: World) -> dict:
        ident = {"key": "fresh", "name": "Fresh", "description": "", "message": "new"}
        ident["base_number"] = "0"
        if kind_slug == PROMPT.slug:
            return _prompt_form(PROMPT_CONTENT, **ident)
        return _model_form(MODEL_CONTENT, **ident)

    return data


def head_edit_data(kind_slug: str) -> Callable[[World], dict]:
    def data(world: World) -> dict:
        head = world.heads[kind_slug]
        meta = {"base_number": str(head.latest_number), "message": "edit"}
        if kind_slug == PROMPT.slug:
            return _prompt_form(PROMPT_CONTENT, **meta)
        return _model_form(MODEL_CONTENT, **meta)

    return data


def bind_data(world: World) -> dict:
    return {"environment": "dev", "version": "1", "reason": "matrix"}


def preview_data(world: World) -> dict:
    return {"system": "Hi {{ name }}", "user": "", "variables": "name", "sample": '{"name": "x"}'}


def policy_data(world: World) -> dict:
    """Protect staging with two approvals: a tightening, so it takes effect at once."""
    return {"base": "0", "protected": "on", "required_approvals": "2", "max_error_rate": "0.1"}


def members_data(world: World) -> dict:
    return {"username": world.candidate.username, "role": Role.VIEWER}


# ---------------------------------------------------------------------------------------------
# The endpoints
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    label: str
    name: str  # namespaced URL name
    method: str = "get"
    kind: str | None = None  # registry kind slug, when the route takes one
    key: bool = False  # the route takes the head key (and maybe a version number)
    number: bool = False
    scoped: bool = True  # belongs to one application (takes <app>)
    perm: str | tuple[str, ...] | None = VIEW  # permission needed (a tuple: any one of them)
    ok: int = 200  # status when allowed
    data: Callable[[World], dict] | None = None
    # The events an allowed call writes, in order: usually one action, a tuple when the service
    # records more (applying a promotion also records the binding it makes).
    audit_action: str | tuple[str, ...] | None = None
    anonymous: int = 302  # what an anonymous caller gets
    authenticated: int | None = None  # fixed status for any signed-in user (unscoped routes)
    params: Callable[[World], dict] | None = None  # further URL kwargs (golden-set routes)
    # Further URL kwargs that depend on the caller, made before the call (the caller's own
    # promotion request): setup(world, user) → kwargs.
    setup: Callable[[World, object], dict] | None = None
    query: str | Callable[[World], str] = ""  # appended to the URL, e.g. "edit=1"
    changes_rows: bool = False  # an allowed call changes rows without an audit event
    xfail_pg: str = ""  # a known application bug on PostgreSQL when the call is allowed
    # What a member whose role lacks `perm` gets: 403, or 302 for views that refuse through
    # their service and redirect back with an error message (promotion decisions).
    refused: int = 403
    # The role may make this call, but the service refuses it (own request, protected
    # environment, finished run): a redirect with an error message, nothing written.
    service_refuses: bool = False
    # A known application bug in the allowed cells: they are strict xfails raising `bug_raises`.
    bug: str = ""
    bug_raises: type[BaseException] | None = None

    @property
    def actions(self) -> list[str]:
        if self.audit_action is None:
            return []
        if isinstance(self.audit_action, str):
            return [self.audit_action]
        return list(self.audit_action)

    def url(self, world: World, extra: dict | None = None) -> str:
        kwargs: dict = {}
        if self.scoped:
            kwargs["app"] = world.app.key
        if self.kind:
            kwargs["kind"] = self.kind
        if self.key:
            kwargs["key"] = world.heads[self.kind].key
        if self.number:
            kwargs["number"] = 1
        if self.params:
            kwargs.update(self.params(world))
        kwargs.update(extra or {})
        path = reverse(self.name, kwargs=kwargs)
        query = self.query(world) if callable(self.query) else self.query
        return f"{path}?{query}" if query else path


def _kind_endpoints(slug: str) -> list[Endpoint]:
    action = KINDS[slug].action
    return [
        Endpoint(f"head_list[{slug}]", "registry:head_list", kind=slug),
        Endpoint(f"head_new[{slug}]", "registry:head_new", kind=slug, perm=ENGINEER),
        Endpoint(
            f"head_new[{slug}] POST",
            "registry:head_new",
            "post",
            kind=slug,
            perm=ENGINEER,
            ok=302,
            data=head_new_data(slug),
            audit_action=f"{action}.create",
        ),
        Endpoint(f"head_detail[{slug}]", "registry:head_detail", kind=slug, key=True),
        Endpoint(f"head_edit[{slug}]", "registry:head_edit", kind=slug, key=True, perm=ENGINEER),
        Endpoint(
            f"head_edit[{slug}] POST",
            "registry:head_edit",
            "post",
            kind=slug,
            key=True,
            perm=ENGINEER,
            ok=302,
            data=head_edit_data(slug),
            audit_action=f"{action}.version.create",
        ),
        Endpoint(f"diff[{slug}]", "registry:diff", kind=slug, key=True),
        Endpoint(
            f"bind[{slug}] POST",
            "registry:bind",
            "post",
            kind=slug,
            key=True,
            perm=ENGINEER,
            ok=302,
            data=bind_data,
            audit_action=f"{action}.bind",
        ),
        Endpoint(
            f"version_detail[{slug}]", "registry:version_detail", kind=slug, key=True, number=True
        ),
    ]


def _golden(world: World) -> dict:
    return {"key": world.dataset.key}


def _golden_item(world: World) -> dict:
    return {"key": world.dataset.key, "item_id": "refund-1"}


def _golden_cell(world: World) -> dict:
    return {"key": world.dataset.key, "item_id": "refund-1", "field": "question"}


def _golden_job(world: World) -> dict:
    return {"key": world.dataset.key, "job": world.job.pk}


def cell_data(world: World) -> dict:
    current = DatasetItem.objects.get(dataset=world.dataset, item_id="refund-1").question
    return {"value": "How many days do I have to return an item?", "base": canonical_json(current)}


def upload_data(world: World) -> dict:
    upload = SimpleUploadedFile("new.csv", b"question\nUploaded in the matrix?\n")
    return {"file": upload, "mode": "merge", "format": ""}


def _dataset_endpoints() -> list[Endpoint]:
    return [
        Endpoint("datasets list", "datasets:list"),
        Endpoint("dataset new", "datasets:new", perm=CURATE),
        Endpoint(
            "dataset new POST",
            "datasets:new",
            "post",
            perm=CURATE,
            ok=302,
            data=lambda world: {"key": "fresh-set", "name": "Fresh set", "description": ""},
            audit_action="dataset.create",
        ),
        Endpoint("dataset editor", "datasets:editor", params=_golden),
        Endpoint("dataset hints", "datasets:hints", params=_golden),
        Endpoint("dataset variable gaps", "datasets:variable_gaps", params=_golden),
        Endpoint(
            "item add POST",
            "datasets:item_add",
            "post",
            params=_golden,
            perm=CURATE,
            data=lambda world: {"question": "Added in the matrix?"},
            audit_action="dataset.item.create",
        ),
        Endpoint(
            "bulk POST",
            "datasets:bulk",
            "post",
            params=_golden,
            perm=CURATE,
            ok=302,
            data=lambda world: {"action": "tag", "ids": ["refund-1", "ship-1"], "tag": "matrix"},
            audit_action="dataset.items.tag",
        ),
        Endpoint(
            "item duplicate POST",
            "datasets:item_duplicate",
            "post",
            params=_golden_item,
            perm=CURATE,
            data=lambda world: {},
            audit_action="dataset.item.create",
        ),
        Endpoint("cell", "datasets:cell", params=_golden_cell),
        Endpoint("cell edit", "datasets:cell", params=_golden_cell, query="edit=1", perm=CURATE),
        Endpoint(
            "cell POST",
            "datasets:cell",
            "post",
            params=_golden_cell,
            perm=CURATE,
            data=cell_data,
            audit_action="dataset.item.update",
        ),
        Endpoint("import", "datasets:import", params=_golden, perm=CURATE),
        Endpoint(
            "import POST",
            "datasets:import",
            "post",
            params=_golden,
            perm=CURATE,
            ok=302,
            data=upload_data,
            changes_rows=True,  # stores the file and its preview; the draft is unchanged
        ),
        Endpoint("import job", "datasets:import_job", params=_golden_job, perm=CURATE),
        Endpoint(
            "import job POST",
            "datasets:import_job",
            "post",
            params=_golden_job,
            perm=CURATE,
            ok=302,
            data=lambda world: {},
            audit_action="dataset.import",
        ),
        Endpoint("export", "datasets:export", params=_golden, query="format=csv"),
        Endpoint(
            "export version", "datasets:export", params=_golden, query="format=jsonl&version=1"
        ),
        Endpoint("publish", "datasets:publish", params=_golden, perm=CURATE),
        Endpoint(
            "publish POST",
            "datasets:publish",
            "post",
            params=_golden,
            perm=CURATE,
            ok=302,
            data=lambda world: {"message": "published from the matrix"},
            audit_action="dataset.publish",
        ),
        Endpoint("versions", "datasets:versions", params=_golden),
        Endpoint(
            "version items",
            "datasets:version",
            params=lambda world: {"key": world.dataset.key, "number": 1},
        ),
        Endpoint("diff", "datasets:diff", params=_golden, query="a=1&b=draft"),
    ]


# ------------------------------------------------------------------------------------ flags


def _flag(world: World) -> dict:
    return {"key": world.flag.key}


def _flag_in(env: str) -> Callable[[World], dict]:
    return lambda world: {"key": world.flag.key, "env": env}


def flag_new_data(world: World) -> dict:
    return {
        "key": "fresh-flag", "name": "Fresh flag", "description": "", "kind": FlagKind.RELEASE,
        "flag_type": FlagType.BOOLEAN, "owner": "", "variants": "", "off_variant": "",
    }  # fmt: skip


def flag_edit_data(world: World) -> dict:
    return {
        "name": "Checkout renamed", "description": "edited in the matrix",
        "kind": FlagKind.RELEASE, "owner": world.owner.username, "variants": "",
        "off_variant": "",
    }  # fmt: skip


def rules_data(env: str) -> Callable[[World], dict]:
    def data(world: World) -> dict:
        head = FlagRules.objects.get(flag=world.flag, environment__key=env)
        return {
            "content": json.dumps(rules("off")),
            "base_number": str(head.latest_number),
            "message": "from the matrix",
        }

    return data


def reason_data(world: World) -> dict:
    return {"reason": "from the matrix"}


def _flag_endpoints() -> list[Endpoint]:
    return [
        Endpoint("flags list", "flags:list"),
        Endpoint("flag new", "flags:new", perm=ENGINEER),
        Endpoint(
            "flag new POST",
            "flags:new",
            "post",
            perm=ENGINEER,
            ok=302,
            data=flag_new_data,
            audit_action="flag.create",
        ),
        Endpoint("flag detail", "flags:detail", params=_flag),
        Endpoint("flag edit", "flags:edit", params=_flag, perm=ENGINEER),
        Endpoint(
            "flag edit POST",
            "flags:edit",
            "post",
            params=_flag,
            perm=ENGINEER,
            ok=302,
            data=flag_edit_data,
            audit_action="flag.update",
        ),
        Endpoint(
            "flag evaluate",
            "flags:evaluate",
            params=_flag,
            query="environment=dev&targeting_key=user-1",
        ),
        Endpoint(
            "flag rules POST",
            "flags:rules",
            "post",
            params=_flag_in("dev"),
            perm=ENGINEER,
            ok=302,
            data=rules_data("dev"),
            audit_action="flag.rules.create",
        ),
        # prod is protected: its rules change only through a promotion.
        Endpoint(
            "flag rules POST (protected)",
            "flags:rules",
            "post",
            params=_flag_in("prod"),
            perm=ENGINEER,
            ok=302,
            data=rules_data("prod"),
            service_refuses=True,
        ),
        Endpoint(
            "flag kill POST",
            "flags:kill",
            "post",
            params=_flag_in("dev"),
            perm=ENGINEER,
            ok=302,
            data=reason_data,
            audit_action="flag.kill",
        ),
        # The kill switch bypasses protection: it works in prod at once.
        Endpoint(
            "flag kill POST (protected)",
            "flags:kill",
            "post",
            params=_flag_in("prod"),
            perm=ENGINEER,
            ok=302,
            data=reason_data,
            audit_action="flag.kill",
        ),
        Endpoint(
            "flag restore POST",
            "flags:restore",
            "post",
            params=_flag_in("staging"),
            perm=ENGINEER,
            ok=302,
            data=reason_data,
            audit_action="flag.restore",
        ),
        Endpoint("flag diff", "flags:diff", params=_flag_in("dev")),
    ]


# ------------------------------------------------------------------------------------ evals


def _run_of(attr: str, index: int | None = None) -> Callable[[World], dict]:
    def params(world: World) -> dict:
        run = getattr(world, attr)
        return {"pk": (run[index] if index is not None else run).pk}

    return params


def _answer_of_run(index: int) -> Callable[[World], dict]:
    def params(world: World) -> dict:
        run = world.runs[index]
        return {"pk": run.pk, "result": answered_result(run).pk}

    return params


def _reviewed_of_run(index: int) -> Callable[[World], dict]:
    def params(world: World) -> dict:
        run = world.runs[index]
        return {"pk": run.pk, "result": reviewed_result(run).pk}

    return params


def compare_query(world: World) -> str:
    first, second = world.runs
    return f"a={first.pk}&b={second.pk}"


def _eval_endpoints() -> list[Endpoint]:
    return [
        Endpoint("eval runs", "evals:runs"),
        Endpoint("eval new", "evals:new", perm=ENGINEER),
        Endpoint(
            "eval new POST",
            "evals:new",
            "post",
            perm=ENGINEER,
            ok=302,
            data=lambda world: dict(world.eval_post),
            audit_action="eval.launch",
        ),
        # A cost estimate writes nothing, but only someone who may launch asks for one.
        Endpoint(
            "eval estimate POST",
            "evals:estimate",
            "post",
            perm=ENGINEER,
            data=lambda world: dict(world.eval_post),
        ),
        Endpoint("eval compare", "evals:compare", query=compare_query),
        Endpoint("eval run", "evals:run", params=_run_of("runs", 0)),
        Endpoint(
            "eval cancel POST",
            "evals:cancel",
            "post",
            params=_run_of("queued_run"),
            perm=ENGINEER,
            ok=302,
            data=lambda world: {},
            audit_action="eval.cancel",
        ),
        # Marking an answer pass or fail is curation: curators, engineers and admins.
        Endpoint(
            "eval review POST",
            "evals:review",
            "post",
            params=_answer_of_run(0),
            perm=CURATE,
            ok=302,
            data=lambda world: {"verdict": "pass", "note": "looks right", "base_revision": "0"},
            audit_action="eval.review",
        ),
        # A reviewed answer becoming a golden-set item is curation too.
        Endpoint(
            "eval review to golden set POST",
            "evals:review_to_item",
            "post",
            params=_reviewed_of_run(0),
            perm=CURATE,
            ok=302,
            data=lambda world: {"dataset": world.dataset.key},
            audit_action="dataset.item.create",
        ),
        # Re-running a finished run on a golden set version launches a run: engineers only.
        Endpoint(
            "eval rerun POST",
            "evals:rerun",
            "post",
            params=_run_of("runs", 0),
            perm=ENGINEER,
            ok=302,
            data=lambda world: {"dataset_version": str(world.runs[0].dataset_version_id)},
            audit_action="eval.launch",
        ),
        Endpoint(
            "eval cancel POST (finished)",
            "evals:cancel",
            "post",
            params=_run_of("runs", 0),
            perm=ENGINEER,
            ok=302,
            data=lambda world: {},
            service_refuses=True,
        ),
    ]


# --------------------------------------------------------------------------------- releases


def _promotion(attr: str) -> Callable[[World], dict]:
    return lambda world: {"pk": getattr(world, attr).pk}


def own_promotion(approved: bool) -> Callable[[World, object], dict]:
    """The caller's own request (answer v2 → prod), approved by A's approver if asked.

    Members of A open it themselves — as if they held the engineer role when they did; for
    anonymous callers and non-members it is A's owner's (they never reach it anyway).
    """

    def setup(world: World, user) -> dict:
        member = user is not None and user.memberships.filter(application=world.app).exists()
        free_the_prompt(world, user)
        promotion = open_promotion(
            world.app.environments.get(key="prod"),
            world.heads[PROMPT.slug].versions.get(number=2),
            user if member else world.owner,
            world.approver if approved else None,
            paired=world.heads[MODEL_CONFIG.slug].versions.get(number=1),
        )
        return {"pk": promotion.pk}

    return setup


def own_promotion_with_checklist(world: World, user) -> dict:
    """own_promotion(), carrying a one-item readiness checklist to tick."""
    kwargs = own_promotion(approved=False)(world, user)
    PromotionRequest.objects.filter(pk=kwargs["pk"]).update(
        checklist={
            "items": [{"key": "on-call", "text": "On-call", "required": True, "check": ""}],
            "ticks": {},
        }
    )
    return kwargs


def act(action: str, **extra) -> Callable[[World], dict]:
    return lambda world: {"action": action, **extra}


def free_the_prompt(world: World, user) -> dict:
    """One open request per prompt and environment: A's pending request for answer steps aside
    (withdrawn by its requester) so the caller's own can be opened."""
    for other in PromotionRequest.objects.filter(
        environment__application=world.app,
        subject=f"prompt:{world.heads[PROMPT.slug].pk}",
        status__in=PromotionRequest.OPEN,
    ):
        releases.withdraw(actor=other.requested_by, request=other)
    return {}


# Nothing is live in prod: the request names the model config the prompt runs with.
PROMOTION_QUERY = "kind=prompt&key=answer&version=2&environment=prod&paired=main@1"
# dev's rules v2 of flag "checkout" into prod (where v1 is live): "<env>:<flag>" names the head.
FLAG_PROMOTION_QUERY = "kind=flag_rules&key=dev:checkout&version=2&environment=prod"


def promotion_data(query: str) -> Callable[[World], dict]:
    return lambda world: dict(parse_qs(query)) | {"justification": "from the matrix"}


FLAG_PROMOTION_BUG = (
    "BUG console/releases/services.py open_request() line 91 reads version.head.application_id, "
    "but a flag rules head (FlagRules) has no application_id (it is head.flag.application_id): "
    "every flag-rules promotion request raises AttributeError, a 500 for whoever may request one "
    "(also xfailed in tests/releases/test_apply_rollback.py). Fix: compare "
    "version.head.flag.application_id for kind flag_rules (e.g. via target_head / a helper)"
)


def history_data(action: str, kind: str = "", key: str = "", version: int = 0, **extra):
    def data(world: World) -> dict:
        body = {"action": action, "kind": kind, "key": key, "version": str(version), **extra}
        if action == "end_shadow":
            body["shadow"] = str(world.shadow.pk)
        return body

    return data


def _release_endpoints() -> list[Endpoint]:
    pending, approved = _promotion("pending"), _promotion("approved")
    # Applying main@2 × answer@1 (nothing live in prod yet) binds both halves of the bundle.
    bind_and_apply = ("model_config.bind", "prompt.bind", "promotion.apply")
    return [
        Endpoint("releases inbox", "releases:inbox"),
        Endpoint("release new", "releases:new", perm=ENGINEER, query=PROMOTION_QUERY),
        Endpoint(
            "release new POST",
            "releases:new",
            "post",
            perm=ENGINEER,
            ok=302,
            setup=free_the_prompt,
            data=promotion_data(PROMOTION_QUERY),
            audit_action="promotion.request",
        ),
        # Flag rules reach a protected environment only through a promotion as well.
        Endpoint(
            "release new (flag rules)", "releases:new", perm=ENGINEER, query=FLAG_PROMOTION_QUERY
        ),
        Endpoint(
            "release new POST (flag rules)",
            "releases:new",
            "post",
            perm=ENGINEER,
            ok=302,
            data=promotion_data(FLAG_PROMOTION_QUERY),
            audit_action="promotion.request",
        ),
        Endpoint("release detail", "releases:detail", params=pending),
        # Decisions: approvers and admins decide on someone else's request; anyone else is
        # refused by the service (a redirect with an error message, not 403).
        Endpoint(
            "approve POST",
            "releases:act",
            "post",
            params=pending,
            perm=APPROVE,
            ok=302,
            refused=302,
            data=act("approve"),
            audit_action="promotion.approve",
        ),
        Endpoint(
            "reject POST",
            "releases:act",
            "post",
            params=pending,
            perm=APPROVE,
            ok=302,
            refused=302,
            data=act("reject", comment="not yet"),
            audit_action="promotion.reject",
        ),
        # Nobody decides on their own request — approvers and admins included.
        Endpoint(
            "approve own POST",
            "releases:act",
            "post",
            setup=own_promotion(approved=False),
            perm=APPROVE,
            ok=302,
            refused=302,
            data=act("approve"),
            service_refuses=True,
        ),
        Endpoint(
            "reject own POST",
            "releases:act",
            "post",
            setup=own_promotion(approved=False),
            perm=APPROVE,
            ok=302,
            refused=302,
            data=act("reject", comment="no"),
            service_refuses=True,
        ),
        # Applying an approved request: an approver (or admin), or the requester.
        Endpoint(
            "apply POST",
            "releases:act",
            "post",
            params=approved,
            perm=APPROVE,
            ok=302,
            refused=302,
            data=act("apply"),
            audit_action=bind_and_apply,
        ),
        Endpoint(
            "apply own POST",
            "releases:act",
            "post",
            setup=own_promotion(approved=True),
            # The requester applies while still an engineer (or as an approver); a requester
            # since downgraded is refused by the service with a message.
            perm=(ENGINEER, APPROVE),
            ok=302,
            refused=302,
            data=act("apply"),
            # The bundle goes live together: the paired model config first, then the prompt.
            audit_action=("model_config.bind", "prompt.bind", "promotion.apply"),
        ),
        # Withdrawing: the requester only.
        # The requester ticks their own readiness checklist, whatever their role.
        Endpoint(
            "tick own readiness item POST",
            "releases:tick",
            "post",
            setup=own_promotion_with_checklist,
            ok=302,
            data=lambda world: {"item": "on-call", "note": "paged the on-call"},
            audit_action="promotion.checklist.tick",
        ),
        Endpoint(
            "withdraw own POST",
            "releases:act",
            "post",
            setup=own_promotion(approved=False),
            ok=302,
            data=act("withdraw"),
            audit_action="promotion.withdraw",
        ),
        Endpoint(
            "withdraw POST",
            "releases:act",
            "post",
            params=pending,
            ok=302,
            data=act("withdraw"),
            service_refuses=True,
        ),
        Endpoint("history", "releases:history", params=lambda world: {"env": "prod"}),
        Endpoint(
            "history rollback POST",
            "releases:history",
            "post",
            params=lambda world: {"env": "dev"},
            perm=ENGINEER,
            ok=302,
            data=history_data("rollback", "prompt", "answer", 1, reason="from the matrix"),
            audit_action=("prompt.bind", "promotion.rollback"),
        ),
        Endpoint(
            "history shadow POST",
            "releases:history",
            "post",
            params=lambda world: {"env": "staging"},
            perm=ENGINEER,
            ok=302,
            data=history_data("shadow", "model_config", "main", 2),
            audit_action="shadow.start",
        ),
        Endpoint(
            "history end shadow POST",
            "releases:history",
            "post",
            params=lambda world: {"env": "staging"},
            perm=ENGINEER,
            ok=302,
            data=history_data("end_shadow"),
            audit_action="shadow.end",
        ),
    ]


# ------------------------------------------------------------------------------------ usage


def budget_data(world: World) -> dict:
    return {
        "name": "Matrix budget", "period": "daily", "amount": "25", "environment": "dev",
        "thresholds": "50,100",
    }  # fmt: skip


def price_data(world: World) -> dict:
    return {
        "model": "gpt-4o-mini", "effective_from": (timezone.now() - timedelta(days=2)).date(),
        "input_per_1m": "0.20", "cached_input_per_1m": "0.10", "output_per_1m": "0.80",
        "tiers": "", "note": "from the matrix",
    }  # fmt: skip


def _usage_endpoints() -> list[Endpoint]:
    return [
        Endpoint("usage dashboard", "usage:dashboard"),
        Endpoint("usage export", "usage:export", query="view=daily"),
        Endpoint("budgets", "usage:budgets"),
        Endpoint(
            "budgets POST",
            "usage:budgets",
            "post",
            perm=ENGINEER,
            ok=302,
            data=budget_data,
            audit_action="budget.create",
        ),
        Endpoint("prices", "usage:prices"),
        Endpoint(
            "prices POST",
            "usage:prices",
            "post",
            perm=ADMIN,
            ok=302,
            data=price_data,
            audit_action="price.record",
        ),
    ]


def curate_data(world: World) -> dict:
    return curate_post(world.dataset.key, "How long do I have to return an item?")


def monitor_data(world: World) -> dict:
    return monitor_post("staging")


def sample_policy_data(world: World) -> dict:
    return policy_post()


def _experiment_endpoints() -> list[Endpoint]:
    """The matrix's flag splits no traffic: the report says so, and concluding is refused
    (422) for those who may conclude, with nothing written."""
    subject = {"params": lambda world: {"env": "prod", "flag": "checkout"}}
    return [
        Endpoint("experiments", "experiments:list"),
        Endpoint("experiment report", "experiments:report", **subject),
        Endpoint(
            "experiment conclude POST",
            "experiments:conclude",
            "post",
            perm=ENGINEER,
            ok=422,
            data=lambda world: {"variant": "on"},
            **subject,
        ),
    ]


def _shadow_endpoints() -> list[Endpoint]:
    """Shadow comparisons: every member reads them; requesting the promotion of the world's
    shadow (answer v1 in staging, not protected) is refused by the service with a message,
    nothing written (tests/experiments/test_shadows.py opens one in prod)."""
    shadow = {"params": lambda world: {"pk": world.shadow.pk}}
    return [
        Endpoint("shadows", "experiments:shadows"),
        Endpoint("shadow", "experiments:shadow", **shadow),
        Endpoint(
            "shadow promote POST",
            "experiments:shadow_promote",
            "post",
            perm=ENGINEER,
            ok=302,
            data=lambda world: {"justification": "from the matrix"},
            service_refuses=True,
            **shadow,
        ),
    ]


def _sample_endpoints() -> list[Endpoint]:
    sample = {"params": lambda world: {"pk": world.sample.pk}}
    return [
        Endpoint("samples", "samples:list", perm=CURATE),
        Endpoint("sample", "samples:detail", perm=CURATE, **sample),
        Endpoint(
            "sample curate POST",
            "samples:curate",
            "post",
            perm=CURATE,
            ok=302,
            data=curate_data,
            audit_action="dataset.item.create",
            **sample,
        ),
        Endpoint("quality", "samples:quality"),
        Endpoint("sample policy", "samples:policy", perm=ADMIN),
        Endpoint("monitors", "samples:monitors"),
        Endpoint(
            "monitor POST",
            "samples:monitors",
            "post",
            perm=ENGINEER,
            ok=302,
            data=monitor_data,
            audit_action="monitor.create",
        ),
        Endpoint(
            "monitor pause POST",
            "samples:monitor_enabled",
            "post",
            perm=ENGINEER,
            ok=302,
            data=lambda world: {"enabled": "0"},
            audit_action="monitor.disable",
            params=lambda world: {"pk": world.monitor.pk},
        ),
        Endpoint(
            "alert acknowledge POST",
            "samples:alert",
            "post",
            perm=ENGINEER,
            ok=302,
            data=lambda world: {"action": "acknowledge", "note": "on it"},
            audit_action="monitor.alert.acknowledge",
            params=lambda world: {"pk": world.alert.pk},
        ),
        Endpoint(
            "sample policy POST",
            "samples:policy",
            "post",
            perm=ADMIN,
            ok=302,
            data=sample_policy_data,
            audit_action="samples.policy.update",
        ),
    ]


ENDPOINTS: list[Endpoint] = [
    Endpoint("home", "registry:home", scoped=False, perm=None, authenticated=200),
    Endpoint("dashboard", "registry:dashboard"),
    Endpoint("environments", "registry:environments"),
    Endpoint("policy", "releases:policy", params=lambda world: {"env": "staging"}),
    Endpoint(
        "policy POST",
        "releases:policy",
        "post",
        perm=ADMIN,
        ok=302,
        params=lambda world: {"env": "staging"},
        data=policy_data,
        audit_action="environment.policy.change",
    ),
    Endpoint(
        "prompt_preview POST", "registry:prompt_preview", "post", perm=ENGINEER, data=preview_data
    ),
    *_kind_endpoints(PROMPT.slug),
    *_kind_endpoints(MODEL_CONFIG.slug),
    Endpoint("members", "accounts:members", perm=ADMIN),
    Endpoint("api keys", "accounts:api_keys", perm=ADMIN),
    Endpoint(
        "api keys POST",
        "accounts:api_keys",
        "post",
        perm=ADMIN,
        ok=302,  # Post/Redirect/Get: the new key is shown (once) on the page it redirects to
        data=lambda world: {"name": "matrix-key", "environment": "dev", "scopes": ["config:read"]},
        audit_action="api_key.create",
    ),
    Endpoint(
        "api key revoke POST",
        "accounts:api_key_revoke",
        "post",
        perm=ADMIN,
        ok=302,
        params=lambda world: {"key_id": world.api_key.pk},
        data=lambda world: {},
        audit_action="api_key.revoke",
    ),
    # Rotation redirects to the keys page, which shows the new key once.
    Endpoint(
        "api key rotate POST",
        "accounts:api_key_rotate",
        "post",
        perm=ADMIN,
        ok=302,
        params=lambda world: {"key_id": world.api_key.pk},
        data=lambda world: {"grace": "1h"},
        audit_action="api_key.rotate",
    ),
    Endpoint("webhooks", "notifications:webhooks", perm=ADMIN),
    # Adding one redirects to the page, which shows its signing secret once.
    Endpoint(
        "webhooks POST",
        "notifications:webhooks",
        "post",
        perm=ADMIN,
        ok=302,
        data=lambda world: {"url": "https://hooks.matrix.net/new", "events": "promotion."},
        audit_action="webhook.create",
    ),
    Endpoint(
        "webhook disable POST",
        "notifications:webhook_disable",
        "post",
        perm=ADMIN,
        ok=302,
        params=lambda world: {"hook_id": world.webhook.pk},
        data=lambda world: {},
        audit_action="webhook.disable",
    ),
    Endpoint(
        "webhook enable POST",
        "notifications:webhook_enable",
        "post",
        perm=ADMIN,
        ok=302,
        params=lambda world: {"hook_id": world.disabled_webhook.pk},
        data=lambda world: {},
        audit_action="webhook.enable",
    ),
    Endpoint(
        "webhook test POST",
        "notifications:webhook_test",
        "post",
        perm=ADMIN,
        ok=302,
        params=lambda world: {"hook_id": world.webhook.pk},
        data=lambda world: {},
        audit_action="webhook.test",
    ),
    Endpoint(
        "webhook delete POST",
        "notifications:webhook_delete",
        "post",
        perm=ADMIN,
        ok=302,
        params=lambda world: {"hook_id": world.webhook.pk},
        data=lambda world: {},
        audit_action="webhook.delete",
    ),
    Endpoint(
        "members POST",
        "accounts:members",
        "post",
        perm=ADMIN,
        ok=302,
        data=members_data,
        audit_action="membership.grant",
    ),
    # The login page shows itself to strangers and sends signed-in users home.
    Endpoint("login", "accounts:login", scoped=False, perm=None, anonymous=200, authenticated=302),
    Endpoint(
        "logout POST",
        "accounts:logout",
        "post",
        scoped=False,
        perm=None,
        anonymous=302,
        authenticated=302,
        data=lambda world: {},
    ),
    Endpoint("audit log", "audit:log", scoped=False, perm=None, authenticated=200),
    Endpoint("audit csv", "audit:export_csv", scoped=False, perm=None, authenticated=200),
    Endpoint("audit jsonl", "audit:export_jsonl", scoped=False, perm=None, authenticated=200),
    *_dataset_endpoints(),
    *_flag_endpoints(),
    *_eval_endpoints(),
    *_release_endpoints(),
    *_usage_endpoints(),
    *_sample_endpoints(),
    *_experiment_endpoints(),
    *_shadow_endpoints(),
]


def perms_in_app(who: str) -> frozenset[str]:
    """The caller's permissions in application A, straight from the role table."""
    if who in (ANONYMOUS, OUTSIDER):
        return frozenset()
    return ROLE_PERMISSIONS[who]


def decision(endpoint: Endpoint, who: str) -> str:
    """What the role table says happens: anonymous, unscoped, not_found, forbidden or allowed."""
    if who == ANONYMOUS:
        return "anonymous"
    if not endpoint.scoped:
        return "unscoped"
    perms = perms_in_app(who)
    if VIEW not in perms:
        return "not_found"  # not a member: the application "does not exist"
    needed = (endpoint.perm,) if isinstance(endpoint.perm, str) else endpoint.perm
    if needed is not None and not any(p in perms for p in needed):
        return "forbidden"
    return "allowed"


def expected_status(endpoint: Endpoint, who: str) -> int:
    outcome = decision(endpoint, who)
    if outcome == "anonymous":
        return endpoint.anonymous
    if outcome == "unscoped":
        assert endpoint.authenticated is not None
        return endpoint.authenticated
    return {"not_found": 404, "forbidden": endpoint.refused, "allowed": endpoint.ok}[outcome]


def _matrix():
    for endpoint in ENDPOINTS:
        for who in WHO:
            marks = []
            if (
                endpoint.xfail_pg
                and connection.vendor == "postgresql"
                and decision(endpoint, who) == "allowed"
            ):
                marks.append(pytest.mark.xfail(strict=True, reason=endpoint.xfail_pg))
            if endpoint.bug and decision(endpoint, who) == "allowed":
                bug = pytest.mark.xfail(
                    strict=True, raises=endpoint.bug_raises, reason=endpoint.bug
                )
                marks.append(bug)
            yield pytest.param(endpoint, who, id=f"{endpoint.label}-{who}", marks=marks)


def _fingerprint(world: World) -> dict:
    heads = {
        slug: sorted(
            kind.head.objects.filter(application=world.app).values_list("key", "latest_number")
        )
        for slug, kind in KINDS.items()
    }
    bindings = {
        slug: sorted(
            kind.binding.objects.filter(environment__application=world.app).values_list(
                "environment__key", "head__key", "version__number"
            )
        )
        for slug, kind in KINDS.items()
    }
    policies = sorted(
        Environment.objects.filter(application=world.app).values_list(
            "key", "protected", "required_approvals", "eval_gate_required"
        )
    )
    members = sorted(
        Membership.objects.filter(application=world.app).values_list("user__username", "role")
    )
    golden_sets = sorted(
        Dataset.objects.filter(application=world.app).values_list("key", "latest_number")
    )
    draft_items = sorted(
        DatasetItem.objects.filter(dataset__application=world.app).values_list(
            "dataset__key", "item_id", "content_hash", "revision"
        )
    )
    import_jobs = sorted(
        ImportJob.objects.filter(dataset__application=world.app).values_list("pk", "status")
    )
    api_keys = sorted(
        ApiKey.objects.filter(application=world.app).values_list(
            "name", "prefix", "revoked_at", "expires_at"
        )
    )
    webhooks = sorted(
        Webhook.objects.filter(application=world.app).values_list("pk", "url", "events", "active")
    )
    webhook_deliveries = sorted(
        WebhookDelivery.objects.filter(webhook__application=world.app).values_list("pk", "kind")
    )
    return {
        "heads": heads,
        "bindings": bindings,
        "policies": policies,
        "members": members,
        "golden_sets": golden_sets,
        "draft_items": draft_items,
        "import_jobs": import_jobs,
        "api_keys": api_keys,
        "webhooks": webhooks,
        "webhook_deliveries": webhook_deliveries,
        "reviews": sorted(
            ResultReview.objects.filter(result__run__application=world.app).values_list(
                "result_id", "verdict", "note", "revision"
            )
        ),
        **_release_fingerprint(),
    }


def _release_fingerprint() -> dict:
    """Flags, eval runs, promotions, shadows, budgets, prices and notifications — of every
    application, so a write that lands in B shows too."""
    return {
        "flags": sorted(
            Flag.objects.values_list("application_id", "key", "name", "description", "owner_id")
        ),
        "flag_rules": sorted(
            FlagRules.objects.values_list("flag_id", "environment_id", "latest_number", "killed")
        ),
        "eval_runs": sorted(EvalRun.objects.values_list("pk", "status", "cancel_requested")),
        "promotions": sorted(
            PromotionRequest.objects.values_list(
                "pk", "status", "revision", "justification", "checklist"
            )
        ),
        "approvals": sorted(Approval.objects.values_list("request_id", "approver_id", "decision")),
        "shadows": sorted(ShadowDeployment.objects.values_list("pk", "active")),
        "budgets": sorted(Budget.objects.values_list("pk", "application_id", "name", "amount")),
        "prices": sorted(PricePoint.objects.values_list("application_id", "model", "pk")),
        "usage_cost": UsageEvent.objects.aggregate(total=Sum("cost"))["total"],
        "notifications": Notification.objects.count(),
        "sample_policies": sorted(
            SamplePolicy.objects.values_list("application_id", "revision", "judge_rate")
        ),
        "samples": sorted(Sample.objects.values_list("pk", "curated_into", "judge_state")),
        "monitors": sorted(Monitor.objects.values_list("pk", "metric", "enabled")),
        "alerts": sorted(MonitorAlert.objects.values_list("pk", "state", "note")),
    }


@pytest.mark.django_db
@pytest.mark.parametrize(("endpoint", "who"), list(_matrix()))
def test_url_role_matrix(client, world: World, endpoint: Endpoint, who: str):
    user = login_as(client, world, who)
    url = endpoint.url(world, endpoint.setup(world, user) if endpoint.setup else None)
    last_seq = last_audit_seq()
    rows_before = _fingerprint(world)

    if endpoint.method == "post":
        response = client.post(url, endpoint.data(world))
    else:
        response = client.get(url)

    want = expected_status(endpoint, who)
    assert response.status_code == want, (
        f"{endpoint.method.upper()} {url} as {who}: got {response.status_code}, expected {want}"
    )

    if want == 302 and who == ANONYMOUS and endpoint.name != "accounts:logout":
        location = urlsplit(response["Location"])
        assert location.path == LOGIN_URL
        assert parse_qs(location.query) == {"next": [url]}
    elif want == 302 and endpoint.name not in {"accounts:login", "accounts:logout"}:
        # A write (or a refusal with a message) redirects inside the application, never to the
        # login page.
        assert urlsplit(response["Location"]).path.startswith(f"/apps/{world.app.key}/")

    outcome = decision(endpoint, who)
    allowed = outcome == "allowed" and not endpoint.service_refuses
    refused_with_message = (outcome == "forbidden" and endpoint.refused == 302) or (
        outcome == "allowed" and endpoint.service_refuses
    )
    errors = [m.message for m in get_messages(response.wsgi_request) if m.level == ERROR]
    if refused_with_message:
        assert errors, f"{who} was refused without a message"
    elif outcome == "allowed":
        assert errors == [], f"{who} was refused: {errors}"

    new_events = list(AuditEvent.objects.filter(seq__gt=last_seq).order_by("seq"))
    if allowed and endpoint.audit_action is not None:
        assert [e.action for e in new_events] == endpoint.actions
        assert {e.application_id for e in new_events} == {world.app.pk}
        assert _fingerprint(world) != rows_before
    elif allowed and endpoint.changes_rows:
        assert new_events == []
        assert _fingerprint(world) != rows_before
    else:
        assert new_events == [], f"{who} left audit events: {[e.action for e in new_events]}"
        assert _fingerprint(world) == rows_before


def _route_names(module) -> set[str]:
    names = set()
    for pattern in module.urlpatterns:
        assert isinstance(pattern, URLPattern | URLResolver)
        if isinstance(pattern, URLPattern) and pattern.name:
            names.add(f"{module.app_name}:{pattern.name}")
    return names


URL_MODULES = (
    registry_urls, accounts_urls, audit_urls, datasets_urls, flags_urls, evals_urls, usage_urls,
    releases_urls, notifications_urls, samples_urls, experiments_urls,
)  # fmt: skip


def test_matrix_covers_every_named_route():
    """A route added to any of the URL modules without a row in the matrix fails here."""
    routes = set().union(*(_route_names(m) for m in URL_MODULES))
    assert {r.split(":")[0] for r in routes} == {
        "registry", "accounts", "audit", "datasets", "flags", "evals", "usage", "releases",
        "notifications", "samples", "experiments",
    }  # fmt: skip
    # The runtime API (console.api: config, OFREP, usage ingestion) authenticates API keys, not
    # sessions: tests/api and tests/usage/test_ingest_api.py walk it, not this matrix.
    covered = {endpoint.name for endpoint in ENDPOINTS}
    assert routes - covered == set()
    assert covered - routes == set()
    # Every kind is walked for every per-kind route.
    per_kind = {e.name for e in ENDPOINTS if e.kind}
    for name in per_kind:
        assert {e.kind for e in ENDPOINTS if e.name == name} == set(KINDS)


def test_expectations_follow_the_role_table():
    """Sanity of the derivation itself, so a bug in it cannot make the matrix vacuous."""
    by_label = {e.label: e for e in ENDPOINTS}
    labels = (
        "dashboard", "head_edit[prompts] POST", "members POST", "home", "publish POST",
        "dataset editor", "cell edit",
    )  # fmt: skip
    cells = {(label, who): expected_status(by_label[label], who) for label in labels for who in WHO}
    assert cells[("dashboard", Role.VIEWER)] == 200
    assert cells[("dashboard", OUTSIDER)] == 404
    assert cells[("dashboard", ANONYMOUS)] == 302
    assert cells[("head_edit[prompts] POST", Role.VIEWER)] == 403
    assert cells[("head_edit[prompts] POST", Role.CURATOR)] == 403
    assert cells[("head_edit[prompts] POST", Role.APPROVER)] == 403
    assert cells[("head_edit[prompts] POST", Role.ENGINEER)] == 302
    assert cells[("head_edit[prompts] POST", Role.ADMIN)] == 302
    assert cells[("head_edit[prompts] POST", OUTSIDER)] == 404
    assert [cells[("members POST", r)] for r in Role.values] == [403, 403, 403, 403, 302]
    assert cells[("home", OUTSIDER)] == 200
    # Golden sets: curator, engineer and admin curate; viewer and approver only read.
    assert [cells[("publish POST", r)] for r in Role.values] == [403, 302, 302, 403, 302]
    assert [cells[("cell edit", r)] for r in Role.values] == [403, 200, 200, 403, 200]
    assert [cells[("dataset editor", r)] for r in Role.values] == [200] * 5
    assert cells[("publish POST", OUTSIDER)] == 404
    assert cells[("dataset editor", ANONYMOUS)] == 302
    # Every role can read every page of its application.
    for role in Role.values:
        assert VIEW in ROLE_PERMISSIONS[role]


def test_expectations_for_flags_evals_releases_and_usage():
    """The same sanity check for the routes added later, written out role by role."""
    by_label = {e.label: e for e in ENDPOINTS}

    def row(label: str) -> list:
        return [expected_status(by_label[label], r) for r in Role.values]

    def outcomes(label: str) -> list:
        endpoint = by_label[label]
        return [
            "refused" if endpoint.service_refuses and d == "allowed" else d
            for d in (decision(endpoint, r) for r in Role.values)
        ]

    # Reads: every role.
    for label in ("flags list", "eval run", "release detail", "usage dashboard", "prices"):
        assert row(label) == [200] * 5
    # Engineer writes (flags, evals, releases, budgets): engineer and admin.
    for label in (
        "flag kill POST", "eval new POST", "eval rerun POST", "release new POST", "budgets POST",
    ):  # fmt: skip
        assert row(label) == [403, 403, 302, 403, 302]
    assert row("eval estimate POST") == [403, 403, 200, 403, 200]
    # Prices: admin only.
    assert row("prices POST") == [403, 403, 403, 403, 302]
    # API keys and webhooks: admin only.
    # Creating and rotating redirect (Post/Redirect/Get); the new secret shows on the next page.
    assert row("api keys POST") == [403, 403, 403, 403, 302]
    assert row("api key rotate POST") == [403, 403, 403, 403, 302]
    assert row("webhooks") == [403, 403, 403, 403, 200]
    assert row("webhooks POST") == [403, 403, 403, 403, 302]
    for label in (
        "webhook disable POST",
        "webhook enable POST",
        "webhook test POST",
        "webhook delete POST",
    ):
        assert row(label) == [403, 403, 403, 403, 302]
        assert expected_status(by_label[label], OUTSIDER) == 404
    # Decisions redirect everyone back; only approvers and admins get through.
    assert row("approve POST") == [302] * 5
    assert outcomes("approve POST") == ["forbidden"] * 3 + ["allowed"] * 2
    assert outcomes("approve own POST") == ["forbidden"] * 3 + ["refused"] * 2
    assert outcomes("apply POST") == ["forbidden"] * 3 + ["allowed"] * 2
    assert outcomes("apply own POST") == ["forbidden"] * 2 + ["allowed"] * 3
    assert outcomes("withdraw POST") == ["refused"] * 5  # the requester only
    assert outcomes("flag rules POST (protected)") == ["forbidden"] * 2 + [
        "refused",
        "forbidden",
        "refused",
    ]
    for label in ("flags list", "approve POST", "prices POST", "apply own POST"):
        assert expected_status(by_label[label], OUTSIDER) == 404
        assert expected_status(by_label[label], ANONYMOUS) == 302


# ---------------------------------------------------------------------------------------------
# Cross-application object keys: a user of A asking for B's keys learns nothing (404, not 403)
# ---------------------------------------------------------------------------------------------

OBJECT_ROUTES = [
    ("registry:head_detail", "get", {}),
    ("registry:head_edit", "get", {}),
    ("registry:head_edit", "post", {"base_number": "1", "message": "x"}),
    ("registry:diff", "get", {}),
    ("registry:version_detail", "get", {"number": 1}),
    ("registry:bind", "post", {"environment": "dev", "version": "1"}),
]


def _object_cases():
    for slug in KINDS:
        for name, method, extra in OBJECT_ROUTES:
            yield pytest.param(slug, name, method, extra, id=f"{name}-{method}-{slug}")


@pytest.mark.django_db
@pytest.mark.parametrize(("slug", "name", "method", "extra"), list(_object_cases()))
def test_keys_of_another_application_are_not_found(client, world, slug, name, method, extra):
    login_as(client, world, Role.ADMIN)  # the strongest role in A, none in B
    b_head = world.other_heads[slug]
    last_seq = last_audit_seq()

    number = extra.get("number")
    post = {k: v for k, v in extra.items() if k != "number"}
    if method == "post" and name == "registry:head_edit":
        post |= head_edit_data(slug)(world) | {"base_number": str(b_head.latest_number)}

    def call(app_key: str, key: str):
        kwargs = {"app": app_key, "kind": slug, "key": key}
        if number is not None:
            kwargs["number"] = number
        url = reverse(name, kwargs=kwargs)
        return client.post(url, post) if method == "post" else client.get(url)

    # B's key asked for under A (where the caller is admin), and under B (not a member).
    b_key_in_a = call(world.app.key, b_head.key)
    b_key_in_b = call(world.other.key, b_head.key)
    # Baselines: a key and an application that exist nowhere.
    missing_key = call(world.app.key, "never-existed")
    missing_app = call("no-such-app", b_head.key)

    assert b_key_in_a.status_code == 404
    assert b_key_in_b.status_code == 404
    assert missing_key.status_code == 404
    assert missing_app.status_code == 404
    # Indistinguishable from something that does not exist.
    assert body(b_key_in_b) == body(missing_app)
    assert body(b_key_in_a) == body(missing_key)
    for response in (b_key_in_a, b_key_in_b):
        assert b"B-ONLY-SECRET" not in response.content
        assert world.other.name.encode() not in response.content

    assert not AuditEvent.objects.filter(seq__gt=last_seq).exists()
    b_head.refresh_from_db()
    assert b_head.latest_number == 2
    assert not KINDS[slug].binding.objects.filter(head=b_head).exists()


DATASET_OBJECT_ROUTES = [
    ("datasets:editor", "get", {}, ""),
    ("datasets:hints", "get", {}, ""),
    ("datasets:variable_gaps", "get", {}, ""),
    ("datasets:versions", "get", {}, ""),
    ("datasets:version", "get", {"number": 1}, ""),
    ("datasets:diff", "get", {}, "a=1&b=2"),
    ("datasets:export", "get", {}, "format=jsonl&version=1"),
    ("datasets:cell", "get", {"item_id": "refund-1", "field": "question"}, ""),
    ("datasets:cell", "post", {"item_id": "refund-1", "field": "question"}, ""),
    ("datasets:item_duplicate", "post", {"item_id": "refund-1"}, ""),
    ("datasets:bulk", "post", {}, ""),
    ("datasets:publish", "post", {}, ""),
    ("datasets:import", "get", {}, ""),
]


def _b_state(world: World) -> list:
    return [
        (
            d.key,
            Dataset.objects.get(pk=d.pk).latest_number,
            sorted(d.draft_items.values_list("item_id", "content_hash")),
            sorted(d.import_jobs.values_list("pk", "status")),
        )
        for d in world.other_datasets.values()
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "method", "extra", "query"),
    [pytest.param(*r, id=f"{r[0]}-{r[1]}") for r in DATASET_OBJECT_ROUTES],
)
def test_golden_sets_of_another_application_are_not_found(
    client, world, name, method, extra, query
):
    login_as(client, world, Role.ADMIN)  # the strongest role in A, none in B
    before = _b_state(world)
    last_seq = last_audit_seq()
    data = {
        "value": "overwritten", "base": '"B-ONLY-SECRET How long do I have to return an item?"',
        "action": "delete", "ids": ["refund-1"], "message": "from A",
    }  # fmt: skip

    def call(app_key: str, key: str):
        path = reverse(name, kwargs={"app": app_key, "key": key, **extra})
        target = f"{path}?{query}" if query else path
        return client.post(target, data) if method == "post" else client.get(target)

    b_key_in_a = call(world.app.key, "b-only-set")
    b_key_in_b = call(world.other.key, "b-only-set")
    missing_key = call(world.app.key, "never-existed")
    missing_app = call("no-such-app", "b-only-set")

    for response in (b_key_in_a, b_key_in_b, missing_key, missing_app):
        assert response.status_code == 404
        assert b"B-ONLY-SECRET" not in response.content
    assert body(b_key_in_b) == body(missing_app)
    assert body(b_key_in_a) == body(missing_key)
    assert not AuditEvent.objects.filter(seq__gt=last_seq).exists()
    assert _b_state(world) == before


@pytest.mark.django_db
def test_an_import_job_of_another_application_is_not_found(client, world):
    login_as(client, world, Role.ADMIN)
    b_job = world.other_datasets["golden"].import_jobs.get()
    url = reverse(
        "datasets:import_job", kwargs={"app": world.app.key, "key": "golden", "job": b_job.pk}
    )
    assert client.get(url).status_code == 404
    assert client.post(url).status_code == 404
    b_job.refresh_from_db()
    assert b_job.status == ImportJob.Status.VALIDATED
    assert (
        not world.other_datasets["golden"]
        .draft_items.filter(question="From the matrix import?")
        .exists()
    )


@pytest.mark.django_db
def test_same_golden_set_key_in_two_applications_resolves_to_the_callers_own(client, world):
    login_as(client, world, Role.VIEWER)
    url = reverse("datasets:export", kwargs={"app": world.app.key, "key": "golden"})
    body = b"".join(client.get(url, {"format": "jsonl"}).streaming_content)
    assert [json.loads(line)["id"] for line in body.splitlines()] == [
        "refund-1",
        "ship-1",
        "draft-1",
    ]
    assert b"B-ONLY-SECRET" not in body


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "", "environments/", "prompts/", "models/", "prompts/new/", "members/", "flags/",
        "flags/new/", "evals/", "evals/new/", "releases/", "releases/history/prod/", "usage/",
        "usage/export.csv", "usage/budgets/", "usage/prices/", "keys/", "webhooks/",
        "samples/", "samples/quality/", "samples/policy/", "samples/monitors/",
    ],
)  # fmt: skip
def test_pages_of_another_application_are_not_found(client, world, path):
    login_as(client, world, Role.ADMIN)
    response = client.get(f"/apps/{world.other.key}/{path}")
    missing = client.get(f"/apps/no-such-app/{path}")
    assert response.status_code == 404
    assert body(response) == body(missing)


@pytest.mark.django_db
def test_same_key_in_two_applications_resolves_to_the_callers_own(client, world):
    login_as(client, world, Role.VIEWER)
    url = reverse(
        "registry:version_detail",
        kwargs={"app": world.app.key, "kind": PROMPT.slug, "key": "answer", "number": 1},
    )
    response = client.get(url)
    assert response.status_code == 200
    assert response.context["head"].application_id == world.app.pk
    assert response.context["version"].content["system"] == PROMPT_CONTENT["system"]
    assert b"B-ONLY-SECRET" not in response.content


@pytest.mark.django_db
def test_admin_of_a_cannot_touch_memberships_of_b(client, world):
    login_as(client, world, Role.ADMIN)
    b_membership = Membership.objects.get(application=world.other, user__username="owner-b")
    last_seq = last_audit_seq()

    revoke = client.post(
        reverse("accounts:members", kwargs={"app": world.app.key}),
        {"action": "revoke", "membership": str(b_membership.pk)},
    )
    assert revoke.status_code == 404
    assert Membership.objects.filter(pk=b_membership.pk, role=Role.ADMIN).exists()
    assert not AuditEvent.objects.filter(seq__gt=last_seq).exists()


@pytest.mark.django_db
def test_audit_log_shows_a_non_member_nothing_of_the_application(client, world):
    login_as(client, world, OUTSIDER)
    a_events = AuditEvent.objects.filter(application=world.app).count()
    assert a_events > 0

    page = client.get(reverse("audit:log"), {"application": world.app.key})
    assert page.status_code == 200
    assert page.context["events"] == []

    export = client.get(reverse("audit:export_jsonl"))
    assert export.status_code == 200
    body = b"".join(export.streaming_content).decode()
    apps_seen = {json.loads(line)["application_id"] for line in body.splitlines()}
    assert apps_seen == {world.other.pk}


@pytest.mark.django_db
def test_superuser_who_is_not_a_member_is_treated_as_a_non_member(client, world):
    superuser = get_user_model().objects.create_superuser("root", "root@example.com", None)
    client.force_login(superuser)
    assert client.get("/").context["applications"] == []
    assert client.get(f"/apps/{world.app.key}/").status_code == 404
    assert client.get(f"/apps/{world.app.key}/members/").status_code == 404


# ---------------------------------------------------------------------------------------------
# Flags, eval runs, promotions and environments of another application
# ---------------------------------------------------------------------------------------------

# Whatever a write to any of these routes would need, so a 404 is not a mere form error.
CROSS_POST = {
    "name": "from A", "description": "", "kind": FlagKind.RELEASE, "owner": "", "variants": "",
    "off_variant": "", "content": json.dumps(rules("off")), "base_number": "2",
    "message": "from A", "reason": "from A", "action": "approve", "comment": "from A",
    "justification": "from A",
}  # fmt: skip


def _post_or_get(client, method: str, url: str, data: dict | None = None):
    return client.post(url, data or CROSS_POST) if method == "post" else client.get(url)


def _assert_indistinguishable(found_elsewhere, missing) -> None:
    """404, byte for byte what something that does not exist gets, and nothing of B in it."""
    assert found_elsewhere.status_code == 404
    assert missing.status_code == 404
    assert body(found_elsewhere) == body(missing)
    assert b"B-ONLY-SECRET" not in found_elsewhere.content


def _b_release_state(world: World) -> dict:
    return {
        **_release_fingerprint(),
        "b_bindings": sorted(
            KINDS[PROMPT.slug]
            .binding.objects.filter(environment__application=world.other)
            .values_list("environment__key", "head__key", "version__number")
        ),
    }


FLAG_ROUTES = [
    ("flags:detail", "get", None, ""),
    ("flags:edit", "get", None, ""),
    ("flags:edit", "post", None, ""),
    ("flags:evaluate", "get", None, "environment=dev&targeting_key=user-1"),
    ("flags:rules", "post", "dev", ""),
    ("flags:kill", "post", "dev", ""),
    ("flags:restore", "post", "staging", ""),
    ("flags:diff", "get", "dev", ""),
]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "method", "env", "query"),
    [pytest.param(*r, id=f"{r[0]}-{r[1]}") for r in FLAG_ROUTES],
)
def test_flags_of_another_application_are_not_found(client, world, name, method, env, query):
    login_as(client, world, Role.ADMIN)  # the strongest role in A, none in B
    before = _b_release_state(world)
    last_seq = last_audit_seq()

    def call(app_key: str, key: str):
        kwargs = {"app": app_key, "key": key} | ({"env": env} if env else {})
        path = reverse(name, kwargs=kwargs)
        return _post_or_get(client, method, f"{path}?{query}" if query else path)

    _assert_indistinguishable(call(world.app.key, "b-only-flag"), call(world.app.key, "nope"))
    _assert_indistinguishable(call(world.other.key, "b-only-flag"), call("no-such-app", "nope"))
    # The same key exists in B: asked for under B, it is B's and still not found.
    _assert_indistinguishable(call(world.other.key, "checkout"), call("no-such-app", "checkout"))
    assert not AuditEvent.objects.filter(seq__gt=last_seq).exists()
    assert _b_release_state(world) == before


FLAG_ENV_ROUTES = [
    ("flags:rules", "post"),
    ("flags:kill", "post"),
    ("flags:restore", "post"),
    ("flags:diff", "get"),
    ("flags:evaluate", "get"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "method"), FLAG_ENV_ROUTES)
def test_environment_keys_of_another_application_are_not_found_for_flags(
    client, world, name, method
):
    """A's own flag, with an environment key only B has."""
    login_as(client, world, Role.ADMIN)
    before = (_fingerprint(world), _b_release_state(world))
    last_seq = last_audit_seq()

    def call(env: str):
        if name == "flags:evaluate":
            path = reverse(name, kwargs={"app": world.app.key, "key": world.flag.key})
            return client.get(path, {"environment": env, "targeting_key": "user-1"})
        path = reverse(name, kwargs={"app": world.app.key, "key": world.flag.key, "env": env})
        return _post_or_get(client, method, path)

    _assert_indistinguishable(call("b-only-env"), call("never-existed"))
    assert not AuditEvent.objects.filter(seq__gt=last_seq).exists()
    assert (_fingerprint(world), _b_release_state(world)) == before


@pytest.mark.django_db
def test_same_flag_key_in_two_applications_resolves_to_the_callers_own(client, world):
    login_as(client, world, Role.VIEWER)
    response = client.get(reverse("flags:detail", kwargs={"app": world.app.key, "key": "checkout"}))
    assert response.status_code == 200
    assert response.context["flag"].pk == world.flag.pk
    assert b"B-ONLY-SECRET" not in response.content


EVAL_ROUTES = [("evals:run", "get"), ("evals:cancel", "post")]


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "method"), EVAL_ROUTES)
def test_eval_runs_of_another_application_are_not_found(client, world, name, method):
    login_as(client, world, Role.ADMIN)
    before = _b_release_state(world)
    last_seq = last_audit_seq()
    missing_pk = EvalRun.objects.order_by("-pk").values_list("pk", flat=True).first() + 1000

    def call(app_key: str, pk: int):
        return _post_or_get(client, method, reverse(name, kwargs={"app": app_key, "pk": pk}), {})

    _assert_indistinguishable(
        call(world.app.key, world.other_run.pk), call(world.app.key, missing_pk)
    )
    _assert_indistinguishable(call(world.other.key, world.other_run.pk), call("no-such-app", 1))
    assert not AuditEvent.objects.filter(seq__gt=last_seq).exists()
    assert _b_release_state(world) == before
    assert EvalRun.objects.get(pk=world.other_run.pk).status == EvalRun.Status.QUEUED


@pytest.mark.django_db
def test_comparing_with_a_run_of_another_application_is_not_found(client, world):
    login_as(client, world, Role.ADMIN)
    url = reverse("evals:compare", kwargs={"app": world.app.key})
    mine, theirs = world.runs[0].pk, world.other_run.pk
    missing = EvalRun.objects.order_by("-pk").values_list("pk", flat=True).first() + 1000
    _assert_indistinguishable(
        client.get(url, {"a": mine, "b": theirs}), client.get(url, {"a": mine, "b": missing})
    )
    _assert_indistinguishable(
        client.get(url, {"a": theirs, "b": mine}), client.get(url, {"a": missing, "b": mine})
    )


def _b_launch_post(world: World) -> dict:
    b_golden = DatasetVersion.objects.get(head=world.other_datasets["golden"], number=2)
    return world.eval_post | {
        "dataset_version": str(b_golden.pk),
        "prompt_version": str(world.other_heads[PROMPT.slug].versions.get(number=1).pk),
        "model_version": str(world.other_heads[MODEL_CONFIG.slug].versions.get(number=1).pk),
    }


@pytest.mark.django_db
def test_launching_on_versions_of_another_application_runs_nothing(client, world):
    login_as(client, world, Role.ADMIN)
    before = _b_release_state(world)
    last_seq = last_audit_seq()
    b_versions = _b_launch_post(world)
    missing = dict.fromkeys(("dataset_version", "prompt_version", "model_version"), "999999")
    launch = client.post(reverse("evals:new", kwargs={"app": world.app.key}), b_versions)
    estimate_url = reverse("evals:estimate", kwargs={"app": world.app.key})
    estimate = client.post(estimate_url, b_versions)
    assert launch.status_code == 200  # the form, with B's versions refused as invalid choices
    assert {"dataset_version", "prompt_version", "model_version"} <= set(
        launch.context["form"].errors
    )
    # No estimate for B's versions: exactly what versions that exist nowhere get.
    assert estimate.status_code == 200
    assert body(estimate) == body(client.post(estimate_url, b_versions | missing))
    for response in (launch, estimate):
        assert b"B-ONLY-SECRET" not in response.content
    assert not AuditEvent.objects.filter(seq__gt=last_seq).exists()
    assert _b_release_state(world) == before


PROMOTION_ROUTES = [
    ("releases:detail", "get", {}),
    ("releases:act", "post", {"action": "approve"}),
    ("releases:act", "post", {"action": "reject", "comment": "from A"}),
    ("releases:act", "post", {"action": "apply"}),
    ("releases:act", "post", {"action": "withdraw"}),
]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "method", "data"),
    [pytest.param(*r, id=f"{r[0]}-{r[2].get('action', r[1])}") for r in PROMOTION_ROUTES],
)
def test_promotions_of_another_application_are_not_found(client, world, name, method, data):
    login_as(client, world, Role.ADMIN)  # A's admin approves, applies — in A only
    before = _b_release_state(world)
    last_seq = last_audit_seq()
    missing_pk = PromotionRequest.objects.order_by("-pk").values_list("pk", flat=True)[0] + 1000
    b_pk = world.other_promotion.pk

    def call(app_key: str, pk: int):
        return _post_or_get(client, method, reverse(name, kwargs={"app": app_key, "pk": pk}), data)

    _assert_indistinguishable(call(world.app.key, b_pk), call(world.app.key, missing_pk))
    _assert_indistinguishable(call(world.other.key, b_pk), call("no-such-app", b_pk))
    assert not AuditEvent.objects.filter(seq__gt=last_seq).exists()
    assert _b_release_state(world) == before
    assert PromotionRequest.objects.get(pk=b_pk).status == PromotionRequest.Status.PENDING


RELEASE_ENV_CASES = [
    ("history", "get", {}),
    ("history", "post", {"action": "rollback", "kind": "prompt", "key": "answer", "version": "1",
                         "reason": "from A"}),
    ("history", "post", {"action": "shadow", "kind": "prompt", "key": "answer", "version": "1"}),
    ("new", "get", {"kind": "prompt", "key": "answer", "version": "2"}),
    ("new", "post", {"kind": "prompt", "key": "answer", "version": "2",
                     "justification": "from A"}),
]  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("route", "method", "data"),
    [pytest.param(*r, id=f"{r[0]}-{r[1]}-{r[2].get('action', '')}") for r in RELEASE_ENV_CASES],
)
def test_environment_keys_of_another_application_are_not_found_for_releases(
    client, world, route, method, data
):
    """A's own versions, into an environment key only B has."""
    login_as(client, world, Role.ADMIN)
    before = (_fingerprint(world), _b_release_state(world))
    last_seq = last_audit_seq()

    def call(env: str):
        if route == "history":
            url = reverse("releases:history", kwargs={"app": world.app.key, "env": env})
            return _post_or_get(client, method, url, data)
        url = reverse("releases:new", kwargs={"app": world.app.key})
        body = data | {"environment": env}
        return client.post(url, body) if method == "post" else client.get(url, body)

    _assert_indistinguishable(call("b-only-env"), call("never-existed"))
    assert not AuditEvent.objects.filter(seq__gt=last_seq).exists()
    assert (_fingerprint(world), _b_release_state(world)) == before


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
def test_requesting_a_version_of_another_application_is_not_found(client, world, method):
    login_as(client, world, Role.ADMIN)
    before = (_fingerprint(world), _b_release_state(world))
    last_seq = last_audit_seq()
    url = reverse("releases:new", kwargs={"app": world.app.key})

    def call(key: str):
        body = {"kind": "prompt", "key": key, "version": "1", "environment": "prod"}
        body["justification"] = "from A"
        return client.post(url, body) if method == "post" else client.get(url, body)

    _assert_indistinguishable(call("b-only"), call("never-existed"))
    assert not AuditEvent.objects.filter(seq__gt=last_seq).exists()
    assert (_fingerprint(world), _b_release_state(world)) == before


@pytest.mark.django_db
@pytest.mark.parametrize("action", ["rollback", "shadow"])
def test_history_actions_on_versions_of_another_application_are_not_found(client, world, action):
    login_as(client, world, Role.ADMIN)
    before = (_fingerprint(world), _b_release_state(world))
    last_seq = last_audit_seq()
    url = reverse("releases:history", kwargs={"app": world.app.key, "env": "dev"})

    def call(key: str):
        body = {"action": action, "kind": "prompt", "key": key, "version": "1", "reason": "A"}
        return client.post(url, body)

    _assert_indistinguishable(call("b-only"), call("never-existed"))
    assert not AuditEvent.objects.filter(seq__gt=last_seq).exists()
    assert (_fingerprint(world), _b_release_state(world)) == before


BUDGET_ENV_BUG = (
    "BUG console/usage/views.py budgets(): `env = application.environments.filter(key=...)"
    ".first()` turns an environment key A does not have (B's, or a typo) into None, so the "
    "budget is silently created for ALL of A's environments — and a kill_switch action then "
    "kills the flag in every environment, prod included (budgets.py enforce). An unknown "
    "non-empty key should be refused (error message, nothing created)"
)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "env",
    [pytest.param(env) for env in ("b-only-env", "never-existed")],
)
def test_a_budget_for_an_environment_of_another_application_is_refused(client, world, env):
    login_as(client, world, Role.ENGINEER)
    last_seq = last_audit_seq()
    url = reverse("usage:budgets", kwargs={"app": world.app.key})
    response = client.post(url, budget_data(world) | {"environment": env})
    assert response.status_code in (302, 404)
    assert not AuditEvent.objects.filter(seq__gt=last_seq).exists()
    assert not Budget.objects.filter(name="Matrix budget").exists()


@pytest.mark.django_db
def test_a_budget_acting_on_a_flag_of_another_application_is_refused(client, world):
    login_as(client, world, Role.ENGINEER)
    last_seq = last_audit_seq()
    url = reverse("usage:budgets", kwargs={"app": world.app.key})
    body = budget_data(world) | {"action_type": "kill_switch", "action_flag": "b-only-flag"}
    response = client.post(url, body)
    assert response.status_code == 302
    errors = [m.message for m in get_messages(response.wsgi_request) if m.level == ERROR]
    assert errors == ["action: no flag 'b-only-flag' in this application"]
    assert not AuditEvent.objects.filter(seq__gt=last_seq).exists()
    assert not Budget.objects.filter(name="Matrix budget").exists()


# ---------------------------------------------------------------------------------------------
# Malformed input from a permitted role: refused with a message or a 4xx, never a 500
# ---------------------------------------------------------------------------------------------

TIERS_BUG = (
    "BUG console/usage/views.py prices() line 181 / services.record_price() line 294: tiers are "
    "json-loaded and stored without validation — a tier lacking above_input_tokens, or a JSON "
    "object instead of a list, raises KeyError/TypeError (500), and a tier lacking "
    "output_per_1m is stored and later breaks pricing.py line 25 for every event above its "
    "threshold (the runtime ingest API then fails). Validate each tier (numbers, required keys) "
    "and raise ValidationError"
)
PK_BUG = (
    "BUG {where}: a non-numeric primary key from the form reaches .filter(pk=...) and raises "
    "ValueError (500); treat it as 'not found' (int() it first, or validate the field)"
)


def _malformed(label, name, kwargs, data, bug):
    """`bug` records what used to go wrong here (fixed; kept as the case's documentation)."""
    return pytest.param(name, kwargs, data, id=label)


MALFORMED = [
    _malformed(
        "prices tier without threshold", "usage:prices", {}, {"tiers": '[{"input_per_1m": 1}]'},
        TIERS_BUG,
    ),
    _malformed("prices tiers object", "usage:prices", {}, {"tiers": '{"a": 1}'}, TIERS_BUG),
    _malformed(
        "prices tier without output price", "usage:prices", {},
        {"tiers": '[{"above_input_tokens": 1000000, "input_per_1m": 1}]'}, TIERS_BUG,
    ),
    _malformed(
        "eval new non-numeric version", "evals:new", {}, {"dataset_version": "abc"},
        PK_BUG.format(where="console/evals/views.py _pick() line 55 via run_new()/_estimate()"),
    ),
    _malformed(
        "eval estimate non-numeric version", "evals:estimate", {}, {"dataset_version": "abc"},
        PK_BUG.format(where="console/evals/views.py _pick() line 55 via estimate()/_estimate()"),
    ),
    _malformed(
        "end shadow non-numeric id", "releases:history", {"env": "staging"},
        {"action": "end_shadow", "shadow": "abc"},
        PK_BUG.format(where="console/releases/views.py history() line 248"),
    ),
]  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "kwargs", "data"), MALFORMED)
def test_malformed_input_from_a_permitted_role_is_refused_not_a_500(
    client, world, name, kwargs, data
):
    login_as(client, world, Role.ADMIN)
    client.raise_request_exception = False
    # A valid body for the route, with the one malformed field swapped in.
    defaults = {"usage:prices": price_data(world), "releases:history": {}}.get(
        name, world.eval_post
    )
    last_seq = last_audit_seq()
    before = _fingerprint(world)
    url = reverse(name, kwargs={"app": world.app.key, **kwargs})
    response = client.post(url, defaults | data)
    assert response.status_code < 500
    if response.status_code == 302:
        errors = [m.message for m in get_messages(response.wsgi_request) if m.level == ERROR]
        assert errors
    assert not AuditEvent.objects.filter(seq__gt=last_seq).exists()
    assert _fingerprint(world) == before
