"""Every console URL × every role, against the role table in console/accounts/roles.py.

The expected status of each cell is *computed* from `ROLE_PERMISSIONS` and the permission each
endpoint needs; nothing here is a recorded observation:

- anonymous → 302 to the login page (except the login page itself, and logout);
- the caller's permissions in the application lack VIEW (a non-member) → 404, never 403;
- a member whose role lacks the endpoint's permission → 403;
- otherwise the endpoint's success status (200 for pages, 302 after a successful write).

Denied requests must leave no trace: no audit event, no row. Allowed writes must leave exactly
the one audit event their service records.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.urls import URLPattern, URLResolver, reverse

from console.accounts import keys
from console.accounts import urls as accounts_urls
from console.accounts.models import ApiKey, Membership
from console.accounts.roles import ADMIN, CURATE, ENGINEER, ROLE_PERMISSIONS, VIEW, Role
from console.accounts.services import grant_role
from console.audit import urls as audit_urls
from console.audit.models import AuditEvent
from console.audit.services import SYSTEM
from console.core.canonical import canonical_json
from console.datasets import services as datasets
from console.datasets import urls as datasets_urls
from console.datasets.models import Dataset, DatasetItem, ImportJob
from console.registry import services as registry
from console.registry import urls as registry_urls
from console.registry.kinds import KINDS, MODEL_CONFIG, PROMPT
from console.registry.models import Environment
from tests.factories import MODEL_CONTENT, PROMPT_CONTENT, make_application

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
    other: object  # application B
    heads: dict = field(default_factory=dict)  # kind slug → head in A
    other_heads: dict = field(default_factory=dict)  # kind slug → head present in B only
    candidate: object = None  # a user with no role anywhere, for the members form
    dataset: object = None  # golden set "golden" in A: v1, v2 and a changed draft
    job: object = None  # an import into it, validated and waiting to be applied
    other_datasets: dict = field(default_factory=dict)  # key → golden set in B
    api_key: object = None  # a live runtime API key of A's dev environment


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


def build_world() -> World:
    app = make_application("app-a")
    other = make_application("app-b")
    owner = quick_user("owner-a")
    grant_role(actor=SYSTEM, user=owner, application=app, role=Role.ADMIN)
    other_owner = quick_user("owner-b")
    grant_role(actor=SYSTEM, user=other_owner, application=other, role=Role.ADMIN)
    world = World(app=app, other=other, candidate=quick_user("candidate"))
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
    world.other_datasets = {
        key: make_golden_set(other, other_owner, key, secret=True)[0]
        for key in ("golden", "b-only-set")
    }
    return world


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
    return {"environment": "staging", "protected": "on", "required_approvals": "2"}


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
    perm: str | None = VIEW  # permission needed in that application
    ok: int = 200  # status when allowed
    data: Callable[[World], dict] | None = None
    audit_action: str | None = None  # the one event an allowed call writes
    anonymous: int = 302  # what an anonymous caller gets
    authenticated: int | None = None  # fixed status for any signed-in user (unscoped routes)
    params: Callable[[World], dict] | None = None  # further URL kwargs (golden-set routes)
    query: str = ""  # appended to the URL, e.g. "edit=1"
    changes_rows: bool = False  # an allowed call changes rows without an audit event
    xfail_pg: str = ""  # a known application bug on PostgreSQL when the call is allowed

    def url(self, world: World) -> str:
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
        path = reverse(self.name, kwargs=kwargs)
        return f"{path}?{self.query}" if self.query else path


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


PG_CELL_SAVE_BUG = (
    "BUG console/datasets/services.py update_item_field: select_for_update() with "
    "select_related of the nullable updated_by FK fails on PostgreSQL ('FOR UPDATE cannot be "
    "applied to the nullable side of an outer join'): every allowed cell save is a 500"
)


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
        Endpoint("diff", "datasets:diff", params=_golden, query="a=1&b=draft"),
    ]


ENDPOINTS: list[Endpoint] = [
    Endpoint("home", "registry:home", scoped=False, perm=None, authenticated=200),
    Endpoint("dashboard", "registry:dashboard"),
    Endpoint("environments", "registry:environments"),
    Endpoint(
        "environments POST",
        "registry:environments",
        "post",
        perm=ADMIN,
        ok=302,
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
    if endpoint.perm is not None and endpoint.perm not in perms:
        return "forbidden"
    return "allowed"


def expected_status(endpoint: Endpoint, who: str) -> int:
    outcome = decision(endpoint, who)
    if outcome == "anonymous":
        return endpoint.anonymous
    if outcome == "unscoped":
        assert endpoint.authenticated is not None
        return endpoint.authenticated
    return {"not_found": 404, "forbidden": 403, "allowed": endpoint.ok}[outcome]


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
        ApiKey.objects.filter(application=world.app).values_list("name", "revoked_at")
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
    }


@pytest.mark.django_db
@pytest.mark.parametrize(("endpoint", "who"), list(_matrix()))
def test_url_role_matrix(client, endpoint: Endpoint, who: str):
    world = build_world()
    login_as(client, world, who)
    url = endpoint.url(world)
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
        # A successful write redirects inside the application, never to the login page.
        assert urlsplit(response["Location"]).path.startswith(f"/apps/{world.app.key}/")

    new_events = list(AuditEvent.objects.filter(seq__gt=last_seq).order_by("seq"))
    allowed = decision(endpoint, who) == "allowed"
    if allowed and endpoint.audit_action is not None:
        assert [e.action for e in new_events] == [endpoint.audit_action]
        assert new_events[0].application_id == world.app.pk
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


def test_matrix_covers_every_named_route():
    """A route added to any of the URL modules without a row in the matrix fails here."""
    modules = (registry_urls, accounts_urls, audit_urls, datasets_urls)
    routes = set().union(*(_route_names(m) for m in modules))
    assert {r.split(":")[0] for r in routes} == {"registry", "accounts", "audit", "datasets"}
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
def test_keys_of_another_application_are_not_found(client, slug, name, method, extra):
    world = build_world()
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
    assert b_key_in_b.content == missing_app.content
    assert b_key_in_a.content == missing_key.content
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
    ("datasets:versions", "get", {}, ""),
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
def test_golden_sets_of_another_application_are_not_found(client, name, method, extra, query):
    world = build_world()
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
    assert b_key_in_b.content == missing_app.content
    assert b_key_in_a.content == missing_key.content
    assert not AuditEvent.objects.filter(seq__gt=last_seq).exists()
    assert _b_state(world) == before


@pytest.mark.django_db
def test_an_import_job_of_another_application_is_not_found(client):
    world = build_world()
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
def test_same_golden_set_key_in_two_applications_resolves_to_the_callers_own(client):
    world = build_world()
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
    ["", "environments/", "prompts/", "models/", "prompts/new/", "members/"],
)
def test_pages_of_another_application_are_not_found(client, path):
    world = build_world()
    login_as(client, world, Role.ADMIN)
    response = client.get(f"/apps/{world.other.key}/{path}")
    missing = client.get(f"/apps/no-such-app/{path}")
    assert response.status_code == 404
    assert response.content == missing.content


@pytest.mark.django_db
def test_same_key_in_two_applications_resolves_to_the_callers_own(client):
    world = build_world()
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
def test_admin_of_a_cannot_touch_memberships_of_b(client):
    world = build_world()
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
def test_audit_log_shows_a_non_member_nothing_of_the_application(client):
    world = build_world()
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
def test_superuser_who_is_not_a_member_is_treated_as_a_non_member(client):
    world = build_world()
    superuser = get_user_model().objects.create_superuser("root", "root@example.com", None)
    client.force_login(superuser)
    assert client.get("/").context["applications"] == []
    assert client.get(f"/apps/{world.app.key}/").status_code == 404
    assert client.get(f"/apps/{world.app.key}/members/").status_code == 404
