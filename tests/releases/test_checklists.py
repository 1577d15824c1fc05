"""Readiness checklists: kept in the release policy (versioned, audited, loosening approved),
carried by each promotion request, ticked by the requester with a note, verified by Airlock
where it can, and required items block apply."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.urls import reverse

from console.audit.models import AuditEvent
from console.releases import checklists, policies, services
from console.releases.models import PromotionRequest
from console.usage.models import Budget
from tests.releases.test_approvals import actions, decide, open_, refused

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


def set_checklist(world, text: str) -> None:
    content, number = policies.current(world.prod)
    cleaned = policies.clean(world.prod, {**content, "checklist": checklists.parse(text)})
    with transaction.atomic():
        policies.apply_content(
            actor=world.users["admin"], environment=world.prod, content=cleaned,
            message="checklist", number=number,
        )  # fmt: skip


def approved(world, number: int = 2) -> PromotionRequest:
    world.passing_run(number)
    request = open_(world, number)
    decide(world, request, "approver")
    request.refresh_from_db()
    return request


def key(text: str) -> str:
    return checklists.parse(text)[0]["key"]


# writing a checklist ------------------------------------------------------------------------


def test_lines_become_items_and_read_back_the_same():
    text = (
        "[required] On-call was told\n\n"
        "[optional] Canary criteria written down\n"
        "Rollback tested (auto: rollback_exercised)"
    )
    items = checklists.parse(text)
    assert [(i["text"], i["required"], i["check"]) for i in items] == [
        ("On-call was told", True, ""),
        ("Canary criteria written down", False, ""),
        ("Rollback tested", True, "rollback_exercised"),
    ]
    assert checklists.parse(checklists.to_text(items)) == items


def test_bad_lines_are_named_by_line():
    with pytest.raises(ValidationError) as caught:
        checklists.parse("Fine\n[required]\nChecked (auto: telepathy)\nfine\n" + "x" * 201)
    messages = caught.value.messages
    assert messages[0].startswith("line 2: write the item")
    assert messages[1].startswith("line 3: unknown automatic check 'telepathy'")
    assert messages[2] == "line 4: “fine” is already on the list"
    assert messages[3] == "line 5: keep an item under 200 characters (it has 201)"


@pytest.mark.parametrize("key", list(checklists.TEMPLATES))
def test_every_template_parses(key):
    items = checklists.parse(checklists.template_text(key))
    assert len(items) >= 4
    assert any(i["check"] for i in items) and any(not i["check"] for i in items)


def test_asking_less_of_release_owners_is_a_loosening():
    old = checklists.parse("A\n[optional] B\nC (auto: budget)")
    optional = checklists.parse("[optional] A\n[optional] B\nC (auto: budget)")
    assert checklists.loosenings(old, optional) == ["makes checklist item “A” optional"]
    assert checklists.loosenings(old, checklists.parse("A\nC")) == [
        "stops checking “C” automatically"
    ]
    assert checklists.loosenings(old, checklists.parse("[optional] B")) == [
        "drops checklist item “A”",
        "drops checklist item “C”",
    ]
    # Dropping an optional manual item, or adding items, asks no less.
    assert checklists.loosenings(old, checklists.parse("A\nC (auto: budget)\nD")) == []


def test_loosening_a_protected_environments_checklist_waits_for_another_admin(world):
    set_checklist(world, "On-call was told")
    content, number = policies.current(world.prod)
    outcome, request = policies.change(
        actor=world.users["admin"], environment=world.prod,
        content={**content, "checklist": []}, base_number=number, message="too much",
    )  # fmt: skip
    assert outcome == "requested"
    assert "drops checklist item “On-call was told”" in request.evidence["loosenings"]
    assert policies.current(world.prod)[0]["checklist"][0]["text"] == "On-call was told"


# a request's checklist ----------------------------------------------------------------------


def test_a_request_carries_the_checklist_in_force_when_it_was_opened(world):
    set_checklist(world, "On-call was told\n[optional] Canary criteria written down")
    world.passing_run(2)
    request = open_(world, 2)
    assert [i["text"] for i in request.checklist["items"]] == [
        "On-call was told",
        "Canary criteria written down",
    ]
    set_checklist(world, "Something else entirely")
    request.refresh_from_db()
    assert len(request.checklist["items"]) == 2 and request.checklist["ticks"] == {}


def test_only_the_requester_ticks_with_a_note_and_each_tick_is_audited(world):
    set_checklist(world, "On-call was told\nBudget (auto: budget)")
    world.passing_run(2)
    request = open_(world, 2)
    item = key("On-call was told")
    for who in ("approver", "engineer2", "admin"):
        refused(
            lambda who=who: services.tick_checklist(
                actor=world.users[who], request=request, key=item, note="x"
            ),
            "Only the requester",
            exc=PermissionDenied,
        )
    refused(
        lambda: services.tick_checklist(actor=world.users["engineer"], request=request, key=item),
        "add a note or a link",
    )
    refused(
        lambda: services.tick_checklist(
            actor=world.users["engineer"], request=request, key=key("Budget"), note="set"
        ),
        "Airlock verifies this item itself",
    )
    refused(
        lambda: services.tick_checklist(
            actor=world.users["engineer"], request=request, key="nope", note="x"
        ),
        "no such item",
    )
    assert actions(request) == ["promotion.request"]
    services.tick_checklist(
        actor=world.users["engineer"], request=request, key=item, note="https://oncall/1234"
    )
    request.refresh_from_db()
    tick = request.checklist["ticks"][item]
    assert (tick["by"], tick["note"]) == ("eng", "https://oncall/1234")
    services.tick_checklist(actor=world.users["engineer"], request=request, key=item, done=False)
    assert actions(request) == [
        "promotion.request",
        "promotion.checklist.tick",
        "promotion.checklist.untick",
    ]
    event = AuditEvent.objects.filter(action="promotion.checklist.tick").get()
    assert event.after["tick"]["note"] == "https://oncall/1234"


def test_required_items_block_apply_until_done(world):
    set_checklist(world, "On-call was told\n[optional] Canary criteria written down")
    request = approved(world)
    refused(
        lambda: services.apply(actor=world.users["engineer"], request=request),
        "The readiness checklist is not done: On-call was told.",
    )
    assert world.live() == 1
    services.tick_checklist(
        actor=world.users["engineer"], request=request, key=key("On-call was told"), note="ok"
    )
    services.apply(actor=world.users["engineer"], request=request)  # the optional one waits not
    assert world.live() == 2


def test_a_closed_request_cannot_be_ticked(world):
    set_checklist(world, "On-call was told")
    world.passing_run(2)
    request = open_(world, 2)
    services.withdraw(actor=world.users["engineer"], request=request)
    refused(
        lambda: services.tick_checklist(
            actor=world.users["engineer"], request=request, key=key("On-call was told"), note="x"
        ),
        "nothing to tick",
    )


# what Airlock verifies ----------------------------------------------------------------------


def test_automatic_checks_verify_against_what_the_console_holds(world):
    from console.flags.services import create_flag

    set_checklist(
        world,
        "Evals (auto: eval_gate)\nBudget (auto: budget)\nKill switch (auto: kill_switch)\n"
        "Rollback (auto: rollback_exercised)\nSafety (auto: safety_suite)",
    )
    request = approved(world)
    by_text = {s.text: s for s in checklists.status(request)}
    assert by_text["Evals"].done and "met by run #" in by_text["Evals"].proof
    assert by_text["Evals"].proof_url.startswith(f"/apps/{world.application.key}/evals/")
    for text, why in (
        ("Budget", "no budget covers"),
        ("Kill switch", "no flag serves answer"),
        ("Rollback", "no rollback in a lower environment"),
        ("Safety", "no golden set of safety cases"),
    ):
        assert not by_text[text].done and why in by_text[text].proof, text
    refused(
        lambda: services.apply(actor=world.users["engineer"], request=request),
        "Budget; Kill switch; Rollback; Safety",
    )

    Budget.objects.create(
        application=world.application, environment=world.prod, name="Prod spend",
        period="monthly", amount=100,
    )  # fmt: skip
    create_flag(
        actor=world.users["engineer"], application=world.application, key="answers",
        name="Answers", flag_type="boolean", off_variant="off",
        variants=[{"key": "on", "value": True, "ref": {"kind": "prompt", "key": "answer",
                                                        "version": 2}},
                  {"key": "off", "value": False}],
    )  # fmt: skip
    dev = world.envs["dev"]
    services._make_live(world.users["engineer"], "prompt", world.versions[2], dev, reason="try")
    services.rollback(
        actor=world.users["engineer"], environment=dev, version=world.versions[1], reason="drill"
    )
    by_text = {s.text: s for s in checklists.status(request)}
    assert by_text["Budget"].done and "Prod spend" in by_text["Budget"].proof
    assert by_text["Kill switch"].done and "flag answers" in by_text["Kill switch"].proof
    assert by_text["Rollback"].done and "answer@1 → dev" in by_text["Rollback"].proof
    assert not by_text["Safety"].done
    assert checklists.blocking(request) == ["Safety"]


def test_the_agent_check_wants_a_passed_run_of_a_golden_set_expecting_tool_calls(world):
    from tests.evals.helpers import publish_items

    set_checklist(world, "Agent (auto: agent_eval)")
    request = approved(world)
    (agent,) = checklists.status(request)
    assert not agent.done
    assert agent.proof == "no golden set of expected tool calls among the policy's evidence"
    _, tools_set = publish_items(
        world.application, world.users["curator"], "agent-set",
        [{"id": "a1", "question": "Where is order A-1?", "expected_tools": [{"name": "lookup"}]}],
    )  # fmt: skip
    for verdict, done, proof in (
        ("failed", False, "agent-set@1 did not pass"),
        ("passed", True, "agent-set@1 passed"),
    ):
        run = world.passing_run(2, verdict=verdict, dataset_version=tools_set)
        evidence = {
            **request.evidence,
            "datasets": [
                *request.evidence["datasets"],
                {"dataset": "agent-set@1", "run": run.pk, "verdict": verdict},
            ],
        }
        passed, said, url = checklists.verify("agent_eval", request, evidence)
        assert (passed, said) == (done, f"{proof} (run #{run.pk})")
        assert url.endswith(f"/evals/{run.pk}/")
    # The plain golden set of the policy is no agent evidence, passed or not.
    assert not checklists.verify("agent_eval", request)[0]


def test_the_monitor_check_wants_an_enabled_monitor_on_the_environment(world):
    from console.samples import services as samples

    set_checklist(world, "Watched (auto: monitor)")
    request = approved(world)
    (item,) = checklists.status(request)
    assert not item.done and item.proof == f"no monitor watches {world.prod.name}"
    samples.create_monitor(
        actor=world.users["engineer"], application=world.application,
        environment=world.envs["dev"], metric="faithfulness",
    )  # fmt: skip
    assert not checklists.verify("monitor", request)[0]  # dev's monitor does not watch prod
    monitor = samples.create_monitor(
        actor=world.users["engineer"], application=world.application, environment=world.prod,
        metric="error_rate",
    )  # fmt: skip
    passed, said, url = checklists.verify("monitor", request)
    assert passed and said == f"monitor: {monitor}"
    assert url == f"/apps/{world.application.key}/samples/monitors/"
    samples.set_monitor_enabled(actor=world.users["engineer"], monitor=monitor, enabled=False)
    assert not checklists.verify("monitor", request)[0]


# the request page ---------------------------------------------------------------------------


def test_the_requester_ticks_in_place_and_the_approver_sees_who(client, world):
    set_checklist(world, "On-call was told\nEvals (auto: eval_gate)")
    world.passing_run(2)
    request = open_(world, 2)
    url = reverse("releases:tick", args=[world.application.key, request.pk])
    client.force_login(world.users["engineer"])
    missing = client.post(url, {"item": key("On-call was told"), "note": ""}, headers=HTMX)
    assert "add a note or a link" in missing.content.decode()
    cell = client.post(
        url, {"item": key("On-call was told"), "note": "paged #oncall"}, headers=HTMX
    ).content.decode()
    assert cell.strip().startswith('<section class="card checklist" id="checklist">')
    assert "Ticked by <strong>eng</strong>" in cell and "paged #oncall" in cell
    client.force_login(world.users["approver"])
    page = client.get(reverse("releases:detail", args=[world.application.key, request.pk]))
    text = page.content.decode()
    assert "Readiness checklist" in text and "Ticked by <strong>eng</strong>" in text
    assert "Verified by Airlock" in text and 'name="note"' not in text
    assert client.post(url, {"item": key("On-call was told"), "done": "0"}).status_code == 403
    request.refresh_from_db()
    assert key("On-call was told") in request.checklist["ticks"]
