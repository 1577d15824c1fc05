"""Demo release state: prod requires evidence on support-golden, and one request — v3 of
answer-question, which passed its gates — waits in the approver's inbox."""

from __future__ import annotations

from console.releases import services
from console.releases.models import PromotionRequest, ReleasePolicy


def seed_releases(application, users: dict) -> None:
    prod = application.environments.get(key="prod")
    policy, _ = ReleasePolicy.objects.get_or_create(environment=prod)
    dataset = application.datasets.filter(key="support-golden").first()
    if dataset is not None:
        policy.datasets.add(dataset)
    if PromotionRequest.objects.filter(application=application).exists():
        return
    prompt = application.prompts.get(key="answer-question")
    services.open_request(
        actor=users["engineer"],
        environment=prod,
        version=prompt.versions.get(number=3),
        justification=(
            "v3 cites its sources and keeps answers short. On support-golden@1 it passes every "
            "gate, and against v2 (live in prod) source recall@5 goes from 0 to 0.92 with no "
            "gate metric worse."
        ),
    )
