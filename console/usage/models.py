"""What production (and evals) spend: raw events, prices in effect over time, hourly rollups,
budgets and their alerts."""

from django.db import models
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from console.core.versioning import ImmutableVersionError, VersionQuerySet
from console.registry.models import Application, Environment

# Latency histogram bucket upper bounds (ms); the last bucket is open-ended. Mergeable across
# hours and dimensions, so percentiles over any range come from summed bucket counts.
LATENCY_BUCKETS_MS = [25, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12800]


class UsageEvent(models.Model):
    class Status(models.TextChoices):
        OK = "ok"
        ERROR = "error"
        TIMEOUT = "timeout"

    class Source(models.TextChoices):
        RUNTIME = "runtime"
        EVAL = "eval"

    # No index of its own: every lookup goes through the (application, ...) indexes below.
    application = models.ForeignKey(
        Application, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    environment = models.ForeignKey(
        Environment, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    event_id = models.CharField(max_length=100)
    at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)
    model = models.CharField(max_length=200)  # provider model name the price applies to
    model_config = models.CharField(max_length=120, blank=True)  # "key@version" when known
    prompt_version = models.CharField(max_length=120, blank=True)  # "key@version"
    feature = models.CharField(max_length=120, blank=True)
    # The flag whose evaluation chose `variant` (experiments and staged rollouts report per
    # flag and variant).
    flag = models.CharField(max_length=80, blank=True)
    variant = models.CharField(max_length=120, blank=True)
    # A shadow call: the event id of the live request it ran alongside (the shadow's answer is
    # never served).
    shadow_of = models.CharField(max_length=100, blank=True)
    # The model config this call fell back from (it failed, or its breaker was open): "key@N"
    # or a provider model name.
    fallback_from = models.CharField(max_length=200, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.FloatField(null=True, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OK)
    cache_hit = models.BooleanField(default=False)
    feedback = models.SmallIntegerField(default=0)  # -1 thumbs down, 0 none, 1 thumbs up
    user_hash = models.CharField(max_length=64, blank=True)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.RUNTIME)
    cost = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    savings = models.DecimalField(max_digits=14, decimal_places=8, default=0)  # from cached input

    class Meta:
        constraints = [
            # An event id is the client's: unique per application × environment, so a dev key
            # reusing a prod id stores its own event instead of hiding the prod one. Eval usage
            # has no environment; COALESCE keeps it unique too (NULLs never conflict).
            models.UniqueConstraint(
                F("application"),
                Coalesce("environment", 0, output_field=models.BigIntegerField()),
                F("event_id"),
                name="usageevent_unique_env_id",
            )
        ]
        # Every index here is maintained on every event ingested, so only those a query uses.
        # Per-user spend (top spenders, per-user budgets) filters on application and time and
        # groups by user_hash: it reads usage_app_at; an (application, user_hash, at) index
        # helped no query and cost ingestion about a tenth of its database time.
        indexes = [
            models.Index(fields=["application", "at"], name="usage_app_at"),
            models.Index(fields=["application", "model", "at"], name="usage_app_model_at"),
            # Only fallbacks are indexed (few rows): the costs page lists when they fired.
            models.Index(
                fields=["application", "at"],
                name="usage_fallback_at",
                condition=~models.Q(fallback_from=""),
            ),
            # Likewise only shadow calls: the shadow comparison pairs them with their live call.
            models.Index(
                fields=["application", "environment", "at"],
                name="usage_shadow_at",
                condition=~models.Q(shadow_of=""),
            ),
        ]

    def __str__(self) -> str:
        return self.event_id


class PricePoint(models.Model):
    """A model's price from `effective_from` until the next point. Append-only: a correction is
    a new point (with its effective date), never an edit; repricing is audited.

    tiers: [{"above_input_tokens": 128000, "input_per_1m": .., "cached_input_per_1m": ..,
             "output_per_1m": ..}] — a request whose input exceeds the threshold pays that rate.
    """

    application = models.ForeignKey(
        Application, on_delete=models.CASCADE, related_name="price_points"
    )
    model = models.CharField(max_length=200)
    effective_from = models.DateTimeField()
    input_per_1m = models.DecimalField(max_digits=12, decimal_places=6)
    cached_input_per_1m = models.DecimalField(max_digits=12, decimal_places=6)
    output_per_1m = models.DecimalField(max_digits=12, decimal_places=6)
    tiers = models.JSONField(default=list, blank=True)
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = VersionQuerySet.as_manager()

    class Meta:
        ordering = ["model", "effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["application", "model", "effective_from"], name="pricepoint_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from:%Y-%m-%d}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ImmutableVersionError("price points are append-only: record a correction instead")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)


