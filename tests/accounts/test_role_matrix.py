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
from django.urls import URLPattern, URLResolver, reverse

from console.accounts import urls as accounts_urls
from console.accounts.models import Membership
from console.accounts.roles import ADMIN, ENGINEER, ROLE_PERMISSIONS, VIEW, Role
from console.accounts.services import grant_role
from console.audit import urls as audit_urls
from console.audit.models import AuditEvent
from console.audit.services import SYSTEM
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
    return world


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
        return reverse(self.name, kwargs=kwargs)


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
            yield pytest.param(endpoint, who, id=f"{endpoint.label}-{who}")


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
    return {"heads": heads, "bindings": bindings, "policies": policies, "members": members}


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
    allowed_write = endpoint.audit_action is not None and decision(endpoint, who) == "allowed"
    if allowed_write:
        assert [e.action for e in new_events] == [endpoint.audit_action]
        assert new_events[0].application_id == world.app.pk
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
    """A route added to any of the three URL modules without a row in the matrix fails here."""
    routes = set().union(*(_route_names(m) for m in (registry_urls, accounts_urls, audit_urls)))
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
    cells = {
        (label, who): expected_status(by_label[label], who)
        for label in ("dashboard", "head_edit[prompts] POST", "members POST", "home")
        for who in WHO
    }
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
