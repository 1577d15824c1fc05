"""An experiment in prod: flag `answer-exp` splits traffic 50/50 between prompt answer@1 (the
control, live) and answer@2, on the release fixtures' world (tests/releases/conftest.py)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from console.core.versioning import dated
from console.flags import services as flags
from console.flags.models import FlagKind, FlagRulesVersion
from console.usage import services as usage
from tests.releases.conftest import fast_passwords, fresh_runtime_state, world  # noqa: F401

FLAG = "answer-exp"
SPLIT = [{"variant": "v1", "weight": 50}, {"variant": "v2", "weight": 50}]


@pytest.fixture
def experiment(world):  # noqa: F811
    engineer = world.users["engineer"]
    flag = flags.create_flag(
        actor=engineer,
        application=world.application,
        key=FLAG,
        name="Answer prompt v1 vs v2",
        flag_type="string",
        kind=FlagKind.EXPERIMENT,
        variants=[
            {
                "key": f"v{n}",
                "value": f"answer@{n}",
                "ref": {"kind": "prompt", "key": "answer", "version": n},
            }
            for n in (1, 2)
        ],
        off_variant="v1",
    )
    head = flags.rules_head(flag, world.prod)
    # The split has been live since three hours ago (the report counts whole hours from then).
    with dated(FlagRulesVersion, timezone.now() - timedelta(hours=3)):
        flags.save_rules(
            actor=engineer,
            flag=flag,
            environment=world.prod,
            content={"enabled": True, "rules": [], "default": {"rollout": SPLIT}},
            base_number=head.latest_number,
            via_promotion=True,
        )
    flag.refresh_from_db()
    return flag


def send(
    world,  # noqa: F811
    flag,
    *,
    per_arm: int,
    errors: dict,
    seed: int = 0,
    split=(0.5, 0.5),
) -> None:
    """Usage events of the experiment, two hours ago: `per_arm` × 2 requests split as given,
    with each variant's error rate; folded into the rollups."""
    rng = np.random.default_rng(seed)
    at = (timezone.now() - timedelta(hours=2)).replace(minute=30).isoformat()
    total = per_arm * 2
    events = []
    for n in range(total):
        variant = "v1" if n < total * split[0] else "v2"
        events.append(
            {
                "event_id": f"{variant}-{seed}-{n}",
                "time": at,
                "model": "gpt-4o-mini",
                "flag": flag.key,
                "variant": variant,
                "prompt_version": f"answer@{variant[1]}",
                "input_tokens": 500,
                "output_tokens": 100,
                "latency_ms": float(rng.lognormal(6.3, 0.4)),
                "status": "error" if rng.random() < errors[variant] else "ok",
                "feedback": "up" if rng.random() < 0.3 else "none",
            }
        )
    for start in range(0, len(events), usage.MAX_BATCH):
        usage.ingest(
            application=world.application,
            environment=world.prod,
            events=events[start : start + usage.MAX_BATCH],
        )
    usage.rollup(settle=timedelta(0))
