"""The governance sweep: every route of the console × every role, against the one-door rule.

DESIGN.md, "Protected environments: one door": whatever changes what a protected environment
serves passes one service path that requires evidence meeting that environment's policy and
another person's approval. So after ANY action by anyone, prod's `GET /api/v1/config` body
(read with a prod runtime key) is byte-identical — and prod's own release policy unchanged —
except through:

- an approved promotion's apply (someone other than the requester approved it);
- a kill switch, which moves only that flag to its approved off variant, and restoring a killed
  flag to its approved rules;
- a rollback to a version once live there;
- a breaker whose action was itself approved;
- ending a shadow, pausing or aborting a running staged rollout, and advancing it along the
  steps its approved request set (each only reduces, or follows, what was approved).

Every URL pattern of the URLconf is classified in ROUTES below: GET-only (a POST answers 405),
the runtime API (API keys, not sessions), or a list of POST cases, each with a plausible, valid
payload aimed at prod and either "must leave prod unchanged" or the allowed exception it is.
A route missing from ROUTES fails `test_every_route_is_classified`, so a new route fails the
sweep until someone decides what it may do to prod.

Each case runs as an engineer, a curator, an approver and the application's only admin. After
the POST the beat tasks that could act later run at once (usage rollup, budget checks with their
breakers, the staged rollout tick), then prod is read again. `test_payload_reaches_the_write`
proves every payload is one the application accepts: aimed at an unprotected environment it
changes what that environment serves, or it records an audit event, or it is refused with a
message that says why.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.contrib.messages import ERROR, get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from console.core.canonical import canonical_json
from console.datasets.models import DatasetItem
from console.evals.models import EvalRun
from console.flags.models import FlagRules
from console.releases import rollouts
from console.releases import services as releases
from console.releases.models import PromotionRequest, Rollout
from console.usage import budgets as usage_budgets
from console.usage import services as usage_services
from tests.evals.helpers import answered_result, reviewed_result
from tests.flags.helpers import on
from tests.governance.conftest import (
    Served,
    audit_actions_since,
    last_audit_seq,
    read_served,
    served_diff,
)
from tests.governance.world import ROLES, World
from tests.samples.helpers import curate_post, monitor_post, policy_post

GET_ONLY = "get-only"  # a POST answers 405 (checked by test_get_only_routes_refuse_post)
RUNTIME_API = "runtime-api"  # API keys, not sessions: test_runtime_keys_change_nothing
ADMIN_SITE = "admin"  # django.contrib.admin: staff only; no Airlock role makes a user staff

# How a case proves its payload reaches the write (test_payload_reaches_the_write, as the
# lone admin): "control" — the control request, aimed at an unprotected environment, changes
# what that environment serves; "audit" — the request records an audit event; "refused" — the
# request is refused with an error message; "none" — not a write (renders, signs in or out).
CONTROL, AUDIT, REFUSED, NONE = "control", "audit", "refused", "none"


@dataclass(frozen=True)
class Case:
    label: str
    path: Callable[[World, object], str]  # (world, acting user) → URL
    data: Callable[[World], dict]
    exception: str | None = None  # the allowed kind of change (EXCEPTIONS), or None
    proof: str = AUDIT
    # The same write aimed at an unprotected environment: (world, user) → (URL, data).
    control: Callable[[World, object], tuple[str, dict]] | None = None
    control_env: str = ""
    htmx: bool = False


def to(name: str, **fixed) -> Callable[[World, object], str]:
    """A path function: the route `name` with its URL kwargs filled from the world."""

    def path(world: World, user) -> str:
        kwargs = {k: (v(world, user) if callable(v) else v) for k, v in fixed.items()}
        return reverse(name, kwargs=default_kwargs(name, world) | kwargs)

    return path


def default_kwargs(name: str, world: World) -> dict:
    """Plausible values for every URL parameter a route takes."""
    namespace = name.partition(":")[0]
    params = ROUTE_PARAMS.get(name, set())
    values = {
        "app": world.app.key,
        "kind": "prompts",
        "key": {"datasets": world.dataset.key, "flags": "answers-enabled"}.get(namespace, "answer"),
        "env": "prod",
        "pk": world.queued_run.pk if namespace == "evals" else world.pending.pk,
        "number": 1,
        "item_id": "refund-1",
        "field": "question",
        "job": world.job.pk,
        "key_id": world.api_keys["prod-app"].pk,
        "hook_id": world.webhook.pk,
        "flag": "support-prompt",
    }
    return {k: v for k, v in values.items() if k in params}


def same_as_case(name: str, data: Callable[[World], dict], **fixed):
    """Control: the very same request (a change that shows in every environment)."""
    return lambda world, user: (to(name, **fixed)(world, user), data(world))


def aimed_at(name: str, env: str, data: Callable[[World], dict], body_env: bool = False, **fixed):
    """Control: the same request aimed at `env` (in the URL, or in the body's `environment`)."""

    def control(world: World, user) -> tuple[str, dict]:
        body = data(world)
        if body_env:
            return to(name, **fixed)(world, user), body | {"environment": env}
        return to(name, **(fixed | {"env": env}))(world, user), body

    return control


# ---------------------------------------------------------------------------------- payloads


def loosened(**fields) -> Callable[[World], dict]:
    """The policy form for prod as it stands, with `fields` made weaker."""

    def data(world: World) -> dict:
        from console.releases import policies
        from console.releases.forms import PolicyForm

        content, number = policies.current(world.prod)
        form = PolicyForm.initial_from(content, number)
        form.update(fields)
        return {k: ("on" if v is True else v) for k, v in form.items() if v is not False}

    return data


def prompt_form(world: World, **extra) -> dict:
    return {
        "system": "Fresh {{ context }}", "user": "{{ question }}", "variables": "context, question",
        "params": '{"top_k": 9}', **extra,
    }  # fmt: skip


def model_form(world: World, **extra) -> dict:
    from tests.factories import MODEL_CONTENT

    return {k: str(v) for k, v in MODEL_CONTENT.items()} | {"max_tokens": "999"} | extra


def bind(version: int) -> Callable[[World], dict]:
    return lambda world: {"environment": "prod", "version": str(version), "reason": "sweep"}


def flag_definition(world: World, key: str, **changes) -> dict:
    """The flag edit form as the page would post it, with `changes` applied."""
    flag = world.flags[key]
    body = {
        "name": flag.name, "description": flag.description, "kind": flag.kind,
        "owner": "", "variants": json.dumps(flag.variants), "off_variant": flag.off_variant,
    }  # fmt: skip
    return body | changes


def swapped_switch(world: World) -> dict:
    variants = [{"key": "on", "value": False}, {"key": "off", "value": True}]
    return flag_definition(world, "answers-enabled", variants=json.dumps(variants))


def unreviewed_ref(world: World) -> dict:
    variants = [dict(v) for v in world.flags["support-prompt"].variants]
    variants[1]["ref"] = {"kind": "prompt", "key": "answer", "version": 4}
    variants[1]["value"] = "answer@4"
    return flag_definition(world, "support-prompt", variants=json.dumps(variants))


def new_flag(world: World) -> dict:
    variants = [
        {"key": "fresh", "value": "answer@4",
         "ref": {"kind": "prompt", "key": "answer", "version": 4}},
        {"key": "old", "value": "answer@2",
         "ref": {"kind": "prompt", "key": "answer", "version": 2}},
    ]  # fmt: skip
    return {
        "key": "fresh-answer", "name": "Fresh answer", "description": "", "kind": "experiment",
        "flag_type": "string", "owner": "", "variants": json.dumps(variants),
        "off_variant": "fresh",
    }  # fmt: skip


def rules_everyone_canary(env: str) -> Callable[[World], dict]:
    def data(world: World) -> dict:
        head = FlagRules.objects.get(flag=world.flags["support-prompt"], environment__key=env)
        return {
            "content": json.dumps(on("canary")), "base_number": str(head.latest_number),
            "message": "sweep",
        }  # fmt: skip

    return data


def breaker(environment: str, action: str = "variant") -> Callable[[World], dict]:
    """A tiny daily budget (already spent today) whose breaker acts in `environment`."""

    def data(world: World) -> dict:
        body = {
            "name": "Sweep breaker", "period": "daily", "amount": "0.0001",
            "environment": environment, "thresholds": "100",
        }  # fmt: skip
        if action == "variant":
            return body | {
                "action_type": "variant", "action_flag": "support-prompt",
                "action_variant": "canary",
            }  # fmt: skip
        return body | {"action_type": "kill_switch", "action_flag": "answers-enabled"}

    return data


def own_request(approved: bool = False) -> Callable[[World, object], int]:
    """The acting user's own request (answer v3 → prod, evidence passing), opened through the
    service as if they were an engineer when they did; approved by the approver if asked."""

    def make(world: World, user) -> int:
        # One open request per prompt and environment: the world's own one steps aside.
        for other in PromotionRequest.objects.filter(
            environment=world.prod, subject=world.pending.subject, status__in=PromotionRequest.OPEN
        ):
            releases.withdraw(actor=other.requested_by, request=other)
        request = releases.open_request(
            actor=user, environment=world.prod,
            version=world.prompts["answer"].versions.get(number=3), justification="mine",
            paired=world.model.versions.get(number=1),
        )  # fmt: skip
        if approved and user != world.users["approver"]:
            request = releases.decide(
                actor=world.users["approver"], request=request, decision="approve"
            )
        return request.pk

    return make


def shadow_freed(world: World) -> int:
    """The world's shadow (answer v3 in prod), its version's open request withdrawn, so a
    request for it can be opened."""
    for other in PromotionRequest.objects.filter(
        environment=world.prod, subject=world.pending.subject, status__in=PromotionRequest.OPEN
    ):
        releases.withdraw(actor=other.requested_by, request=other)
    return world.shadow.pk


def own_request_with_checklist(world: World, user) -> int:
    """own_request(), carrying a one-item readiness checklist to tick."""
    pk = own_request()(world, user)
    PromotionRequest.objects.filter(pk=pk).update(
        checklist={
            "items": [{"key": "on-call", "text": "On-call", "required": True, "check": ""}],
            "ticks": {},
        }
    )
    return pk


def paused_rollout(world: World, user) -> int:
    rollouts.control(actor=world.users["requester"], rollout=world.rollout, action="pause")
    return world.rollout.request_id


def rollout_pk(world: World, user) -> int:
    return world.rollout.request_id


def history(action: str, kind: str = "prompt", key: str = "answer", version: int = 0, **extra):
    def data(world: World) -> dict:
        body = {"action": action, "kind": kind, "key": key, "version": str(version), **extra}
        if action == "end_shadow":
            body["shadow"] = str(world.shadow.pk)
        return body

    return data


def cell_data(world: World) -> dict:
    current = DatasetItem.objects.get(dataset=world.dataset, item_id="refund-1").question
    return {"value": "How many days do I have to return an item?", "base": canonical_json(current)}


def curate_data(world: World) -> dict:
    return curate_post(world.dataset.key, "How long is the return window?")


def monitor_data(world: World) -> dict:
    return monitor_post("prod")


def sample_policy_data(world: World) -> dict:
    return policy_post()


def price_data(world: World) -> dict:
    return {
        "model": "gpt-4o-mini", "effective_from": (timezone.now() - timedelta(days=2)).date(),
        "input_per_1m": "0.20", "cached_input_per_1m": "0.10", "output_per_1m": "0.80",
        "tiers": "", "note": "sweep",
    }  # fmt: skip


def request_data(version: int, staged: bool = False) -> Callable[[World], dict]:
    def data(world: World) -> dict:
        body = {
            "kind": "prompt", "key": "answer", "version": str(version), "environment": "prod",
            "justification": "sweep",
        }  # fmt: skip
        return body | ({"staged": "on"} if staged else {})

    return data


def act(action: str, **extra) -> Callable[[World], dict]:
    return lambda world: {"action": action, **extra}


def constant(body: dict) -> Callable[[World], dict]:
    return lambda world: dict(body)


def finished_run_of(world: World):
    """A completed eval run of the world's application (one of its passing runs)."""
    return EvalRun.objects.filter(application=world.app, status=EvalRun.Status.COMPLETED).earliest(
        "pk"
    )


def answer_of(world: World, user) -> int:
    """An answered item of finished_run_of(world): what a reviewer marks pass or fail."""
    return answered_result(finished_run_of(world)).pk


def reviewed_of(world: World, user) -> int:
    """A reviewed answer of finished_run_of(world): what can become a golden-set item."""
    return reviewed_result(finished_run_of(world)).pk


# ------------------------------------------------------------------------- the route table

ROUTES: dict[str, str | tuple[Case, ...]] = {
    # Runtime API and service endpoints.
    "metrics": GET_ONLY,
    "health": GET_ONLY,
    "ready": GET_ONLY,
    "api-config": GET_ONLY,
    "api-openapi": GET_ONLY,
    "ofrep-bulk": RUNTIME_API,
    "ofrep-flag": RUNTIME_API,
    "api-usage": RUNTIME_API,
    "api-samples": RUNTIME_API,
    # Accounts.
    "accounts:login": (
        Case(
            "wrong-password",
            to("accounts:login"),
            constant({"username": "sweep-lone-admin", "password": "not-it"}),
            proof=NONE,
        ),
    ),
    "accounts:logout": (Case("sign-out", to("accounts:logout"), constant({}), proof=NONE),),
    "accounts:members": (
        Case(
            "grant-a-role",
            to("accounts:members"),
            lambda world: {"username": "sweep-candidate", "role": "viewer"},
        ),
    ),
    "accounts:api_keys": (
        Case(
            "issue-a-prod-key",
            to("accounts:api_keys"),
            constant(
                {"name": "sweep", "environment": "prod", "scopes": ["config:read", "usage:write"]}
            ),
        ),
    ),
    "accounts:api_key_revoke": (
        Case("revoke-prod-key", to("accounts:api_key_revoke"), constant({})),
    ),
    "accounts:api_key_rotate": (
        Case("rotate-prod-key", to("accounts:api_key_rotate"), constant({"grace": "1h"})),
    ),
    # Audit log (read-only).
    "audit:log": GET_ONLY,
    "audit:export_csv": GET_ONLY,
    "audit:export_jsonl": GET_ONLY,
    # Golden sets: evidence, never served; every write must still leave prod alone.
    "datasets:variable_gaps": GET_ONLY,
    "datasets:list": GET_ONLY,
    "datasets:new": (
        Case(
            "new-golden-set",
            to("datasets:new"),
            constant({"key": "fresh-set", "name": "Fresh set", "description": ""}),
        ),
    ),
    "datasets:editor": GET_ONLY,
    "datasets:hints": GET_ONLY,
    "datasets:item_add": (
        Case("add-item", to("datasets:item_add"), constant({"question": "Added?"}), htmx=True),
    ),
    "datasets:bulk": (
        Case(
            "tag-items",
            to("datasets:bulk"),
            constant({"action": "tag", "ids": ["refund-1", "ship-1"], "tag": "sweep"}),
        ),
        Case(
            "delete-items",
            to("datasets:bulk"),
            constant({"action": "delete", "ids": ["refund-1", "ship-1"]}),
        ),
    ),
    "datasets:item_duplicate": (
        Case("duplicate-item", to("datasets:item_duplicate"), constant({}), htmx=True),
    ),
    "datasets:cell": (Case("edit-cell", to("datasets:cell"), cell_data, htmx=True),),
    "datasets:import": (
        Case(
            "upload",
            to("datasets:import"),
            proof=NONE,  # stores the upload, no audit yet
            data=lambda world: {
                "file": SimpleUploadedFile("n.csv", b"question\nNew?\n"),
                "mode": "merge",
                "format": "",
            },
        ),
    ),
    "datasets:import_job": (Case("apply-import", to("datasets:import_job"), constant({})),),
    "datasets:export": GET_ONLY,
    "datasets:publish": (
        Case("publish-golden-set", to("datasets:publish"), constant({"message": "sweep"})),
    ),
    "datasets:versions": GET_ONLY,
    "datasets:version": GET_ONLY,
    "datasets:diff": GET_ONLY,
    # Evals.
    "evals:runs": GET_ONLY,
    "evals:new": (Case("launch-run", to("evals:new"), lambda world: dict(world.eval_post)),),
    "evals:estimate": (
        Case("estimate", to("evals:estimate"), lambda world: dict(world.eval_post), proof=NONE),
    ),
    "evals:compare": GET_ONLY,
    "evals:run": GET_ONLY,
    "evals:cancel": (Case("cancel-run", to("evals:cancel"), constant({})),),
    "evals:review": (
        Case(
            "review-an-answer",
            to("evals:review", pk=lambda world, user: finished_run_of(world).pk, result=answer_of),
            constant({"verdict": "fail", "note": "sweep", "base_revision": "0"}),
        ),
    ),
    "evals:review_to_item": (
        Case(
            "reviewed-answer-to-golden-set",
            to(
                "evals:review_to_item",
                pk=lambda world, user: finished_run_of(world).pk,
                result=reviewed_of,
            ),
            lambda world: {"dataset": world.dataset.key},
        ),
    ),
    "evals:rerun": (
        Case(
            "rerun-on-a-version",
            to("evals:rerun", pk=lambda world, user: finished_run_of(world).pk),
            lambda world: {"dataset_version": world.eval_post["dataset_version"]},
        ),
    ),
    # Flags: the definition as served, the rules, kill and restore.
    "flags:list": GET_ONLY,
    "flags:new": (
        Case(
            "flag-serving-an-unreviewed-prompt",
            to("flags:new"),
            new_flag,
            control=same_as_case("flags:new", new_flag),
            control_env="dev",
        ),
    ),
    "flags:detail": GET_ONLY,
    "flags:edit": (
        Case(
            "swap-kill-switch-values",
            to("flags:edit", key="answers-enabled"),
            swapped_switch,
            control=same_as_case("flags:edit", swapped_switch, key="answers-enabled"),
            control_env="dev",
        ),
        Case(
            "point-variant-at-unreviewed-prompt",
            to("flags:edit", key="support-prompt"),
            unreviewed_ref,
            control=same_as_case("flags:edit", unreviewed_ref, key="support-prompt"),
            control_env="dev",
        ),
        Case(
            "change-off-variant",
            to("flags:edit", key="answers-enabled"),
            lambda world: flag_definition(world, "answers-enabled", off_variant="on"),
            control=same_as_case(
                "flags:edit",
                lambda world: flag_definition(world, "answers-enabled", off_variant="on"),
                key="answers-enabled",
            ),
            control_env="dev",
        ),
        Case(
            "change-kind",
            to("flags:edit", key="support-prompt"),
            lambda world: flag_definition(world, "support-prompt", kind="release"),
            control=same_as_case(
                "flags:edit",
                lambda world: flag_definition(world, "support-prompt", kind="release"),
                key="support-prompt",
            ),
            control_env="dev",
        ),
    ),
    "flags:evaluate": GET_ONLY,
    "flags:rules": (
        Case(
            "serve-canary-to-everyone",
            to("flags:rules", key="support-prompt"),
            rules_everyone_canary("prod"),
            control=lambda world, user: (
                to("flags:rules", key="support-prompt", env="staging")(world, user),
                rules_everyone_canary("staging")(world),
            ),
            control_env="staging",
        ),
    ),
    "flags:kill": (
        Case("kill-switch", to("flags:kill"), constant({"reason": "sweep"}), exception="kill"),
    ),
    "flags:restore": (
        Case(
            "restore-killed-flag",
            to("flags:restore", key="max-docs"),
            constant({"reason": "sweep"}),
            exception="restore",
        ),
    ),
    "flags:diff": GET_ONLY,
    # Notifications.
    "notifications:webhooks": (
        Case(
            "add-webhook",
            to("notifications:webhooks"),
            constant({"url": "https://hooks.sweep-receiver.net/new", "events": "promotion."}),
        ),
    ),
    "notifications:webhook_disable": (
        Case("disable", to("notifications:webhook_disable"), constant({})),
    ),
    "notifications:webhook_enable": (
        Case(
            "enable",
            to(
                "notifications:webhook_enable",
                hook_id=lambda world, user: world.disabled_webhook.pk,
            ),
            constant({}),
        ),
    ),
    "notifications:webhook_test": (
        Case("send-test", to("notifications:webhook_test"), constant({})),
    ),
    "notifications:webhook_delete": (
        Case("delete", to("notifications:webhook_delete"), constant({})),
    ),
    # Registry: policy, versions, bindings.
    "registry:home": GET_ONLY,
    "registry:dashboard": GET_ONLY,
    # Environments list their policies; the policy page changes them (loosening prod is a
    # request another admin approves, so none of these change prod's policy).
    "registry:environments": GET_ONLY,
    "registry:prompt_preview": (
        Case(
            "preview",
            to("registry:prompt_preview"),
            proof=NONE,
            data=constant(
                {
                    "system": "Hi {{ name }}",
                    "user": "",
                    "variables": "name",
                    "sample": '{"name": "x"}',
                }
            ),
        ),
    ),
    "registry:head_list": GET_ONLY,
    "registry:head_new": (
        Case(
            "new-prompt",
            to("registry:head_new"),
            lambda world: prompt_form(
                world, key="fresh", name="Fresh", message="new", base_number="0"
            ),
        ),
        Case(
            "new-model-config",
            to("registry:head_new", kind="models"),
            lambda world: model_form(
                world, key="fresh", name="Fresh", message="new", base_number="0"
            ),
        ),
    ),
    "registry:head_detail": GET_ONLY,
    "registry:head_edit": (
        Case(
            "new-prompt-version",
            to("registry:head_edit"),
            lambda world: prompt_form(world, base_number="4", message="edit"),
        ),
        Case(
            "new-model-version",
            to("registry:head_edit", kind="models", key="main"),
            lambda world: model_form(world, base_number="3", message="edit"),
        ),
    ),
    "registry:diff": GET_ONLY,
    "registry:bind": (
        Case(
            "bind-unreviewed-prompt-in-prod",
            to("registry:bind"),
            bind(4),
            control=aimed_at("registry:bind", "staging", bind(4), body_env=True),
            control_env="staging",
        ),
        Case(
            "bind-unreviewed-model-in-prod",
            to("registry:bind", kind="models", key="main"),
            bind(3),
            control=aimed_at(
                "registry:bind", "staging", bind(3), body_env=True, kind="models", key="main"
            ),
            control_env="staging",
        ),
    ),
    "registry:version_detail": GET_ONLY,
    # Releases: requests, decisions, apply, rollouts, history (rollback, shadows).
    "releases:inbox": GET_ONLY,
    "releases:policy": (
        Case("unprotect-prod", to("releases:policy"), loosened(protected=False), proof=AUDIT),
        Case("eval-gate-off", to("releases:policy"), loosened(eval_gate=False), proof=AUDIT),
        Case(
            "drop-golden-set",
            to("releases:policy"),
            loosened(datasets="", eval_gate=False),
            proof=AUDIT,
        ),
        Case("relax-gate", to("releases:policy"), loosened(gates="pass_rate >= 0.1"), proof=AUDIT),
        Case("more-errors", to("releases:policy"), loosened(max_error_rate="0.9"), proof=AUDIT),
        Case(
            "allow-breaker",
            to("releases:policy"),
            loosened(breakers="support-prompt:canary"),
            proof=AUDIT,
        ),
    ),
    "releases:new": (
        # One open request per prompt and environment: answer v3 already has one.
        Case("request-answer-v3", to("releases:new"), request_data(3), proof=REFUSED),
        Case("request-staged", to("releases:new"), request_data(3, staged=True), proof=REFUSED),
        Case("request-unreviewed-v4", to("releases:new"), request_data(4), proof=NONE),
    ),
    "releases:detail": GET_ONLY,
    "releases:tick": (
        Case(
            "tick-own-readiness-item",
            to("releases:tick", pk=own_request_with_checklist),
            constant({"item": "on-call", "note": "paged the on-call"}),
        ),
    ),
    "releases:act": (
        Case("approve-someone-elses", to("releases:act"), act("approve")),
        Case("reject-someone-elses", to("releases:act"), act("reject", comment="not yet")),
        Case("approve-own", to("releases:act", pk=own_request()), act("approve"), proof=REFUSED),
        Case(
            "apply-own-unapproved",
            to("releases:act", pk=own_request()),
            act("apply"),
            proof=REFUSED,
        ),
        Case(
            "edit-own",
            to("releases:act", pk=own_request(approved=True)),
            act("edit", justification="reworded"),
        ),
        Case("reconfirm-own", to("releases:act", pk=own_request(approved=True)), act("reconfirm")),
        Case("withdraw-own", to("releases:act", pk=own_request()), act("withdraw")),
        Case(
            "resume-paused-rollout",
            to("releases:act", pk=paused_rollout),
            act("resume", comment="sweep"),
        ),
        Case(
            "apply-approved",
            to("releases:act", pk=lambda world, user: world.approved.pk),
            act("apply"),
            exception="apply",
        ),
        Case(
            "pause-rollout",
            to("releases:act", pk=rollout_pk),
            act("pause", comment="sweep"),
            exception="rollout-pause",
        ),
        Case(
            "abort-rollout",
            to("releases:act", pk=rollout_pk),
            act("abort", comment="sweep"),
            exception="rollout-abort",
        ),
        Case(
            "advance-rollout",
            to("releases:act", pk=rollout_pk),
            act("advance", comment="sweep"),
            exception="rollout-advance",
        ),
    ),
    "releases:history": (
        Case(
            "shadow-unreviewed-prompt",
            to("releases:history"),
            history("shadow", version=4),
            control=aimed_at("releases:history", "staging", history("shadow", version=4)),
            control_env="staging",
        ),
        Case(
            "shadow-unreviewed-model",
            to("releases:history"),
            history("shadow", kind="model_config", key="main", version=3),
            control=aimed_at(
                "releases:history",
                "staging",
                history("shadow", kind="model_config", key="main", version=3),
            ),
            control_env="staging",
        ),
        Case(
            "rollback-to-never-live",
            to("releases:history"),
            history("rollback", version=4, reason="sweep"),
            proof=REFUSED,
        ),
        Case(
            "rollback",
            to("releases:history"),
            history("rollback", version=1, reason="sweep"),
            exception="rollback",
        ),
        Case(
            "rollback-flag-rules",
            to("releases:history"),
            history(
                "rollback", kind="flag_rules", key="prod:support-prompt", version=2, reason="sweep"
            ),
            exception="rollback-rules",
        ),
        Case(
            "rollback-flag-rules-to-unreleased",
            to("releases:history"),
            history(
                "rollback", kind="flag_rules", key="prod:support-prompt", version=1, reason="sweep"
            ),
            proof=REFUSED,
        ),
        Case("end-shadow", to("releases:history"), history("end_shadow"), exception="shadow-end"),
    ),
    # Usage: budgets (their breakers act on flags), prices.
    "usage:dashboard": GET_ONLY,
    "usage:export": GET_ONLY,
    "usage:budgets": (
        Case(
            "breaker-moves-flag-in-prod",
            to("usage:budgets"),
            breaker("prod"),
            control=aimed_at("usage:budgets", "staging", breaker("prod"), body_env=True),
            control_env="staging",
        ),
        Case(
            "breaker-moves-flag-everywhere",
            to("usage:budgets"),
            breaker(""),
            control=same_as_case("usage:budgets", breaker("")),
            control_env="staging",
        ),
        Case(
            "breaker-kills-in-prod",
            to("usage:budgets"),
            breaker("prod", "kill_switch"),
            exception="breaker-kill",
        ),
    ),
    "usage:prices": (Case("record-price", to("usage:prices"), price_data),),
    # Production samples: curation writes golden-set drafts, the policy what is stored.
    "samples:list": GET_ONLY,
    "samples:quality": GET_ONLY,
    "samples:detail": GET_ONLY,
    "samples:curate": (
        Case(
            "sample-to-golden-set",
            to("samples:curate", pk=lambda world, user: world.sample.pk),
            curate_data,
        ),
    ),
    "samples:policy": (Case("sample-policy", to("samples:policy"), sample_policy_data),),
    # Monitors watch and alert; they change nothing any environment serves.
    "samples:monitors": (Case("add-monitor", to("samples:monitors"), monitor_data),),
    "samples:monitor_enabled": (
        Case(
            "pause-monitor",
            to("samples:monitor_enabled", pk=lambda world, user: world.monitor.pk),
            lambda world: {"enabled": "0"},
        ),
    ),
    "samples:alert": (
        Case(
            "resolve-alert",
            to("samples:alert", pk=lambda world, user: world.alert.pk),
            lambda world: {"action": "resolve", "note": "sweep"},
        ),
    ),
    # Shadow comparisons: requesting the shadow's promotion opens a request (the one door).
    "experiments:shadows": GET_ONLY,
    "experiments:shadow": GET_ONLY,
    "experiments:shadow_promote": (
        Case(
            # The world's answer v3 → prod request is open: the comparison joins its evidence.
            "promote-shadow-with-its-request-open",
            to("experiments:shadow_promote", pk=lambda world, user: world.shadow.pk),
            lambda world: {"justification": "sweep"},
        ),
        Case(
            "promote-shadow",
            to("experiments:shadow_promote", pk=lambda world, user: shadow_freed(world)),
            lambda world: {"justification": "sweep"},
        ),
    ),
    # Experiments: concluding opens a promotion request (the one door); it serves nothing.
    "experiments:list": GET_ONLY,
    "experiments:report": GET_ONLY,
    "experiments:conclude": (
        Case(
            "conclude-experiment",
            to("experiments:conclude"),
            lambda world: {"variant": "canary"},
            proof=REFUSED,  # canary's version has no eval evidence under prod's policy (422)
        ),
    ),
}


# ------------------------------------------------------------------ URLconf enumeration


def _walk(patterns, namespace: str = "", prefix: str = ""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            ns = pattern.namespace
            inner = f"{namespace}:{ns}" if namespace and ns else (ns or namespace)
            yield from _walk(pattern.url_patterns, inner, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            name = pattern.name
            if namespace:  # an unnamed route inside a namespace belongs to it (admin redirects)
                name = f"{namespace}:{pattern.name or '<unnamed>'}"
            yield name, prefix + str(pattern.pattern), pattern


def all_routes() -> list[tuple[str | None, str, URLPattern]]:
    return list(_walk(get_resolver().url_patterns))


def _params(pattern: URLPattern) -> set[str]:
    converters = getattr(pattern.pattern, "converters", None)
    if converters is not None:
        return set(converters)
    return set(pattern.pattern.regex.groupindex)


ROUTE_PARAMS: dict[str, set[str]] = {}
for _name, _, _pattern in all_routes():
    if _name:
        ROUTE_PARAMS.setdefault(_name, set()).update(_params(_pattern))


def is_admin_site(name: str | None) -> bool:
    return bool(name) and name.split(":")[0] == ADMIN_SITE


def test_every_route_is_classified():
    """A route in the URLconf but not in ROUTES fails here until someone classifies it."""
    problems = []
    for name, route, _ in all_routes():
        if name is None:
            problems.append(f"unnamed route {route!r}: name it, then classify it")
        elif not is_admin_site(name) and name not in ROUTES:
            problems.append(
                f"unclassified route {name}: classify it in tests/governance/test_sweep.py"
            )
    stale = set(ROUTES) - {name for name, _, _ in all_routes()}
    problems += [f"ROUTES names {name}, which is no longer a route" for name in sorted(stale)]
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------- running a case


def cases(exception: bool | None = None):
    for name, entry in ROUTES.items():
        if isinstance(entry, str):
            continue
        for case in entry:
            if exception is None or (case.exception is not None) == exception:
                yield name, case


def run_beat() -> None:
    """What beat would do next, run inline now so a delayed effect shows in the same test: the
    services behind `rollup_usage`, `check_budgets` (its breaker part; the anomaly alerts it
    also raises serve nothing) and `advance_rollouts`."""
    usage_services.rollup(settle=timedelta(0))
    usage_budgets.check_budgets()
    rollouts.tick()


@dataclass
class Outcome:
    status: int
    errors: list[str]
    actions: list[str]
    before: Served
    after: Served
    data: dict = field(default_factory=dict)
    url: str = ""

    def describe(self) -> str:
        return (
            f"POST {self.url} -> {self.status}; error messages: {self.errors}; "
            f"audit events: {self.actions}"
        )


def perform(client, world: World, role: str, url_of, data_of, observe: str = "prod", htmx=False):
    user = world.users[role]
    client.force_login(user)
    url = url_of(world, user)
    data = data_of(world) if callable(data_of) else data_of
    before = read_served(world, observe)
    seq = last_audit_seq()
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    response = client.post(url, data, **headers)
    run_beat()
    after = read_served(world, observe)
    errors = [m.message for m in get_messages(response.wsgi_request) if m.level == ERROR]
    return Outcome(
        response.status_code, errors, audit_actions_since(seq), before, after,
        {k: v for k, v in data.items() if not hasattr(v, "read")}, url,
    )  # fmt: skip


def _params_for(exception: bool):
    return [
        pytest.param(name, case, role, id=f"{name}[{case.label}]-{role}")
        for name, case in cases(exception)
        for role in ROLES
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "case", "role"), _params_for(exception=False))
def test_prod_serves_the_same_after(client, world, name: str, case: Case, role: str):
    client.raise_request_exception = False
    outcome = perform(client, world, role, case.path, case.data, htmx=case.htmx)
    assert outcome.status < 500, outcome.describe()
    assert outcome.after == outcome.before, (
        f"{name} [{case.label}] as {role} changed what prod serves without the one door.\n"
        f"payload: {outcome.data}\n{outcome.describe()}\n"
        f"{served_diff(outcome.before, outcome.after)}"
    )


# ------------------------------------------------------------------ the allowed exceptions


def _flags_except(doc: dict, key: str) -> dict:
    return {k: v for k, v in doc.items() if k != "flags"} | {
        "flags": {k: v for k, v in doc["flags"].items() if k != key}
    }


def _only_flag_changed(before: dict, after: dict, key: str) -> str:
    if _flags_except(before, key) != _flags_except(after, key):
        return f"something besides flag {key} changed"
    return ""


def check_kill(world: World, before: dict, after: dict, key: str = "answers-enabled") -> str:
    problem = _only_flag_changed(before, after, key)
    was, now = before["flags"][key], after["flags"][key]
    if not problem and {**was, "killed": True} != now:
        problem = f"{key} changed beyond being killed"
    approved_off = world.flags[key].off_variant
    if not problem and now["off_variant"] != approved_off:
        problem = f"{key} serves {now['off_variant']!r}, not its approved off {approved_off!r}"
    return problem


def check_restore(world: World, before: dict, after: dict, key: str = "max-docs") -> str:
    problem = _only_flag_changed(before, after, key)
    if not problem and {**before["flags"][key], "killed": False} != after["flags"][key]:
        problem = f"{key} changed beyond being restored to its rules"
    return problem


def _only_top(before: dict, after: dict, section: str, key: str) -> str:
    rest = lambda doc: {  # noqa: E731
        **doc,
        section: {k: v for k, v in doc[section].items() if k != key},
    }
    return "" if rest(before) == rest(after) else f"something besides {section}.{key} changed"


def check_rollback(world: World, before: dict, after: dict) -> str:
    problem = _only_top(before, after, "prompts", "answer")
    number = after["prompts"]["answer"]["version"]
    if not problem and number not in world.once_live["answer"]:
        problem = f"answer v{number} was never live in prod"
    return problem


def check_rules_rollback(world: World, before: dict, after: dict) -> str:
    key = "support-prompt"
    problem = _only_flag_changed(before, after, key)
    head = FlagRules.objects.get(flag=world.flags[key], environment=world.prod)
    served = {k: after["flags"][key][k] for k in ("enabled", "rules", "default")}
    once_live = [  # every prod rules version that served the flag was live
        {k: v.content.get(k) for k in ("enabled", "rules", "default")}
        for v in head.versions.all()
        if not v.content.get("unreleased")
    ]
    if not problem and served not in once_live:
        problem = f"{key} serves rules that were never live in prod: {served}"
    return problem


def check_shadow_end(world: World, before: dict, after: dict) -> str:
    rest = lambda doc: {k: v for k, v in doc.items() if k != "shadows"}  # noqa: E731
    if rest(before) != rest(after):
        return "something besides the shadows changed"
    if (
        "answer" in after["shadows"]["prompts"]
        or after["shadows"]["model_configs"] != (before["shadows"]["model_configs"])
    ):
        return "the shadow did not just end"
    return ""


def check_apply(world: World, before: dict, after: dict) -> str:
    problem = _only_top(before, after, "model_configs", "main")
    number = world.approved.version.number
    if not problem and after["model_configs"]["main"]["version"] != number:
        problem = f"main is v{after['model_configs']['main']['version']}, approved was v{number}"
    return problem


def _canary_split(percent: int) -> dict:
    if percent >= 100:
        return {"variant": "new"}
    if percent <= 0:
        return {"variant": "old"}
    return {"rollout": [{"variant": "old", "weight": 100 - percent},
                        {"variant": "new", "weight": percent}]}  # fmt: skip


def check_rollout(expected_percent: Callable[[Rollout], int]):
    def check(world: World, before: dict, after: dict) -> str:
        key = world.rollout.flag.key
        problem = _only_flag_changed(before, after, key)
        want = _canary_split(expected_percent(world.rollout))
        if not problem and after["flags"][key]["default"] != want:
            problem = f"{key} serves {after['flags'][key]['default']}, the plan says {want}"
        return problem

    return check


def check_unchanged(world: World, before: dict, after: dict) -> str:
    return "" if before == after else "pausing changed what prod serves"


# kind → (check of the change, the audit action that must record it)
EXCEPTIONS: dict[str, tuple[Callable[[World, dict, dict], str], str]] = {
    "kill": (check_kill, "flag.kill"),
    "breaker-kill": (check_kill, "flag.kill"),
    "restore": (check_restore, "flag.restore"),
    "rollback": (check_rollback, "promotion.rollback"),
    "rollback-rules": (check_rules_rollback, "promotion.rollback"),
    "shadow-end": (check_shadow_end, "shadow.end"),
    "apply": (check_apply, "promotion.apply"),
    "rollout-pause": (check_unchanged, "promotion.rollout.pause"),
    "rollout-abort": (check_rollout(lambda rollout: 0), "promotion.rollout.abort"),
    "rollout-advance": (
        check_rollout(lambda rollout: rollout.steps[rollout.current_step + 1]),
        "promotion.rollout.advance",
    ),
}


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "case", "role"), _params_for(exception=True))
def test_allowed_exceptions_change_only_what_they_may(client, world, name, case: Case, role):
    client.raise_request_exception = False
    check, action = EXCEPTIONS[case.exception]
    outcome = perform(client, world, role, case.path, case.data)
    assert outcome.status < 500, outcome.describe()
    context = f"{name} [{case.label}] as {role}: {outcome.describe()}"
    assert outcome.after.policy == outcome.before.policy, context
    before, after = outcome.before.document(), outcome.after.document()
    if after != before:
        problem = check(world, before, after)
        assert not problem, f"{context}\n{problem}\n{served_diff(outcome.before, outcome.after)}"
        assert action in outcome.actions, f"{context}\nthe change was not audited as {action}"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "case"), [pytest.param(n, c, id=f"{n}[{c.label}]") for n, c in cases(True)]
)
def test_allowed_exceptions_work_for_the_lone_admin(client, world, name, case: Case):
    """The exception payloads are real: the application's admin gets exactly the change."""
    outcome = perform(client, world, "lone-admin", case.path, case.data)
    action = EXCEPTIONS[case.exception][1]
    assert outcome.status < 400 and not outcome.errors, outcome.describe()
    assert action in outcome.actions, outcome.describe()
    if case.exception != "rollout-pause":
        assert outcome.after != outcome.before, outcome.describe()


