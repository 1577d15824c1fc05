"""Production samples: requests an application sent for review (redacted before they are
stored), the quality scores a judge gave a sampled share of them, and each application's
policy for both.

On PostgreSQL `Sample` is a table partitioned by day on `at` (migration 0002, partitions.py):
retention drops whole days instead of deleting rows, and the sweeps that read recent days
touch only their partitions."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.utils import timezone

from console.core.redaction import BUILTIN
from console.registry.models import Application, Environment, ModelConfigVersion

DEFAULT_JUDGE_RATE = 0.1
DEFAULT_JUDGE_DAILY_CAP = Decimal("1.00")


def _all_kinds() -> list[str]:
    return list(BUILTIN)


class SamplePolicy(models.Model):
    """What Airlock does with an application's samples: which personal data it redacts before
    storing them, and how many it has judged (a share of them, within a daily spend)."""

    application = models.OneToOneField(
        Application, on_delete=models.CASCADE, related_name="sample_policy"
    )
    redact_kinds = models.JSONField(default=_all_kinds)  # built-in kinds, console.core.redaction
    redact_patterns = models.JSONField(default=list, blank=True)  # [{"name", "pattern"}]
    judge_rate = models.FloatField(default=DEFAULT_JUDGE_RATE)  # share of samples judged, 0..1
    judge_daily_cap = models.DecimalField(
        max_digits=10, decimal_places=2, default=DEFAULT_JUDGE_DAILY_CAP
    )
    judge_model = models.ForeignKey(
        ModelConfigVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    judge_prompts = models.JSONField(default=dict, blank=True)  # metric → prompt version id
    revision = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"sample policy of {self.application_id}"


class Sample(models.Model):
    class Judge(models.TextChoices):
        PENDING = "pending", "waiting for the judge"
        SKIPPED = "skipped", "not in the judged share"
        DONE = "done", "judged"
        FAILED = "failed", "the judge failed"
        CAPPED = "capped", "not judged: the day's judge spend was reached"

    # Partitioned on PostgreSQL: the primary key there is (id, at), and every unique constraint
    # must hold `at` too (the sample id is unique per environment and time).
    id = models.BigAutoField(primary_key=True)
    application = models.ForeignKey(
        Application, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    sample_id = models.CharField(max_length=100)
    at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)
    prompt_version = models.CharField(max_length=120, blank=True)  # "key@version"
    model_config = models.CharField(max_length=120, blank=True)  # "key@version"
    flag = models.CharField(max_length=80, blank=True)  # the flag that chose `variant`
    variant = models.CharField(max_length=120, blank=True)
    question = models.TextField(blank=True)  # inputs["question"], or the first text input
    inputs = models.JSONField(default=dict, blank=True)
    output = models.TextField(blank=True)
    context = models.TextField(blank=True)
    sources = models.JSONField(default=list, blank=True)
    feedback = models.SmallIntegerField(default=0)  # -1 thumbs down, 0 none, 1 thumbs up
    feedback_comment = models.TextField(blank=True)
    redactions = models.JSONField(default=dict, blank=True)  # kind or pattern → count
    refused = models.BooleanField(default=False)
    input_chars = models.PositiveIntegerField(default=0)
    judge_state = models.CharField(max_length=8, choices=Judge.choices, default=Judge.SKIPPED)
    faithfulness = models.FloatField(null=True, blank=True)
    relevance = models.FloatField(null=True, blank=True)
    judge_reasons = models.JSONField(default=dict, blank=True)
    judge_cost = models.DecimalField(max_digits=12, decimal_places=8, default=0)
    judged_at = models.DateTimeField(null=True, blank=True)
    curated_into = models.CharField(max_length=200, blank=True)  # "dataset-key#item-id"

    class Meta:
        ordering = ["-at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["application", "environment", "sample_id", "at"], name="sample_unique_id"
            )
        ]
        indexes = [
            models.Index(fields=["application", "environment", "at"], name="sample_app_env_at"),
            models.Index(
                fields=["at"],
                name="sample_pending_at",
                condition=models.Q(judge_state="pending"),
            ),
        ]

    def __str__(self) -> str:
        return self.sample_id

    @property
    def hallucinated(self) -> bool | None:
        """The judge found the answer unsupported by its context (faithfulness under 0.5)."""
        return None if self.faithfulness is None else self.faithfulness < HALLUCINATION_BELOW


HALLUCINATION_BELOW = 0.5
# Input length (characters) bin starts of the input drift histogram. SampleHourly keeps a count
# per bin: changing them means rebuilding the rollups (delete them and reset the watermark).
INPUT_BINS = (0, 40, 80, 160, 320, 640, 1280)


class SampleHourly(models.Model):
    """One hour of one environment's samples of one prompt version, as the monitors read it:
    counts and sums of each sample metric and the input length histogram. Folded from the raw
    samples by console.samples.rollups (which see), up to its watermark."""

    application = models.ForeignKey(
        Application, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    hour = models.DateTimeField()
    prompt_version = models.CharField(max_length=120, blank=True)
    samples = models.PositiveIntegerField(default=0)
    judged = models.PositiveIntegerField(default=0)  # the judge is done with (Sample.Judge.DONE)
    faithfulness_n = models.PositiveIntegerField(default=0)  # samples with a faithfulness score
    faithfulness_sum = models.FloatField(default=0)
    relevance_n = models.PositiveIntegerField(default=0)
    relevance_sum = models.FloatField(default=0)
    hallucinated = models.PositiveIntegerField(default=0)  # faithfulness under HALLUCINATION_BELOW
    refused = models.PositiveIntegerField(default=0)
    rated = models.PositiveIntegerField(default=0)  # with feedback, up or down
    thumbs_down = models.PositiveIntegerField(default=0)
    input_bins = models.JSONField(default=list)  # samples per INPUT_BINS bin

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["application", "environment", "hour", "prompt_version"],
                name="samplehourly_once",
            )
        ]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}:00 {self.prompt_version}"


class SampleRollupState(models.Model):
    """The sample rollups' watermark (one row): SampleHourly holds exactly the samples with an
    id up to `last_sample_id`. `revision` rises with every pass that changed the rollups, so a
    reading can tell that a pass committed while it read."""

    last_sample_id = models.BigIntegerField(default=0)
    revision = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"samples@{self.last_sample_id} (revision {self.revision})"


class StaleSampleHour(models.Model):
    """An hour whose samples changed after they may have been folded (the judge scored them):
    the next rollup pass recomputes it, and readings take it from the raw samples until then.
    Not unique: a mark made while a pass runs must survive the pass deleting the ones it read."""

    application = models.ForeignKey(
        Application, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    hour = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(
                fields=["application", "environment", "hour"], name="stalesamplehour_app_env"
            )
        ]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}:00"


class ShadowAnswer(models.Model):
    """What a shadow version answered (a usage event's optional `output`), redacted like a
    sample, and how far it agrees with the answer production served for the same request (the
    live call's sample: `sample_id` == `shadow_of`), as judged for the judged share."""

    class Judge(models.TextChoices):
        PENDING = "pending", "waiting for the judge"
        SKIPPED = "skipped", "not in the judged share"
        DONE = "done", "judged"
        FAILED = "failed", "the judge failed"
        CAPPED = "capped", "not judged: the day's judge spend was reached"
        UNMATCHED = "unmatched", "not judged: the live answer was not sampled"

    application = models.ForeignKey(
        Application, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    event_id = models.CharField(max_length=100)  # the shadow call's usage event
    shadow_of = models.CharField(max_length=100)  # the live call's event id (redacted)
    at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)
    prompt_version = models.CharField(max_length=120, blank=True)  # "key@version"
    model_config = models.CharField(max_length=200, blank=True)  # "key@version" when it is one
    output = models.TextField(blank=True)
    redactions = models.JSONField(default=dict, blank=True)  # kind or pattern → count
    judge_state = models.CharField(max_length=9, choices=Judge.choices, default=Judge.SKIPPED)
    agreement = models.FloatField(null=True, blank=True)  # 0..1: agrees in substance with live
    judge_reason = models.CharField(max_length=500, blank=True)
    judge_cost = models.DecimalField(max_digits=12, decimal_places=8, default=0)
    judged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["application", "environment", "event_id"], name="shadowanswer_unique_id"
            )
        ]
        indexes = [
            models.Index(fields=["application", "environment", "at"], name="shadowanswer_app_at"),
            models.Index(
                fields=["at"],
                name="shadowanswer_pending_at",
                condition=models.Q(judge_state="pending"),
            ),
        ]

    def __str__(self) -> str:
        return self.event_id


