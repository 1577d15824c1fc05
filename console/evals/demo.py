"""Demo evals for support-bot: judge prompts, gates for support-golden, and two finished runs
(v2 and v3 of answer-question) so the run list and the comparison tell a story on first start."""

from __future__ import annotations

import socket

from console.datasets.models import Dataset
from console.evals import services
from console.evals.scorers import DEFAULT_SCORERS, JUDGED
from console.evals.simulator import serve_in_thread
from console.registry import services as registry
from console.registry.kinds import PROMPT

JUDGE_FAITHFULNESS = {
    "system": (
        "You are an evaluator grading faithfulness: is every statement in the ANSWER supported\n"
        'by the CONTEXT? Respond with JSON only: {"score": <0..1>, "reason": "<one sentence>"}.'
    ),
    "user": "QUESTION: {{ question }}\nCONTEXT: {{ context }}\nANSWER: {{ answer }}",
    "variables": ["question", "context", "answer"],
    "params": {},
}
JUDGE_RELEVANCE = {
    "system": (
        "You are an evaluator grading answer relevance: does the ANSWER address the QUESTION?\n"
        'Respond with JSON only: {"score": <0..1>, "reason": "<one sentence>"}.'
    ),
    "user": "QUESTION: {{ question }}\nCONTEXT: {{ context }}\nANSWER: {{ answer }}",
    "variables": ["question", "context", "answer"],
    "params": {},
}
GATES = [
    {"metric": "pass_rate", "op": ">=", "threshold": 0.75},
    {"metric": "recall_at_5", "op": ">=", "threshold": 0.8},
    {"metric": "faithfulness", "op": ">=", "threshold": 0.85},
    {"metric": "relevance", "op": ">=", "threshold": 0.6},
    {"metric": "hallucination_rate", "op": "<=", "threshold": 0.05},
    {"metric": "latency_p99_ms", "op": "<=", "threshold": 5000},
]
SCORERS = [*DEFAULT_SCORERS, *JUDGED]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def seed_evals(application, engineer, port: int = 8100) -> None:
    """The demo's two finished runs, made against a simulator started on `port` (the one the
    demo model configs call) unless something already listens there."""
    if application.eval_runs.exists():
        return
    judges = {}
    for key, content, name in (
        ("judge-faithfulness", JUDGE_FAITHFULNESS, "Judge: faithfulness"),
        ("judge-relevance", JUDGE_RELEVANCE, "Judge: answer relevance"),
    ):
        head = application.prompts.filter(key=key).first()
        if head is None:
            head = registry.create_head(
                actor=engineer,
                kind=PROMPT,
                application=application,
                key=key,
                name=name,
                content=content,
                message="Judge prompt",
            ).version.head
        judges[key] = head.versions.get(number=head.latest_number)
    dataset = Dataset.objects.get(application=application, key="support-golden")
    services.set_gate_policy(
        actor=engineer, application=application, dataset=dataset, gates=GATES, max_error_rate=0.1
    )
    server = serve_in_thread(port)[0] if _port_free(port) else None
    try:
        prompt = application.prompts.get(key="answer-question")
        model = application.model_configs.get(key="gpt-main")
        judge_model = application.model_configs.get(key="judge")
        for number in (2, 3):
            run = services.launch_run(
                actor=engineer,
                application=application,
                dataset_version=dataset.versions.get(number=dataset.latest_number),
                prompt_version=prompt.versions.get(number=number),
                # prod serves gpt-main@1: evidence for prod is about the model it runs on.
                model_version=model.versions.get(number=1),
                judge_model_version=judge_model.versions.get(number=judge_model.latest_number),
                judge_prompts={
                    "faithfulness": judges["judge-faithfulness"],
                    "relevance": judges["judge-relevance"],
                },
                scorers=SCORERS,
            )
            services.execute_run(run.pk, owner="seed_demo")
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