# -------------------------------------------------------------- the payloads are plausible


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "case"), [pytest.param(n, c, id=f"{n}[{c.label}]") for n, c in cases(False)]
)
def test_payload_reaches_the_write(client, world, name, case: Case):
    """A passing sweep case must mean "refused" or "harmless", never "the payload was junk"."""
    if case.control is not None:
        control = case.control
        outcome = perform(
            client, world, "lone-admin",
            lambda world, user: control(world, user)[0],
            lambda world: control(world, world.users["lone-admin"])[1],
            observe=case.control_env,
        )  # fmt: skip
        refused = bool(outcome.errors) and not outcome.actions
        assert outcome.status < 400, outcome.describe()
        assert outcome.after != outcome.before or refused, (
            f"the control request neither changed what {case.control_env} serves nor was "
            f"refused with a message: {outcome.describe()}"
        )
        return
    outcome = perform(client, world, "lone-admin", case.path, case.data, htmx=case.htmx)
    assert outcome.status < 500, outcome.describe()
    if case.proof == AUDIT:
        assert outcome.status < 400 and not outcome.errors and outcome.actions, outcome.describe()
    elif case.proof == REFUSED:
        assert outcome.errors or 400 <= outcome.status < 500, outcome.describe()
        assert not outcome.actions, outcome.describe()
    else:
        assert outcome.status < 400, outcome.describe()


