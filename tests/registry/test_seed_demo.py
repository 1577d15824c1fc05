"""seed_demo does not depend on how fast the machine or the model is: its evals run synchronously
against the bundled simulator, a run spoiled by the machine (timeouts, errors, a missed latency
gate) is run again, and the demo promotion is opened only once its evidence meets prod's policy —
otherwise seeding says why and succeeds, and seeding again completes the demo."""

from __future__ import annotations

import io
import socket
from dataclasses import dataclass

import pytest
from django.core.management import call_command

from console.evals import demo as evals_demo
from console.evals.models import EvalRun
from console.evals.simulator import Faults, serve_in_thread
from console.registry.models import Application
from console.releases.models import PromotionRequest

pytestmark = pytest.mark.django_db(transaction=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_runs() -> list[EvalRun]:
    return list(
        EvalRun.objects.filter(
            application__key="support-bot",
            prompt_version__head__key="answer-question",
            dataset_version__head__key="support-golden",
        ).order_by("pk")
    )


def test_seeding_against_a_slow_model_still_completes_the_demo(allow_loopback):
    port = free_port()
    allow_loopback(port)
    out = io.StringIO()
    # Every answer and every judgement takes 400 ms or more.
    call_command("seed_demo", simulator_port=port, simulator_latency_ms=400, stdout=out)

    runs = demo_runs()
    assert [(r.prompt_version.number, r.status, r.metrics["errors"]) for r in runs] == [
        (2, "completed", 0),
        (3, "completed", 0),
    ]
    assert runs[1].verdict == EvalRun.Verdict.PASSED, runs[1].verdict_detail
    assert runs[0].metrics["latency_p50_ms"] >= 400  # the slow simulator answered them
    request = PromotionRequest.objects.get(application__key="support-bot")
    assert request.label == "answer-question@3 → prod" and request.evidence["ok"]
    assert "Demo ready" in out.getvalue() and "not opened" not in out.getvalue()

    # Seeding again changes nothing: the good runs are kept.
    call_command("seed_demo", simulator_port=port, stdout=io.StringIO())
    assert [r.pk for r in demo_runs()] == [r.pk for r in runs]
    assert PromotionRequest.objects.filter(application__key="support-bot").count() == 1


@dataclass
class FailingFirst(Faults):
    """A model server that answers HTTP 500 to its first `failing` requests (the client's
    retries included), as one does while it is overloaded, then recovers."""

    failing: int = 0

    def __post_init__(self):
        self._error_rate = 0.0

    @property
    def error_rate(self) -> float:
        return 1.0 if self.stats["requests"] <= self.failing else 0.0

    @error_rate.setter
    def error_rate(self, value: float) -> None:
        self._error_rate = value


def serve(faults: Faults, allow_loopback):
    server, _ = serve_in_thread(0, faults)
    allow_loopback(server.server_address[1])
    return server


def test_a_run_spoiled_by_the_machine_is_run_again(allow_loopback):
    faults = FailingFirst(failing=120)
    server = serve(faults, allow_loopback)
    try:
        call_command(
            "seed_demo", simulator_port=server.server_address[1], stdout=(out := io.StringIO())
        )
    finally:
        server.shutdown()
        server.server_close()
    runs = demo_runs()
    first = runs[0]
    assert first.verdict == EvalRun.Verdict.ERRORED and first.metrics["errors"] > 6
    assert "Running the demo eval again" in out.getvalue()
    assert [(r.prompt_version.number, r.metrics["errors"]) for r in runs[1:]] == [(2, 0), (3, 0)]
    assert PromotionRequest.objects.filter(application__key="support-bot").count() == 1


def test_without_evidence_seeding_succeeds_without_the_request_and_a_second_seed_adds_it(
    allow_loopback, monkeypatch
):
    monkeypatch.setattr(evals_demo, "DEMO_ATTEMPTS", 1)
    faults = FailingFirst(failing=10**6)  # the model is down for the whole first seeding
    server = serve(faults, allow_loopback)
    port = server.server_address[1]
    try:
        call_command("seed_demo", simulator_port=port, stdout=(out := io.StringIO()))
        assert Application.objects.filter(key="support-bot").exists()
        assert not PromotionRequest.objects.exists()
        text = out.getvalue()
        assert "The demo promotion request was not opened, its evidence is missing" in text
        assert "Demo ready" in text

        faults.failing = 0  # the model is back
        call_command("seed_demo", simulator_port=port, stdout=io.StringIO())
    finally:
        server.shutdown()
        server.server_close()
    request = PromotionRequest.objects.get(application__key="support-bot")
    assert request.evidence["ok"]
    assert [r.verdict for r in demo_runs()] == ["errored", "errored", "failed", "passed"]