AGREES_FROM = 0.5  # an agreement score from which the shadow's answer counts as agreeing


class JudgeSpend(models.Model):
    """What judging an application's samples cost on one UTC day: the daily cap is checked
    against it before each call, and raised atomically after."""

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    cost = models.DecimalField(max_digits=12, decimal_places=8, default=0)
    judged = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["application", "day"], name="judgespend_once")
        ]

    def __str__(self) -> str:
        return f"{self.day}: {self.cost}"


class Monitor(models.Model):
    """A rolling-window watch on one metric of one environment (and optionally one prompt
    version): the last `window_minutes` against the `baseline_minutes` before them. For rates
    and scores the thresholds are relative changes in percent (10% warns, 15% is critical);
    for input drift they are PSI values (0.1 and 0.25, the usual reading of PSI)."""

    class Metric(models.TextChoices):
        FAITHFULNESS = "faithfulness", "Faithfulness (judged)"
        RELEVANCE = "relevance", "Answer relevance (judged)"
        HALLUCINATION = "hallucination_rate", "Hallucination rate"
        REFUSAL = "refusal_rate", "Refusal rate"
        THUMBS_DOWN = "thumbs_down_rate", "Thumbs-down rate"
        ERROR = "error_rate", "Error rate"
        LATENCY = "latency_p95", "Latency p95"
        TOKENS = "tokens_per_request", "Tokens per request"
        COST = "cost_per_request", "Cost per request"
        DRIFT = "input_drift", "Input length drift (PSI)"

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="monitors")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    version = models.CharField(max_length=120, blank=True)  # prompt "key@N"; blank: all
    metric = models.CharField(max_length=24, choices=Metric.choices)
    window_minutes = models.PositiveIntegerField(default=60)
    baseline_minutes = models.PositiveIntegerField(default=24 * 60)
    warn = models.FloatField(default=10.0)
    critical = models.FloatField(default=15.0)
    min_samples = models.PositiveIntegerField(default=30)
    cooldown_minutes = models.PositiveIntegerField(default=15)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # What the last sweep saw: {"at", "value", "baseline", "change", "n", "severity"|None, "why"}
    last_check = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["environment__order", "metric", "version"]
        constraints = [
            models.UniqueConstraint(
                fields=["application", "environment", "version", "metric"], name="monitor_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_metric_display()} in {self.environment}" + (
            f" ({self.version})" if self.version else ""
        )


class MonitorAlert(models.Model):
    """One episode of a monitor out of bounds. While it is open (or acknowledged) a worse reading
    updates it instead of raising another; once resolved, the monitor stays quiet for its
    cooldown after the last notification."""

    class Severity(models.TextChoices):
        WARNING = "warning"
        CRITICAL = "critical"

    class State(models.TextChoices):
        OPEN = "open"
        ACKNOWLEDGED = "acknowledged"
        RESOLVED = "resolved"

    monitor = models.ForeignKey(Monitor, on_delete=models.CASCADE, related_name="alerts")
    severity = models.CharField(max_length=8, choices=Severity.choices)
    state = models.CharField(max_length=12, choices=State.choices, default=State.OPEN)
    value = models.FloatField()
    baseline = models.FloatField(null=True)
    change = models.FloatField()  # percent, or the PSI for drift
    opened_at = models.DateTimeField()
    notified_at = models.DateTimeField()
    notifications = models.PositiveIntegerField(default=1)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            # Dedup: at most one unresolved alert per monitor.
            models.UniqueConstraint(
                fields=["monitor"],
                condition=~models.Q(state="resolved"),
                name="monitoralert_one_unresolved",
            )
        ]

    def __str__(self) -> str:
        return f"{self.severity} on {self.monitor}"
