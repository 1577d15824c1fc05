"""Demo release state: prod's release policy (v1) requires evidence on support-golden under the
demo gates and on the safety suite support-safety under its safety gates, and one request —
answer-question v3 on gpt-main@1, the model prod serves, which passed those gates and is no
worse than v2 — waits in the approver's inbox."""

from __future__ import annotations

from django.db import transaction

from console.evals.demo import GATES, SAFETY_GATES
from console.releases import checklists, policies, services
from console.releases.evidence import gather
from console.releases.models import PromotionRequest

# Prod's readiness checklist: what Airlock verifies is required; what people confirm is optional
# here, so a journey through the demo is never stuck on a box nobody can tick.
ONCALL = "[optional] On-call knows the release time and how to roll back"
DEMO_CHECKLIST = "\n".join(
    [
        "[required] Eval gate passed on every golden set of the policy (auto: eval_gate)",
        "[required] Safety suite passed, injection included (auto: safety_suite)",
        "[required] A kill switch exists for the feature (auto: kill_switch)",
        "[optional] A budget is set for this environment (auto: budget)",
        "[optional] A rollback was exercised in a lower environment (auto: rollback_exercised)",
        ONCALL,
        "[optional] Canary criteria are written down: error rate, p95 latency, thumbs-down rate",
    ]
)


def seed_releases(application, users: dict, log=None) -> PromotionRequest | None:
    """Prod's demo policy, then the demo request — opened only once its evidence meets that
    policy (the demo evals ran before, synchronously). When it does not (the evals could not
    run), seeding says why and carries on without the request; seeding again retries."""
    prod = application.environments.get(key="prod")
    content, number = policies.current(prod)
    if number == 0:
        datasets = list(
            application.datasets.filter(key__in=["support-golden", "support-safety"]).values_list(
                "key", flat=True
            )
        )
        # Each golden set has its own gates: quality on support-golden, misuse on the suite.
        gates = [
            {**gate, "dataset": key}
            for key, scoped in (("support-golden", GATES), ("support-safety", SAFETY_GATES))
            if key in datasets
            for gate in scoped
        ]
        with transaction.atomic():
            policies.apply_content(
                actor=users["admin"],
                environment=prod,
                content=policies.clean(
                    prod,
                    {
                        **content,
                        "eval_gate": bool(datasets),
                        "datasets": datasets,
                        "gates": gates,
                        "max_error_rate": 0.1,
                        "checklist": checklists.parse(DEMO_CHECKLIST),
                    },
                ),
                message="Demo policy: quality on support-golden, safety on support-safety",
                number=0,
            )
    existing = PromotionRequest.objects.filter(application=application).first()
    if existing is not None:
        return existing
    prompt = application.prompts.get(key="answer-question")
    model = application.model_configs.get(key="gpt-main")
    version, paired = prompt.versions.get(number=3), model.versions.get(number=1)
    bundle = services.bundle_for("prompt", version, prod, paired)
    evidence = gather(prod, bundle, services.live_bundle(prod, bundle))
    if not evidence.ok:
        if log:
            log(
                "The demo promotion request was not opened, its evidence is missing: "
                + "; ".join(evidence.missing)
                + ". Run seed_demo again to retry."
            )
        return None
    request = services.open_request(
        actor=users["engineer"],
        environment=prod,
        version=version,
        paired=paired,
        justification=(
            "v3 cites its sources, keeps answers short and is guarded against misuse. With "
            "gpt-main@1 (what prod runs) it meets every gate of prod's policy on support-golden@1 "
            "and on the safety suite; against v2 (live in prod) source recall@5 goes up and "
            "injections stop working, with no policy metric worse."
        ),
    )
    services.tick_checklist(
        actor=users["engineer"],
        request=request,
        key=checklists.parse(ONCALL)[0]["key"],
        note="Support on-call paged; release window 14:00-15:00 UTC, rollback from the prod page.",
    )
    return request