# ------------------------------------------------------------------------ GET-only routes


@pytest.mark.django_db
@pytest.mark.parametrize("name", [n for n, entry in ROUTES.items() if entry == GET_ONLY])
def test_get_only_routes_refuse_post(client, world, name):
    client.force_login(world.users["lone-admin"])
    before = read_served(world)
    url = reverse(name, kwargs=default_kwargs(name, world))
    response = client.post(url, {"environment": "prod", "action": "apply"})
    assert response.status_code == 405, (
        f"{name} answers POST with {response.status_code}: if it writes, classify its POST in "
        "ROUTES with a payload"
    )
    assert read_served(world) == before


# -------------------------------------------------------------------- the runtime API keys


def _runtime_posts(world: World) -> list[tuple[str, str, bytes]]:
    now = timezone.now()
    big = {
        "events": [
            {
                "event_id": f"runtime-{n}", "time": (now - timedelta(seconds=2)).isoformat(),
                "model": "gpt-4o-mini", "input_tokens": 50_000_000, "output_tokens": 5_000_000,
                "feature": "chat", "prompt_version": "answer@4",
            }
            for n in range(3)
        ]
    }  # fmt: skip
    context = {"context": {"targetingKey": "user-1", "email": "a@acme.com"}}
    return [
        ("api-usage", reverse("api-usage"), json.dumps(big).encode()),
        ("api-samples", reverse("api-samples"), json.dumps(
            {"samples": [{"sample_id": "runtime-1", "time": now.isoformat(),
                          "inputs": {"question": "Ship to prod?"}, "output": "Yes."}]}
        ).encode()),
        ("ofrep-bulk", reverse("ofrep-bulk"), json.dumps(context).encode()),
        ("ofrep-flag", reverse("ofrep-flag", kwargs={"key": "support-prompt"}),
         json.dumps(context).encode()),
        ("ofrep-flag", reverse("ofrep-flag", kwargs={"key": "answers-enabled"}), b"{}"),
    ]  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize("key_name", ["prod-app", "prod-usage", "prod-both"])
