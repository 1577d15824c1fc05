"""Release policies: what an environment demands before anything new goes live there.

A policy is versioned (the versioning core) and audited. Admins change it; in a protected
environment a change that makes any demand weaker — fewer approvals, no eval gate, a golden set,
gate or threshold dropped or relaxed, a higher error allowance, a new breaker action, or
unprotecting — is a promotion request that another admin approves. Tightening applies at once.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from console.accounts.roles import ADMIN
from console.audit import services as audit
from console.core.canonical import content_hash
from console.core.permissions import application_perms
from console.core.versioning import save_version
from console.datasets.models import Dataset
from console.evals import metrics as eval_metrics
from console.evals.services import clean_gates
from console.registry import services as registry
from console.registry.models import Environment
from console.releases import checklists
from console.releases.models import ReleasePolicy

MAX_APPROVALS = 10
# With a minimum kappa set, a judge gate counts only when people reviewed at least this many of
# the judge's answers on that golden set.
DEFAULT_MIN_JUDGE_REVIEWS = 20
DEFAULT_MAX_ERROR_RATE = 0.1


def default_content(environment: Environment) -> dict[str, Any]:
    """The policy an environment has before anyone wrote one: its own fields, no golden sets."""
    return {
        "protected": environment.protected,
        "required_approvals": environment.required_approvals,
        "eval_gate": environment.eval_gate_required,
        "datasets": [],
        "gates": [],
        "max_error_rate": DEFAULT_MAX_ERROR_RATE,
        "breakers": [],
        "checklist": [],
        "min_judge_kappa": None,
        "min_judge_reviews": DEFAULT_MIN_JUDGE_REVIEWS,
    }


def policy_head(environment: Environment) -> ReleasePolicy:
    head, _ = ReleasePolicy.objects.get_or_create(
        environment=environment,
        defaults={"key": environment.key, "name": f"Release policy of {environment.name}"},
    )
    return head


def current(environment: Environment) -> tuple[dict[str, Any], int]:
    """(content, version number) of the policy in force; number 0 means the defaults."""
    head = ReleasePolicy.objects.filter(environment=environment).first()
    version = head.latest_version if head is not None and head.latest_number else None
    if version is None:
        return default_content(environment), 0
    # The environment's own fields mirror the version in force; they win if a setup script
    # changed them directly, so protection is never weaker than the environment says.
    return {
        **version.content,
        "protected": environment.protected,
        "required_approvals": environment.required_approvals,
        "eval_gate": environment.eval_gate_required,
    }, version.number


def clean(environment: Environment, content: dict[str, Any]) -> dict[str, Any]:
    """Validate a proposed policy; every problem is named by its field."""
    errors: dict[str, str] = {}
    protected = content.get("protected") is True
    try:
        approvals = int(content.get("required_approvals") or 0)
    except (TypeError, ValueError):
        approvals = -1
    if not 0 <= approvals <= MAX_APPROVALS:
        errors["required_approvals"] = f"a whole number from 0 to {MAX_APPROVALS}"
    if protected and approvals == 0:
        errors["required_approvals"] = "a protected environment needs at least one approval"
    keys = sorted({str(k).strip() for k in content.get("datasets") or [] if str(k).strip()})
    known = set(
        Dataset.objects.filter(application_id=environment.application_id, key__in=keys).values_list(
            "key", flat=True
        )
    )
    if unknown := [k for k in keys if k not in known]:
        errors["datasets"] = f"no golden set {', '.join(unknown)} in this application"
    gates: list[dict] = []
    try:
        gates = clean_gates(list(content.get("gates") or []))
    except ValidationError as exc:
        errors["gates"] = "; ".join(exc.message_dict.get("gates", exc.messages))
    strays = sorted({g["dataset"] for g in gates if g.get("dataset")} - set(keys))
    if strays and "gates" not in errors:
        errors["gates"] = (
            f"a gate names {', '.join(strays)}, which is not among the policy's golden sets"
        )
    try:
        max_error_rate = float(content.get("max_error_rate", DEFAULT_MAX_ERROR_RATE))
    except (TypeError, ValueError):
        max_error_rate = -1.0
    if not 0 <= max_error_rate <= 1:
        errors["max_error_rate"] = "a fraction from 0 to 1 (0.05 is 5%)"
    eval_gate = protected and content.get("eval_gate") is True
    if eval_gate and not keys:
        errors["datasets"] = "the eval gate needs at least one golden set"
    min_kappa = content.get("min_judge_kappa")
    if min_kappa in ("", None):
        min_kappa = None
    else:
        try:
            min_kappa = float(min_kappa)
        except (TypeError, ValueError):
            min_kappa = -2.0
        if not -1 <= min_kappa <= 1:
            errors["min_judge_kappa"] = "a kappa from -1 to 1 (0.6 is substantial agreement)"
    try:
        min_reviews = int(content.get("min_judge_reviews", DEFAULT_MIN_JUDGE_REVIEWS))
    except (TypeError, ValueError):
        min_reviews = 0
    if not 1 <= min_reviews <= 10_000:
        errors["min_judge_reviews"] = "a whole number of reviews from 1 to 10000"
    checklist: list[dict] = []
    try:
        checklist = checklists.clean(content.get("checklist") or [])
    except ValidationError as exc:
        errors["checklist"] = "; ".join(exc.messages)
    breakers = sorted({str(b).strip() for b in content.get("breakers") or [] if str(b).strip()})
    if bad := _unknown_breakers(environment, breakers):
        errors["breakers"] = bad
    if errors:
        raise ValidationError(errors)
    return {
        "protected": protected,
        "required_approvals": approvals if protected else 0,
        "eval_gate": eval_gate,
        "datasets": keys,
        "gates": gates,
        "max_error_rate": max_error_rate,
        "breakers": breakers,
        "checklist": checklist,
        "min_judge_kappa": min_kappa,
        "min_judge_reviews": min_reviews,
    }


def _unknown_breakers(environment: Environment, breakers: list[str]) -> str:
    from console.flags.models import Flag

    flags = {
        f.key: f
        for f in Flag.objects.filter(
            application_id=environment.application_id,
            key__in=[b.partition(":")[0] for b in breakers],
        )
    }
    problems = []
    for breaker in breakers:
        key, _, variant = breaker.partition(":")
        flag = flags.get(key)
        if flag is None or not variant:
            problems.append(f"{breaker!r} is not <flag>:<variant> of a flag here")
        elif variant not in flag.variant_keys:
            problems.append(f"{key} has no variant {variant!r}")
    return "; ".join(problems)


def _gate_key(gate: dict) -> tuple[str, str, str, str]:
    return gate["metric"], gate["op"], gate.get("slice", ""), gate.get("dataset", "")


def loosenings(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Every way `new` demands less than `old`, in words; empty when it only tightens."""
    found = []
    if old.get("protected") and not new.get("protected"):
        found.append("unprotects the environment")
    if new.get("required_approvals", 0) < old.get("required_approvals", 0):
        found.append(f"approvals {old.get('required_approvals')} → {new.get('required_approvals')}")
    if old.get("eval_gate") and not new.get("eval_gate"):
        found.append("turns the eval gate off")
    if dropped := sorted(set(old.get("datasets", [])) - set(new.get("datasets", []))):
        found.append(f"drops golden set {', '.join(dropped)}")
    new_gates = {_gate_key(g): g["threshold"] for g in new.get("gates", [])}
    for gate in old.get("gates", []):
        threshold = new_gates.get(_gate_key(gate))
        label = eval_metrics.gate_text(gate)
        if threshold is None:
            found.append(f"drops gate {label}")
        elif (gate["op"] == ">=" and threshold < gate["threshold"]) or (
            gate["op"] == "<=" and threshold > gate["threshold"]
        ):
            found.append(f"relaxes {label} to {threshold:g}")
    if new.get("max_error_rate", 0) > old.get("max_error_rate", 0):
        found.append(
            f"allows more errors ({old.get('max_error_rate', 0):.0%} → "
            f"{new.get('max_error_rate', 0):.0%})"
        )
    if added := sorted(set(new.get("breakers", [])) - set(old.get("breakers", []))):
        found.append(f"lets breaker {', '.join(added)} fire")
    found += checklists.loosenings(old.get("checklist", []), new.get("checklist", []))
    old_kappa, new_kappa = old.get("min_judge_kappa"), new.get("min_judge_kappa")
    if old_kappa is not None and (new_kappa is None or new_kappa < old_kappa):
        shown = "none" if new_kappa is None else f"{new_kappa:g}"
        found.append(f"lowers the judge agreement needed (κ {old_kappa:g} → {shown})")
    elif old_kappa is not None and new.get("min_judge_reviews", 0) < old.get(
        "min_judge_reviews", 0
    ):
        found.append(
            f"trusts a judge on fewer reviews ({old['min_judge_reviews']} → "
            f"{new['min_judge_reviews']})"
        )
    return found


