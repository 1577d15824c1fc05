"""Readiness checklists: what a release owner confirms before a promotion goes live.

An environment's checklist is part of its release policy (versioned, audited, changed by admins;
in a protected environment dropping an item, making a required one optional or removing an
automatic check is a loosening another admin approves). Each promotion request carries the
checklist in force when it was opened. The requester ticks items with a note or a link; items
Airlock can verify tick themselves, with a link to the proof; required items block apply.

People write a checklist one item per line:

    [required] Rollback was exercised in a lower environment (auto: rollback_exercised)
    [optional] On-call was told about the release

`[required]` is the default; `(auto: <check>)` names one of AUTO_CHECKS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from console.audit.models import AuditEvent
from console.datasets import safety
from console.datasets.models import DatasetVersion
from console.datasets.selectors import item_checks
from console.flags.models import Flag
from console.samples.models import Monitor
from console.usage.models import Budget

MAX_ITEMS = 30
MAX_TEXT = 200
MAX_NOTE = 500
# How recent a rollback in a lower environment must be to count as exercised.
ROLLBACK_WINDOW = timedelta(days=30)
AUTO_CHECKS = {
    "eval_gate": "the release policy's eval gate is met on every golden set it names",
    "safety_suite": "a golden set of safety cases is among the evidence, and passed",
    "agent_eval": "a golden set of expected tool calls is among the evidence, and passed",
    "kill_switch": "a flag serving this prompt or model config can be killed",
    "budget": "a budget covers this environment",
    "monitor": "a monitor watches this environment's quality, errors or cost",
    "rollback_exercised": "a rollback of this prompt or model config was done in a lower "
    "environment in the last 30 days",
}
LINE = re.compile(
    r"^\s*(?:\[(?P<flag>required|optional)\]\s*)?(?P<text>.+?)"
    r"(?:\s*\(auto:\s*(?P<check>[a-z_]+)\s*\))?\s*$",
    re.I,
)

BARE_FLAG = re.compile(r"^\s*\[(required|optional)\]\s*$", re.I)

_ROLLBACK = "A rollback was exercised in a lower environment (auto: rollback_exercised)"
_EVALS = "Eval gate passed on every golden set of the policy (auto: eval_gate)"
_KILL = "A kill switch exists for the feature (auto: kill_switch)"
_BUDGET = "A budget is set for this environment (auto: budget)"
_ONCALL = "On-call knows the release time and how to roll back"
_MONITOR = "A monitor watches quality, errors or cost after release (auto: monitor)"
# Built-in templates: a starting point an admin loads into an environment's policy and edits.
TEMPLATES: dict[str, tuple[str, list[str]]] = {
    "llm-api": (
        "LLM API release",
        [_EVALS, _KILL, _ROLLBACK, _MONITOR, _ONCALL,
         "[optional] Canary criteria are written down: error rate, p95 latency, thumbs-down rate",
         "[optional] Provider rate limits and timeouts checked for the expected traffic"],
    ),
    "rag": (
        "RAG release",
        [_EVALS, _ROLLBACK, _MONITOR,
         "Retrieval checked on the current index: recall@k and context precision",
         "The index version the release expects is live in this environment",
         "[optional] Sources cited in answers are reachable by customers", _ONCALL],
    ),
    "agent": (
        "Agent release",
        [_EVALS, _KILL, _ROLLBACK,
         "Safety suite passed, injection included (auto: safety_suite)",
         "Every tool the agent can call has a least-privilege credential",
         "Agent eval passed: tool calls, arguments, step bound (auto: agent_eval)",
         "Tools that write ask the customer to confirm first", _ONCALL],
    ),
    "model-upgrade": (
        "Model upgrade",
        [_EVALS, _BUDGET, _ROLLBACK,
         "Cost per request compared with the current model",
         "Latency p95 compared with the current model",
         "[optional] The old model config stays available for rollback for a week"],
    ),
    "security": (
        "Security release",
        ["Safety suite passed, injection included (auto: safety_suite)", _EVALS, _KILL,
         "No secrets or personal data in the prompt or its examples",
         "[optional] The system prompt was reviewed by a second engineer"],
    ),
    "cost": (
        "Cost release",
        [_BUDGET, _EVALS, "Spend forecast for the first week written in the request",
         "[optional] A budget breaker action is approved for this environment"],
    ),
}  # fmt: skip


def parse(text: str) -> list[dict[str, Any]]:
    """Lines as people write them → items; errors name the line."""
    items, problems, seen = [], [], set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = LINE.match(line)
        if not match or not match["text"].strip() or BARE_FLAG.match(match["text"]):
            problems.append(f"line {number}: write the item, e.g. “[required] On-call was told”")
            continue
        item = _item(match["text"], (match["flag"] or "required").lower() == "required",
                     match["check"] or "")  # fmt: skip
        try:
            clean_item(item)
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        if item["key"] in seen:
            problems.append(f"line {number}: “{item['text']}” is already on the list")
            continue
        seen.add(item["key"])
        items.append(item)
    if len(items) > MAX_ITEMS:
        problems.append(f"keep the checklist to {MAX_ITEMS} items (it has {len(items)})")
    if problems:
        raise ValidationError(problems)
    return items


def _item(text: str, required: bool, check: str) -> dict[str, Any]:
    text = " ".join(text.split())
    return {"key": slugify(text)[:60] or "item", "text": text, "required": required,
            "check": check.lower()}  # fmt: skip


def clean_item(item: dict[str, Any]) -> dict[str, Any]:
    text = item.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("an item needs its text")
    if len(text) > MAX_TEXT:
        raise ValueError(f"keep an item under {MAX_TEXT} characters (it has {len(text)})")
    check = item.get("check") or ""
    if check and check not in AUTO_CHECKS:
        raise ValueError(f"unknown automatic check {check!r} (known: {', '.join(AUTO_CHECKS)})")
    return _item(text, item.get("required") is not False, check)


def clean(items: Any) -> list[dict[str, Any]]:
    """A policy's checklist as stored (the service's check of what a form or script sends)."""
    if not isinstance(items, list):
        raise ValidationError("the checklist is a list of items")
    try:
        cleaned = [clean_item(i if isinstance(i, dict) else {}) for i in items]
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    return parse(to_text(cleaned))


def to_text(items: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"[{'required' if i['required'] else 'optional'}] {i['text']}"
        + (f" (auto: {i['check']})" if i.get("check") else "")
        for i in items
    )


def template_text(key: str) -> str:
    return "\n".join(TEMPLATES[key][1])


def loosenings(old: list[dict], new: list[dict]) -> list[str]:
    """Every way `new` asks less than `old` of a release owner."""
    found = []
    now = {i["key"]: i for i in new}
    for item in old:
        kept = now.get(item["key"])
        if kept is None:
            if item["required"] or item.get("check"):
                found.append(f"drops checklist item “{item['text']}”")
        elif item["required"] and not kept["required"]:
            found.append(f"makes checklist item “{item['text']}” optional")
        elif item.get("check") and kept.get("check") != item["check"]:
            found.append(f"stops checking “{item['text']}” automatically")
    return found


# ------------------------------------------------------------------------------ a request's


@dataclass(frozen=True)
class ItemStatus:
    key: str
    text: str
    required: bool
    check: str
    done: bool
    how: str  # "ticked", "verified" or ""
    by: str = ""
    at: str = ""
    note: str = ""
    proof: str = ""  # what was verified, in words
    proof_url: str = ""


def status(request, evidence: dict | None = None) -> list[ItemStatus]:
    """Each item of the request's checklist: ticked by whom, verified with what proof, or open.
    Automatic checks are judged now, against what the console holds (and `evidence`, when the
    page judged the request's evidence afresh)."""
    checklist = request.checklist or {}
    ticks = checklist.get("ticks") or {}
    out = []
    for item in checklist.get("items") or []:
        if item.get("check"):
            ok, proof, url = verify(item["check"], request, evidence)
            out.append(
                ItemStatus(
                    item["key"], item["text"], item["required"], item["check"], ok,
                    "verified" if ok else "", proof=proof, proof_url=url,
                )
            )  # fmt: skip
            continue
        tick = ticks.get(item["key"])
        out.append(
            ItemStatus(
                item["key"], item["text"], item["required"], "", bool(tick),
                "ticked" if tick else "", by=(tick or {}).get("by", ""),
                at=(tick or {}).get("at", "").replace("T", " ")[:16],
                note=(tick or {}).get("note", ""),
            )
        )  # fmt: skip
    return out


def blocking(request) -> list[str]:
    """The required items not done: apply waits for them."""
    return [s.text for s in status(request) if s.required and not s.done]


# The automatic checks that mean something for a flag rules request (the others are about the
# prompt and model config a request makes live).
FLAG_RULES_CHECKS = {"budget"}


def verify(check: str, request, evidence: dict | None = None) -> tuple[bool, str, str]:
    """(passed, the proof or what is missing, a link to look at)."""
    if request.kind == "flag_rules" and check not in FLAG_RULES_CHECKS:
        return True, "does not apply to flag rule changes", ""
    return _CHECKS[check](request, evidence or request.evidence or {})


def _app(request) -> str:
    return request.application.key


def _eval_gate(request, evidence: dict) -> tuple[bool, str, str]:
    datasets = evidence.get("datasets") or []
    url = reverse("releases:policy", args=[_app(request), request.environment.key])
    if not evidence.get("required"):
        return False, "the policy here has no eval gate", url
    if not datasets or not evidence.get("ok") or evidence.get("waiting"):
        reasons = evidence.get("missing") or evidence.get("waiting") or ["no evidence"]
        return False, "; ".join(reasons), url
    runs = ", ".join(f"run #{d['run']} on {d['dataset']}" for d in datasets)
    first = datasets[0]["run"]
    return True, f"met by {runs}", reverse("evals:run", args=[_app(request), first])


def _suite_in_evidence(
    request, evidence: dict, is_suite, missing: str, where_to_start: str
) -> tuple[bool, str, str]:
    """Whether a golden set of a kind (`is_suite` over its item checks) is among the evidence,
    and its run passed."""
    for entry in evidence.get("datasets") or []:
        key, _, number = entry["dataset"].rpartition("@")
        version = DatasetVersion.objects.filter(
            head__application=request.application, head__key=key, number=number
        ).first()
        if version is not None and entry.get("run") and is_suite(item_checks(version)):
            url = reverse("evals:run", args=[_app(request), entry["run"]])
            if entry.get("verdict") == "passed":
                return True, f"{entry['dataset']} passed (run #{entry['run']})", url
            return False, f"{entry['dataset']} did not pass (run #{entry['run']})", url
    return False, missing, where_to_start


def _safety_suite(request, evidence: dict) -> tuple[bool, str, str]:
    return _suite_in_evidence(
        request,
        evidence,
        lambda checks: any(c in safety.CHECK_VARIABLES for c in checks),
        "no golden set of safety cases among the policy's evidence",
        reverse("datasets:new", args=[_app(request)]),
    )


def _agent_eval(request, evidence: dict) -> tuple[bool, str, str]:
    return _suite_in_evidence(
        request,
        evidence,
        lambda checks: "expected_tools" in checks,
        "no golden set of expected tool calls among the policy's evidence",
        reverse("releases:policy", args=[_app(request), request.environment.key]),
    )


def _versions(request) -> list[tuple[str, Any]]:
    return [
        (kind, version)
        for kind, version in (("prompt", request.prompt_version),
                              ("model_config", request.model_version))
        if version is not None
    ]  # fmt: skip


def _heads(request) -> list[tuple[str, str]]:
    return [(kind, version.head.key) for kind, version in _versions(request)]


def _kill_switch(request, evidence: dict) -> tuple[bool, str, str]:
    heads = _heads(request)
    for flag in Flag.objects.filter(application=request.application).order_by("key"):
        refs = {(v.get("ref") or {}).get("kind"): (v.get("ref") or {}).get("key")
                for v in flag.variants}  # fmt: skip
        if any(refs.get(kind) == key for kind, key in heads):
            return (
                True,
                f"flag {flag.key} can be killed to {flag.off_variant}",
                reverse("flags:detail", args=[_app(request), flag.key]),
            )
    names = " or ".join(key for _, key in heads) or "this change"
    return False, f"no flag serves {names}", reverse("flags:list", args=[_app(request)])


def _budget(request, evidence: dict) -> tuple[bool, str, str]:
    budget = (
        Budget.objects.filter(application=request.application)
        .filter(environment__in=[request.environment])
        .first()
        or Budget.objects.filter(application=request.application, environment=None).first()
    )
    url = reverse("usage:dashboard", args=[_app(request)])
    if budget is None:
        return False, f"no budget covers {request.environment.name}", url
    return True, f"budget “{budget.name}” ({budget.amount} USD {budget.period})", url


def _monitor(request, evidence: dict) -> tuple[bool, str, str]:
    monitor = (
        Monitor.objects.filter(
            application=request.application, environment=request.environment, enabled=True
        )
        .order_by("pk")
        .first()
    )
    url = reverse("samples:monitors", args=[_app(request)])
    if monitor is None:
        return False, f"no monitor watches {request.environment.name}", url
    return True, f"monitor: {monitor}", url


def _rollback_exercised(request, evidence: dict) -> tuple[bool, str, str]:
    heads = Q()  # the rollback's event is filed under the prompt or model config head
    for _, version in _versions(request):
        heads |= Q(object_type=version.head._meta.model_name, object_id=str(version.head_id))
    lower = request.application.environments.filter(protected=False)
    event = (
        AuditEvent.objects.filter(
            heads,
            action="promotion.rollback",
            environment_id__in=lower.values("pk"),
            at__gte=timezone.now() - ROLLBACK_WINDOW,
        )
        .order_by("-seq")
        .first()
        if heads
        else None
    )
    url = reverse("audit:log") + f"?application={_app(request)}&action=promotion.rollback"
    if event is None:
        return False, "no rollback in a lower environment in the last 30 days", url
    return True, f"{event.object_label} rolled back by {event.actor_label}", url


_CHECKS = {
    "eval_gate": _eval_gate,
    "safety_suite": _safety_suite,
    "agent_eval": _agent_eval,
    "kill_switch": _kill_switch,
    "budget": _budget,
    "monitor": _monitor,
    "rollback_exercised": _rollback_exercised,
}