def test_runtime_keys_change_nothing(world, key_name):
    """Runtime keys (config:read, usage:write) read and report; they never change what any
    environment serves — through the runtime API, or by knocking on the console's doors."""
    runtime = [n for n, entry in ROUTES.items() if entry == RUNTIME_API]
    posts = _runtime_posts(world)
    assert {name for name, _, _ in posts} == set(runtime)
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {world.secrets[key_name]}"}
    served = {env: read_served(world, env) for env in ("dev", "staging", "prod")}
    client = Client()
    answered = []
    for name, url, body in posts:
        response = client.post(url, body, content_type="application/json", **bearer)
        assert response.status_code < 500, (name, response.status_code, response.content[:300])
        answered.append((name, response.status_code))
    seq = last_audit_seq()
    for name, case in cases():
        path = case.path(world, world.users["requester"])
        response = client.post(path, case.data(world), **bearer)
        # A bearer key is not a session: the console sends the caller to sign in (the login
        # form itself answers 200 with an error).
        assert response.status_code == (200 if name == "accounts:login" else 302), (name, path)
    # Only the setup of the own-request cases (opened as the requester) left events.
    assert set(audit_actions_since(seq)) <= {"promotion.request", "promotion.approve",
                                             "promotion.withdraw",
                                             "promotion.rollout.pause"}  # fmt: skip
    run_beat()
    for env, before in served.items():
        after = read_served(world, env)
        assert after == before, (
            f"{key_name} changed {env}: {answered}\n{served_diff(before, after)}"
        )
    # The keys did what they may: the usage key was accepted, the read key evaluated.
    statuses = dict(answered)
    if key_name == "prod-app":
        assert statuses["api-usage"] == 403 and statuses["ofrep-bulk"] == 200
    if key_name == "prod-usage":
        assert statuses["api-usage"] == 202 and statuses["ofrep-bulk"] == 403