class UsageRollup(models.Model):
    """What an hourly or daily rollup row holds: the dimensions (application × environment ×
    model × prompt version × feature × flag × variant × shadow × source) and the sums over that
    period."""

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="+")
    environment = models.ForeignKey(
        Environment, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    model = models.CharField(max_length=200)
    prompt_version = models.CharField(max_length=120, blank=True)
    feature = models.CharField(max_length=120, blank=True)
    flag = models.CharField(max_length=80, blank=True)
    variant = models.CharField(max_length=120, blank=True)
    shadow = models.BooleanField(default=False)  # shadow calls: paid for, never served
    source = models.CharField(max_length=8, default=UsageEvent.Source.RUNTIME)
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(max_digits=16, decimal_places=8, default=0)
    # Σ cost², for the variance of cost per request (experiment confidence intervals).
    cost_squares = models.FloatField(default=0)
    cache_savings = models.DecimalField(max_digits=16, decimal_places=8, default=0)
    cache_hits = models.PositiveIntegerField(default=0)
    thumbs_up = models.PositiveIntegerField(default=0)
    thumbs_down = models.PositiveIntegerField(default=0)
    latency_buckets = models.JSONField(default=list)

    class Meta:
        abstract = True


def _unique_per(period: str, name: str) -> models.UniqueConstraint:
    return models.UniqueConstraint(
        fields=[
            "application",
            "environment",
            period,
            "model",
            "prompt_version",
            "feature",
            "flag",
            "variant",
            "shadow",
            "source",
        ],
        name=name,
    )


class UsageHourly(UsageRollup):
    """Hourly rollups, folded from raw events; the source of the daily ones."""

    hour = models.DateTimeField()

    class Meta:
        constraints = [_unique_per("hour", "usagehourly_unique")]
        indexes = [models.Index(fields=["application", "hour"], name="usagehourly_app_hour")]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}:00 {self.model}"


class UsageDaily(UsageRollup):
    """The hourly rollups folded into UTC days. The cost dashboard and budgets read whole days,
    so they scan 24 times fewer rows. Rebuilt from UsageHourly whenever an hour of the day is
    recomputed (services._recompute), so the two never disagree."""

    day = models.DateField()

    class Meta:
        constraints = [_unique_per("day", "usagedaily_unique")]
        indexes = [models.Index(fields=["application", "day"], name="usagedaily_app_day")]

    def __str__(self) -> str:
        return f"{self.day:%Y-%m-%d} {self.model}"


class RollupState(models.Model):
    """Watermark: the highest UsageEvent id already folded into the rollups, and the id of the
    last repricing (repricing marks its hours dirty)."""

    name = models.CharField(max_length=40, unique=True)
    last_event_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name}@{self.last_event_id}"


class Budget(models.Model):
    class Period(models.TextChoices):
        DAILY = "daily"
        MONTHLY = "monthly"

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="budgets")
    environment = models.ForeignKey(
        Environment, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    feature = models.CharField(max_length=120, blank=True)
    name = models.CharField(max_length=120)
    period = models.CharField(max_length=8, choices=Period.choices)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    thresholds = models.JSONField(default=list)  # percents, e.g. [50, 80, 100, 120]
    # {"type": "kill_switch", "flag": KEY} or {"type": "variant", "flag": KEY, "variant": NAME}
    action = models.JSONField(default=dict, blank=True)
    per_user_daily_limit = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class BudgetAlert(models.Model):
    """One alert per budget × period × threshold (the unique constraint is the dedupe)."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    period_start = models.DateTimeField()
    threshold = models.PositiveSmallIntegerField()  # percent; 0 marks a per-user alert
    subject = models.CharField(max_length=64, blank=True)  # user hash for per-user alerts
    spend = models.DecimalField(max_digits=14, decimal_places=6)
    created_at = models.DateTimeField(default=timezone.now)
    action_taken = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "period_start", "threshold", "subject"], name="budgetalert_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.budget} {self.threshold}% {self.period_start:%Y-%m-%d}"


class AnomalyAlert(models.Model):
    """An unusual day already alerted (once per application, day and kind)."""

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    kind = models.CharField(max_length=40)  # "spend" | "cost per request"
    value = models.DecimalField(max_digits=16, decimal_places=8)
    baseline = models.FloatField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["application", "day", "kind"], name="anomalyalert_once")
        ]

    def __str__(self) -> str:
        return f"{self.kind} anomaly on {self.day}"
