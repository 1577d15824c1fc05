"""Eval test helpers: the demo golden set and registry objects built through the real services,
pointed at a simulator the test started, plus small row/assertion helpers."""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.urls import reverse

from console.datasets import services as datasets
from console.datasets.demo import items as demo_items
from console.evals import demo as evals_demo
from console.evals.models import EvalResult, EvalRun
from console.ops.management.commands.seed_demo import (
    ANSWER_V1,
    ANSWER_V2,
    ANSWER_V3,
    model,
)
from console.registry import services as registry
from console.registry.kinds import MODEL_CONFIG, PROMPT

HTMX = {"HX-Request": "true"}


@dataclass
class Demo:
    application: object
    engineer: object
    dataset: object
    dataset_version: object
    prompts: dict  # number → PromptVersion of answer-question
    model_version: object
    judge_model_version: object
    judge_prompts: dict  # metric → PromptVersion
    base_url: str

    def launch_kwargs(self, prompt: int = 3, judged: bool = False, **extra) -> dict:
        kwargs = {
            "actor": self.engineer,
            "application": self.application,
            "dataset_version": self.dataset_version,
            "prompt_version": self.prompts[prompt],
            "model_version": self.model_version,
            "scorers": ["contains_all", "contains_none", "refusal", "recall_at_5", "mrr"],
        }
        if judged:
            kwargs.update(
                judge_model_version=self.judge_model_version,
                judge_prompts=dict(self.judge_prompts),
                scorers=list(evals_demo.SCORERS),
            )
        kwargs.update(extra)
        return kwargs


def model_content(base_url: str, **extra) -> dict:
    content = model("gpt-4o-mini", 0.15, 0.075, 0.60, temperature=0.0)
    content.update(base_url=base_url, **extra)
    return content


def publish_items(application, actor, key: str, rows: list[dict], message: str = "v1"):
    dataset = datasets.create_dataset(actor=actor, application=application, key=key, name=key)
    data = "".join(json.dumps(row) + "\n" for row in rows).encode()
    datasets.import_file(actor=actor, dataset=dataset, data=data, filename=f"{key}.jsonl")
    version = datasets.publish(actor=actor, dataset=dataset, message=message)
    return dataset, version


def build_demo(application, engineer, base_url: str, **model_extra) -> Demo:
    """The seed_demo story (answer-question v1..v3, gpt-main, a judge, support-golden with 60
    items), built with the services the console uses; model configs call `base_url`."""
    dataset, version = publish_items(application, engineer, "support-golden", demo_items())
    prompt_head = registry.create_head(
        actor=engineer, kind=PROMPT, application=application, key="answer-question",
        name="Answer", content=ANSWER_V1, message="First draft",
    ).version.head  # fmt: skip
    for number, content in ((1, ANSWER_V2), (2, ANSWER_V3)):
        registry.save_head_version(
            actor=engineer, head=prompt_head, content=content, base_number=number
        )
    prompts = {v.number: v for v in prompt_head.versions.all()}
    model_version = registry.create_head(
        actor=engineer, kind=MODEL_CONFIG, application=application, key="gpt-main",
        name="Main", content=model_content(base_url, **model_extra),
    ).version  # fmt: skip
    judge_content = model("gpt-4o", 2.50, 1.25, 10.00, temperature=0.0)
    judge_content["base_url"] = base_url
    judge_version = registry.create_head(
        actor=engineer, kind=MODEL_CONFIG, application=application, key="judge",
        name="Judge", content=judge_content,
    ).version  # fmt: skip
    judges = {}
    for metric, content in (
        ("faithfulness", evals_demo.JUDGE_FAITHFULNESS),
        ("relevance", evals_demo.JUDGE_RELEVANCE),
    ):
        judges[metric] = registry.create_head(
            actor=engineer, kind=PROMPT, application=application, key=f"judge-{metric}",
            name=f"Judge {metric}", content=content,
        ).version  # fmt: skip
    return Demo(
        application=application,
        engineer=engineer,
        dataset=dataset,
        dataset_version=version,
        prompts=prompts,
        model_version=model_version,
        judge_model_version=judge_version,
        judge_prompts=judges,
        base_url=base_url,
    )


def result_ids(run: EvalRun) -> list[str]:
    return list(EvalResult.objects.filter(run=run).values_list("item_id", flat=True))


def run_url(run: EvalRun, name: str = "run") -> str:
    return reverse(f"evals:{name}", kwargs={"app": run.application.key, "pk": run.pk})


def app_url(application, name: str) -> str:
    return reverse(f"evals:{name}", kwargs={"app": application.key})


def independent_summary(run: EvalRun) -> dict:
    """Recompute the headline numbers straight from the stored rows (not via metrics.py)."""
    rows = list(EvalResult.objects.filter(run=run))
    ok = [r for r in rows if r.status == "ok"]
    return {
        "items": len(rows),
        "errors": len(rows) - len(ok),
        "pass_rate": round(sum(1 for r in ok if r.passed) / len(ok), 4) if ok else None,
        "cost_total": round(sum(r.cost + r.judge_cost for r in rows), 6),
        "passed": sum(1 for r in ok if r.passed),
    }


def answered_result(run: EvalRun) -> EvalResult:
    """The run's first answered item, made when the run holds none (worlds whose runs carry
    metrics but no result rows): something to review."""
    found = run.results.filter(status=EvalResult.Status.OK).order_by("position").first()
    if found is not None:
        return found
    return EvalResult.objects.create(
        run=run, item_id="reviewable-1", position=1, question="How long do I have to return?",
        status=EvalResult.Status.OK, output="30 days.", passed=True,
        scores={"contains_all": 1.0},
    )  # fmt: skip


def reviewed_result(run: EvalRun) -> EvalResult:
    """answered_result(run), with a person's pass on it (made directly when it has none): what
    can become a golden-set item."""
    from console.evals.models import ResultReview

    row = answered_result(run)
    ResultReview.objects.get_or_create(result=row, defaults={"verdict": "pass", "revision": 1})
    return row


def answer_json(handler, payload: dict, status: int = 200) -> None:
    """Answer a test app's request (a BaseHTTPRequestHandler) with `payload` as JSON."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
