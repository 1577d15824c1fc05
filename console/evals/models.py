"""Eval runs: a prompt × model version (or an HTTP endpoint) against a published golden set."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from console.evals.scorers import AT_K
from console.registry.models import Application


class GatePolicy(models.Model):
    """Thresholds a run must meet, per golden set (or the application default when
    `dataset` is empty). gates: [{"metric": "faithfulness", "op": ">=", "threshold": 0.85}]"""

    application = models.ForeignKey(
        Application, on_delete=models.CASCADE, related_name="gate_policies"
    )
    dataset = models.ForeignKey(
        "datasets.Dataset", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    gates = models.JSONField(default=list)
    max_error_rate = models.FloatField(default=0.1)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["application", "dataset"], name="gatepolicy_unique"),
            models.UniqueConstraint(
                fields=["application"],
                condition=models.Q(dataset__isnull=True),
                name="gatepolicy_one_default",
            ),
        ]

    def __str__(self) -> str:
        return f"gates for {self.dataset_id or 'application default'}"


class EvalRun(models.Model):
    class Target(models.TextChoices):
        PROMPT_MODEL = "prompt_model", "Prompt × model"
        HTTP = "http", "HTTP endpoint"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        COMPLETED = "completed"
        CANCELLED = "cancelled"
        STOPPED = "stopped", "Stopped at cost cap"
        FAILED = "failed", "Failed to run"

    class Verdict(models.TextChoices):
        NONE = "", "—"
        PASSED = "passed"
        FAILED = "failed"
        ERRORED = "errored"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="eval_runs")
    target_type = models.CharField(max_length=16, choices=Target.choices)
    prompt_version = models.ForeignKey(
        "registry.PromptVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    model_version = models.ForeignKey(
        "registry.ModelConfigVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    http_target = models.JSONField(default=dict, blank=True)
    dataset_version = models.ForeignKey(
        "datasets.DatasetVersion", on_delete=models.PROTECT, related_name="eval_runs"
    )
    judge_model_version = models.ForeignKey(
        "registry.ModelConfigVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    judge_prompts = models.JSONField(
        default=dict, blank=True
    )  # {"faithfulness": prompt version id}
    scorers = models.JSONField(default=list)
    scorer_options = models.JSONField(default=dict, blank=True)
    gates = models.JSONField(default=list, blank=True)
    max_error_rate = models.FloatField(default=0.1)
    cost_cap = models.FloatField(null=True, blank=True)
    concurrency = models.PositiveIntegerField(default=8)
    # How many Celery tasks share the run's items (EvalShard); 1 runs in one task.
    shards = models.PositiveSmallIntegerField(default=1)
    fingerprint = models.CharField(max_length=64, db_index=True)
    label = models.CharField(max_length=300)

    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    verdict = models.CharField(max_length=8, choices=Verdict.choices, default="", blank=True)
    verdict_detail = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    total_items = models.PositiveIntegerField(default=0)
    done_items = models.PositiveIntegerField(default=0)
    error_items = models.PositiveIntegerField(default=0)
    passed_items = models.PositiveIntegerField(default=0)
    spend = models.FloatField(default=0.0)
    cancel_requested = models.BooleanField(default=False)
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["application", "-created_at"], name="evalrun_app_recent")]

    def __str__(self) -> str:
        return f"run {self.pk}: {self.label}"

    @property
    def retrieval_depth(self) -> int | None:
        """The k its @k source scorers looked at, when it ran any (older runs recorded none)."""
        if not set(self.scorers or []) & set(AT_K):
            return None
        return (self.scorer_options or {}).get("k")

    @property
    def active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def percent(self) -> int:
        return int(100 * self.done_items / self.total_items) if self.total_items else 0

    @property
    def running_pass_rate(self) -> float | None:
        judged = self.done_items - self.error_items
        return self.passed_items / judged if judged else None


class EvalShard(models.Model):
    """One part of a sharded run: the items at positions index+1, index+1+shards, … evaluated by
    one Celery task under a lease of its own, with its share of the run's concurrency. The run
    holds a lease too, renewed by every live shard, so a run whose every worker died is
    requeued; the last shard to finish finalises the run."""

    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="shard_set")
    index = models.PositiveSmallIntegerField()
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    done_items = models.PositiveIntegerField(default=0)
    error_items = models.PositiveIntegerField(default=0)
    passed_items = models.PositiveIntegerField(default=0)
    spend = models.FloatField(default=0.0)
    stop_reason = models.CharField(max_length=16, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "index"], name="evalshard_unique_index")
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} shard {self.index}"


class EvalResult(models.Model):
    """One item's outcome; stored as it finishes, unique per run × item so a resumed run
    never loses or duplicates an item."""

    class Status(models.TextChoices):
        OK = "ok"
        ERROR = "error"

    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="results")
    item_id = models.CharField(max_length=64)
    position = models.PositiveIntegerField()
    question = models.TextField()
    status = models.CharField(max_length=8, choices=Status.choices)
    output = models.TextField(blank=True)
    sources = models.JSONField(default=list, blank=True)
    # An agent's tool calls in order: [{"name", "arguments", "ran": false when past the bound}]
    tool_calls = models.JSONField(default=list, blank=True)
    scores = models.JSONField(default=dict, blank=True)
    reasons = models.JSONField(default=dict, blank=True)
    passed = models.BooleanField(null=True)
    hallucinated = models.BooleanField(default=False)
    latency_ms = models.FloatField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost = models.FloatField(default=0.0)
    judge_cost = models.FloatField(default=0.0)
    attempts = models.PositiveSmallIntegerField(default=1)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "item_id"], name="evalresult_unique_item")
        ]
        indexes = [models.Index(fields=["run", "position"], name="evalresult_run_pos")]

    def __str__(self) -> str:
        return f"{self.run_id}:{self.item_id}"


class ResultReview(models.Model):
    """A person's pass/fail on one answer of a run, with a note: what the LLM judge's scores are
    checked against. One per result; a change raises `revision`, so two reviewers editing the
    same verdict at once cannot overwrite each other unseen."""

    class Verdict(models.TextChoices):
        PASS = "pass", "Pass"
        FAIL = "fail", "Fail"

    result = models.OneToOneField(EvalResult, on_delete=models.CASCADE, related_name="review")
    verdict = models.CharField(max_length=4, choices=Verdict.choices)
    note = models.TextField(blank=True)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    revision = models.PositiveIntegerField(default=1)
    reviewed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.result}: {self.verdict}"