def _require_admin(actor: Any, environment: Environment) -> None:
    if ADMIN not in application_perms(actor, environment.application):
        raise PermissionDenied("Only admins change release policies.")


def change(
    *,
    actor: Any,
    environment: Environment,
    content: dict[str, Any],
    base_number: int,
    message: str = "",
) -> tuple[str, Any]:
    """An admin changes `environment`'s policy: ("applied", version) when it takes effect now,
    ("requested", promotion request) when it loosens a protected environment's policy, or
    ("unchanged", None)."""
    _require_admin(actor, environment)
    cleaned = clean(environment, content)
    old, number = current(environment)
    if number != base_number:
        raise ValidationError(
            {"policy": f"the policy changed to v{number} while you edited it; review and resave"}
        )
    if content_hash(cleaned) == content_hash(old):
        return "unchanged", None
    weaker = loosenings(old, cleaned)
    if old.get("protected") and weaker:
        from console.releases import services

        request = services.open_policy_request(
            actor=actor,
            environment=environment,
            proposal=cleaned,
            base_number=number,
            justification=message or "; ".join(weaker),
            loosenings=weaker,
        )
        return "requested", request
    with transaction.atomic():
        version = apply_content(
            actor=actor, environment=environment, content=cleaned, message=message, number=number
        )
    return "applied", version