# --------------------------------------------------------------------- django.contrib.admin


@pytest.mark.django_db
@pytest.mark.parametrize("role", list(ROLES))
def test_the_django_admin_is_closed_to_every_role(client, world, role):
    """No Airlock role makes a user staff, so the Django admin (which edits environments — the
    prod policy included — without the one door or an audit event) refuses every POST."""
    user = world.users[role]
    assert not user.is_staff and not user.is_superuser
    client.force_login(user)
    before = read_served(world)
    admin_posts = [
        name for name in ROUTE_PARAMS
        if is_admin_site(name) and name.endswith(("_add", "_change", "_delete"))
    ]  # fmt: skip
    assert "admin:registry_environment_change" in admin_posts
    prod = world.prod
    body = {"application": prod.application_id, "key": "prod", "name": "prod", "order": 2,
            "required_approvals": 0}  # fmt: skip
    for name in admin_posts:
        object_id = world.app.pk if "application" in name else prod.pk
        kwargs = {p: object_id for p in ROUTE_PARAMS[name] if p in ("object_id", "id")}
        response = client.post(reverse(name, kwargs=kwargs), body | {"post": "yes"})
        assert response.status_code == 302 and "/login/" in response["Location"], name
    assert read_served(world) == before


def test_sweep_knows_every_exception_kind():
    kinds = {case.exception for _, case in cases(True)}
    assert kinds <= set(EXCEPTIONS), kinds - set(EXCEPTIONS)
