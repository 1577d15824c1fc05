"""An engineer concludes an experiment in real Chromium: from Flags to Experiments, open the
report of `answer-exp` in prod (v2 has clearly fewer errors than v1), read the verdict and how
the intervals work, and conclude it; land on the promotion request with the experiment report
in its evidence, waiting for someone else's approval. Prod serves what it served before."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from console.api import snapshot
from console.releases.models import PromotionRequest
from tests.e2e.conftest import Steps, log_in
from tests.experiments.conftest import FLAG, experiment, send  # noqa: F401
from tests.releases.conftest import fast_passwords, fresh_runtime_state, world  # noqa: F401

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the dev extra is not installed
    if os.environ.get("AIRLOCK_REQUIRE_SERVICES") == "1":
        raise
    pytest.skip("needs the playwright package (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = pytest.mark.e2e

PASSWORD = "pw-test-12345"
SHOTS = Path("/tmp/shots")


def test_engineer_concludes_an_experiment_into_a_promotion(
    new_page,
    artifacts,
    live_server,
    world,  # noqa: F811
    experiment,  # noqa: F811
):
    send(world, experiment, per_arm=1500, errors={"v1": 0.10, "v2": 0.02})
    world.passing_run(2)
    app = world.application.key
    served = snapshot.build(world.prod.pk).body
    steps = Steps(artifacts, "experiment-journey")
    SHOTS.mkdir(exist_ok=True)

    def shot(step: str) -> None:
        path = steps.shot(page, step)
        shutil.copy(path, SHOTS / f"experiment-{path.name}")

    page = new_page()
    log_in(page, "eng", PASSWORD)
    page.goto(f"/apps/{app}/")
    page.get_by_role("navigation", name="Application").get_by_role("link", name="Flags").click()
    page.get_by_role("link", name="Experiments").click()
    expect(page).to_have_url(re.compile(rf"/apps/{app}/experiments/$"))
    row = page.locator("tr", has_text=FLAG)
    expect(row).to_contain_text("prod")
    expect(row).to_contain_text("v1 50% · v2 50%")
    shot("list")
    row.get_by_role("link", name="Report").click()

    expect(page).to_have_url(re.compile(rf"/apps/{app}/experiments/prod/{FLAG}/$"))
    expect(page.locator(".conclusion")).to_contain_text("Winner: v2")
    expect(page.locator(".conclusion")).to_contain_text("better on error rate")
    expect(page.locator(".method")).to_contain_text("Always-valid intervals")
    errors = page.locator("tr", has_text="Error rate")
    expect(errors.locator(".verdict-better")).to_have_count(1)
    form = page.locator("form.conclude-form")
    expect(form.get_by_label("Variant to promote")).to_have_value("v2")
    shot("report")
    form.get_by_role("button", name="Conclude: request promotion").click()

    request = PromotionRequest.objects.get()
    expect(page).to_have_url(re.compile(rf"/apps/{app}/releases/{request.pk}/$"))
    expect(page.locator(".flashes .flash")).to_contain_text("with the experiment report")
    evidence = page.locator(".online-evidence")
    expect(evidence).to_contain_text("Experiment report")
    expect(evidence).to_contain_text("v2 beats v1")
    shot("request")
    assert request.status == PromotionRequest.Status.PENDING
    assert request.requested_by == world.users["engineer"]
    snapshot.forget_all()
    assert snapshot.build(world.prod.pk).body == served
    assert page.js_errors == []
