"""Demo release state: prod's release policy (v1) requires evidence on support-golden under the
demo gates, and one request — answer-question v3 on gpt-main@1, the model prod serves, which
passed those gates and is no worse than v2 — waits in the approver's inbox."""

from __future__ import annotations

from django.db import transaction

from console.evals.demo import GATES
from console.releases import policies, services
from console.releases.evidence import gather
from console.releases.models import PromotionRequest


def seed_releases(application, users: dict, log=None) -> PromotionRequest | None:
    """Prod's demo policy, then the demo request — opened only once its evidence meets that
    policy (the demo evals ran before, synchronously). When it does not (the evals could not
    run), seeding says why and carries on without the request; seeding again retries."""
    prod = application.environments.get(key="prod")
    content, number = policies.current(prod)
    if number == 0:
        datasets = list(
            application.datasets.filter(key="support-golden").values_list("key", flat=True)
        )
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
                        "gates": GATES,
                        "max_error_rate": 0.1,
                    },
                ),
                message="Demo policy: evidence on support-golden under the demo gates",
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
    return services.open_request(
        actor=users["engineer"],
        environment=prod,
        version=version,
        paired=paired,
        justification=(
            "v3 cites its sources and keeps answers short. On support-golden@1 with gpt-main@1 "
            "(what prod runs) it meets every gate of prod's policy, and against v2 (live in "
            "prod) source recall@5 goes up with no policy metric worse."
        ),
    )