def apply_content(
    *, actor: Any, environment: Environment, content: dict[str, Any], message: str, number: int
):
    """Save `content` as the policy in force and mirror it on the environment, audited. Runs
    inside the caller's transaction (an admin's tightening, or an approved request's apply)."""
    old, _ = current(environment)
    head = policy_head(environment)
    result = save_version(head, content, author=actor, message=message, base_number=number)
    registry.mirror_environment_policy(
        environment,
        protected=content["protected"],
        required_approvals=content["required_approvals"],
        eval_gate_required=content["eval_gate"],
    )
    audit.record(
        actor=actor,
        action="environment.policy.change",
        obj=environment,
        object_label=f"{environment.application.key}/{environment.key} policy "
        f"v{result.version.number}",
        application=environment.application_id,
        environment=environment,
        before=old,
        after=content,
        reason=message,
    )
    return result.version


def breaker_allowed(environment: Environment, flag_key: str, variant: str) -> bool:
    """May a budget breaker move `flag_key` to `variant` in `environment`? Anywhere
    unprotected, yes; in a protected environment only when its policy (approved like any
    loosening) lists that action."""
    policy, _ = current(environment)
    if not policy.get("protected"):
        return True
    return f"{flag_key}:{variant}" in policy.get("breakers", [])


def gate_metrics(policy: dict[str, Any], dataset_key: str | None = None) -> list[str]:
    """The metrics a policy judges by (on one golden set, when given); pass rate always counts
    for non-inferiority."""
    gates = policy.get("gates", [])
    if dataset_key is not None:
        gates = eval_metrics.gates_for(gates, dataset_key)
    names = [g["metric"] for g in gates]
    return ["pass_rate", *[n for n in names if n != "pass_rate" and n in eval_metrics.METRICS]]
