"""Flag pages: list (state at a glance, filters, stale), detail (rules editor, kill switch,
who-gets-what, history, diff), create/edit — and who may do what."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from console.accounts.roles import Role
from console.audit.models import AuditEvent
from console.flags.models import Flag, FlagKind, FlagRules, FlagType
from tests.flags.helpers import CANARY_VARIANTS, make_flag, on, set_rules, split

HTMX = {"HTTP_HX_REQUEST": "true"}


def url(app, *parts: str) -> str:
    return "/".join([f"/apps/{app.key}/flags", *parts]) + "/"


@pytest.fixture
def canary(application, engineer):
    flag = make_flag(
        application,
        engineer,
        "support-prompt",
        flag_type=FlagType.STRING,
        kind=FlagKind.EXPERIMENT,
        variants=CANARY_VARIANTS,
        off_variant="stable",
    )
    set_rules(flag, "prod", split(("stable", 75), ("canary", 25)), engineer)
    return flag


def test_list_shows_each_environment_with_killed_state_who_and_when(
    application, engineer, flag, canary, viewer_client
):
    from console.flags import services

    prod = application.environments.get(key="prod")
    services.kill_flag(actor=engineer, flag=flag, environment=prod, reason="refund bug #412")
    page = viewer_client.get(url(application))
    assert page.status_code == 200
    html = page.content.decode()
    assert [e.key for e in page.context["environments"]] == ["dev", "staging", "prod"]
    row = next(r for r in page.context["rows"] if r.flag.key == flag.key)
    assert [s.state for s in row.states] == ["off", "off", "killed"]
    assert row.killed_anywhere
    assert (
        "Killed" in html and "refund bug #412" in html and f"by <strong>{engineer.username}" in html
    )
    canary_row = next(r for r in page.context["rows"] if r.flag.key == "support-prompt")
    assert [s.state for s in canary_row.states] == ["off", "off", "on"]
    assert "stable 75% · canary 25%" in html


def test_list_search_and_filters_with_an_htmx_partial(application, engineer, flag, canary, client):
    client.force_login(engineer)
    by_q = client.get(url(application), {"q": "prompt"})
    assert [r.flag.key for r in by_q.context["rows"]] == ["support-prompt"]
    by_kind = client.get(url(application), {"kind": FlagKind.RELEASE})
    assert [r.flag.key for r in by_kind.context["rows"]] == [flag.key]
    by_owner = client.get(url(application), {"owner": engineer.username})
    assert len(by_owner.context["rows"]) == 2
    nobody = client.get(url(application), {"owner": "-"})
    assert nobody.context["rows"] == []
    partial = client.get(url(application), {"q": "zzz"}, HTTP_HX_TARGET="flag-table", **HTMX)
    body = partial.content.decode()
    assert body.lstrip().startswith('<div id="flag-table"') and "<html" not in body
    assert "No flag matches these filters" in body


def test_stale_release_flags_are_highlighted_but_kill_switches_never(application, engineer, client):
    old = timezone.now() - timedelta(days=45)
    release = make_flag(application, engineer, "old-release")
    switch = make_flag(application, engineer, "old-switch", kind=FlagKind.KILL_SWITCH)
    fresh = make_flag(application, engineer, "fresh-release")
    for f in (release, switch):
        Flag.objects.filter(pk=f.pk).update(updated_at=old)
        FlagRules.objects.filter(flag=f).update(updated_at=old)
    client.force_login(engineer)
    page = client.get(url(application))
    stale = {r.flag.key: r.stale for r in page.context["rows"]}
    assert stale == {"old-release": True, "old-switch": False, "fresh-release": False}
    assert "stale · 45 days" in page.content.decode()
    assert fresh  # silence "unused"


def test_non_members_get_404_and_viewers_cannot_write(
    application, flag, viewer_client, outsider_client
):
    for path in (url(application), url(application, flag.key), url(application, "new")):
        assert outsider_client.get(path).status_code == 404
    assert (
        outsider_client.post(url(application, flag.key, "dev", "kill"), {"reason": "x"}).status_code
        == 404
    )
    before = AuditEvent.objects.count()
    assert viewer_client.get(url(application, flag.key)).status_code == 200
    assert viewer_client.get(url(application, "new")).status_code == 403
    assert (
        viewer_client.post(url(application, flag.key, "dev", "kill"), {"reason": "x"}).status_code
        == 403
    )
    assert (
        viewer_client.post(
            url(application, flag.key, "dev", "rules"),
            {"content": json.dumps(on()), "base_number": 1},
        ).status_code
        == 403
    )
    assert AuditEvent.objects.count() == before
    assert not FlagRules.objects.filter(flag=flag, killed=True).exists()


def test_detail_shows_kill_controls_rules_history_and_audit(application, flag, engineer_client):
    page = engineer_client.get(url(application, flag.key), {"env": "dev"})
    html = page.content.decode()
    assert page.status_code == 200
    assert html.count("Kill switch…") == 3  # one big control per environment
    assert "data-rules-editor" in html and "Save rules v2" in html
    assert "flag.create" in html  # the audit trail
    prod = engineer_client.get(url(application, flag.key), {"env": "prod"})
    assert "rules change through a promotion" in prod.content.decode()
    assert "data-rules-editor" not in prod.content.decode()  # no direct edits in prod


def test_viewer_sees_rules_read_only_without_kill_controls(application, flag, viewer_client):
    html = viewer_client.get(url(application, flag.key)).content.decode()
    assert "Kill switch…" not in html and "data-rules-editor" not in html


def test_env_panel_is_an_htmx_partial(application, flag, engineer_client):
    response = engineer_client.get(
        url(application, flag.key), {"env": "staging"}, HTTP_HX_TARGET="env-panel", **HTMX
    )
    body = response.content.decode()
    assert body.lstrip().startswith('<section id="env-panel"') and "Rules in staging" in body


def test_saving_rules_in_dev_creates_a_version_and_prod_refuses(application, flag, engineer_client):
    content = split(
        ("on", 30),
        ("off", 70),
        rules=[
            {
                "name": "Staff",
                "conditions": [
                    {"attribute": "email", "operator": "ends_with", "value": "@acme.com"}
                ],
                "serve": {"variant": "on"},
            }
        ],
    )
    response = engineer_client.post(
        url(application, flag.key, "dev", "rules"),
        {"content": json.dumps(content), "base_number": "1", "message": "30% rollout"},
    )
    assert response.status_code == 302 and response["Location"].endswith("?env=dev")
    head = flag.rule_sets.get(environment__key="dev")
    assert head.latest_number == 2 and head.latest_version.content["default"]["rollout"][0] == {
        "variant": "on",
        "weight": 30,
    }
    refused = engineer_client.post(
        url(application, flag.key, "prod", "rules"),
        {"content": json.dumps(on()), "base_number": "1"},
        follow=True,
    )
    assert "is protected" in refused.content.decode()
    assert flag.rule_sets.get(environment__key="prod").latest_number == 1
    invalid = engineer_client.post(
        url(application, flag.key, "dev", "rules"),
        {"content": json.dumps(split(("on", 50))), "base_number": "2"},
        follow=True,
    )
    assert "add up to 50%" in invalid.content.decode()


def test_kill_needs_a_reason_then_works_in_protected_prod(
    application, flag, engineer_client, engineer
):
    kill_url = url(application, flag.key, "prod", "kill")
    before = AuditEvent.objects.count()
    refused = engineer_client.post(kill_url, {"reason": "  "}, follow=True)
    assert "the reason is required" in refused.content.decode()
    assert AuditEvent.objects.count() == before
    done = engineer_client.post(kill_url, {"reason": "wrong refunds quoted"}, follow=True)
    assert "Killed new-checkout in prod" in done.content.decode()
    head = flag.rule_sets.get(environment__key="prod")
    assert head.killed and head.kill_reason == "wrong refunds quoted" and head.killed_by == engineer
    event = AuditEvent.objects.order_by("-seq").first()
    assert (event.action, event.reason) == ("flag.kill", "wrong refunds quoted")
    restored = engineer_client.post(
        url(application, flag.key, "prod", "restore"), {"reason": "fixed"}, follow=True
    )
    assert "Restored" in restored.content.decode()
    assert not FlagRules.objects.get(pk=head.pk).killed


def test_who_gets_what_names_the_variant_and_the_deciding_rule(
    application, canary, engineer, viewer_client
):
    set_rules(
        canary,
        "dev",
        on(
            "stable",
            rules=[
                {
                    "name": "Staff",
                    "conditions": [
                        {"attribute": "email", "operator": "ends_with", "value": "@acme.com"}
                    ],
                    "serve": {"variant": "canary"},
                }
            ],
        ),
        engineer,
    )
    path = url(application, canary.key, "evaluate")
    staff = viewer_client.get(
        path, {"environment": "dev", "attributes": "email = zoe@acme.com"}, **HTMX
    )
    assert '<code class="variant-chip">canary</code>' in staff.content.decode()
    assert (
        "rule 1 “Staff”" in staff.content.decode() and "TARGETING_MATCH" in staff.content.decode()
    )
    split_result = viewer_client.get(
        path, {"environment": "prod", "targeting_key": "user-7"}, **HTMX
    )
    assert '<span class="reason-tag">SPLIT</span>' in split_result.content.decode()
    missing = viewer_client.get(path, {"environment": "prod"}, **HTMX)
    assert "TARGETING_KEY_MISSING" in missing.content.decode()
    bad = viewer_client.get(path, {"environment": "prod", "attributes": "{nope"}, **HTMX)
    assert "Attributes:" in bad.content.decode()


def test_rule_diff_names_the_changed_paths(application, flag, engineer, viewer_client):
    set_rules(flag, "dev", split(("on", 10), ("off", 90)), engineer)
    set_rules(flag, "dev", split(("on", 50), ("off", 50)), engineer)
    page = viewer_client.get(url(application, flag.key, "dev", "diff"), {"a": 2, "b": 3})
    assert page.status_code == 200
    changed = {c.path for c in page.context["changes"] if c.changed}
    assert changed == {"default.rollout.1.weight", "default.rollout.2.weight"}
    assert (
        viewer_client.get(url(application, flag.key, "dev", "diff"), {"a": 1, "b": 9}).status_code
        == 404
    )


def test_create_and_edit_a_flag_through_the_forms(application, engineer, engineer_client):
    variants = [{"key": "small", "value": 3}, {"key": "large", "value": 8}]
    response = engineer_client.post(
        url(application, "new"),
        {
            "key": "docs-per-answer",
            "name": "Docs per answer",
            "description": "",
            "flag_type": "number",
            "kind": "operational",
            "owner": engineer.username,
            "variants": json.dumps(variants),
            "off_variant": "small",
        },
    )
    assert response.status_code == 302
    flag = Flag.objects.get(key="docs-per-answer")
    assert flag.variant_keys == ["small", "large"] and flag.owner == engineer
    bad = engineer_client.post(
        url(application, "new"),
        {
            "key": "bad",
            "name": "Bad",
            "flag_type": "number",
            "kind": "release",
            "owner": "",
            "variants": json.dumps([{"key": "x", "value": "nope"}]),
            "off_variant": "x",
        },
    )
    assert bad.status_code == 200 and "variants.1.value" in bad.content.decode()
    edit = engineer_client.post(
        url(application, flag.key, "edit"),
        {
            "name": "Documents per answer",
            "description": "RAG depth",
            "kind": "operational",
            "owner": "",
            "variants": json.dumps([*variants, {"key": "huge", "value": 20}]),
            "off_variant": "small",
        },
    )
    assert edit.status_code == 302
    flag.refresh_from_db()
    assert flag.name == "Documents per answer" and flag.owner is None and len(flag.variants) == 3


def test_edit_page_renders_for_engineers_only(application, flag, member, client):
    client.force_login(member(Role.CURATOR, "cur"))
    assert client.get(url(application, flag.key, "edit")).status_code == 403
    client.force_login(member(Role.ADMIN, "adm"))
    page = client.get(url(application, flag.key, "edit"))
    assert page.status_code == 200 and "data-flag-form" in page.content.decode()
