"""Promotion requests into protected environments, approvals, release policies, staged
rollouts (canaries) and shadow deployments."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from console.core.versioning import Version, VersionedHead
from console.registry.models import Application, Environment


class ReleasePolicy(VersionedHead):
    """An environment's release policy, versioned: its newest version is in force.

    content: {"protected": bool, "required_approvals": int, "eval_gate": bool,
    "datasets": [golden-set keys], "gates": [{"metric", "op", "threshold"}],
    "max_error_rate": float, "breakers": ["<flag>:<variant>", ...]}

    In a protected environment tightening takes effect at once; any loosening is a promotion
    request another admin approves. `Environment.protected` and friends mirror the version in
    force, for the many places that only ask "is this protected?".
    """

    environment = models.OneToOneField(
        Environment, on_delete=models.CASCADE, related_name="release_policy"
    )

    def __str__(self) -> str:
        return f"release policy of {self.environment}"


class ReleasePolicyVersion(Version):
    head = models.ForeignKey(ReleasePolicy, on_delete=models.PROTECT, related_name="versions")

    class Meta(Version.Meta):
        pass


class PromotionRequest(models.Model):
    class Kind(models.TextChoices):
        PROMPT = "prompt", "Prompt"
        MODEL_CONFIG = "model_config", "Model config"
        FLAG_RULES = "flag_rules", "Flag rules"
        POLICY = "policy", "Release policy"

    class Status(models.TextChoices):
        PENDING = "pending", "Awaiting approval"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        APPLIED = "applied", "Applied"
        WITHDRAWN = "withdrawn", "Withdrawn"

    OPEN = (Status.PENDING, Status.APPROVED)

    application = models.ForeignKey(
        Application, on_delete=models.CASCADE, related_name="promotions"
    )
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="promotions"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
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
    flag_version = models.ForeignKey(
        "flags.FlagRulesVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # The version live in the target when the request was (re-)confirmed: if it changes, the
    # request is stale (someone else promoted first) and must be re-confirmed.
    base_live_version = models.PositiveIntegerField(null=True, blank=True)
    justification = models.TextField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    required_approvals = models.PositiveSmallIntegerField(default=1)
    eval_gate_required = models.BooleanField(default=False)
    evidence = models.JSONField(default=dict, blank=True)
    # The environment's readiness checklist when the request was opened, and the requester's
    # ticks: {"items": [{"key", "text", "required", "check"}], "ticks": {key: {"by", "at",
    # "note"}}} (console.releases.checklists).
    checklist = models.JSONField(default=dict, blank=True)
    revision = models.PositiveIntegerField(default=1)  # bumped by edits; approvals name theirs
    staged = models.BooleanField(default=False)
    # Start the version as a shadow (called alongside the live one) instead of making it live.
    shadow = models.BooleanField(default=False)
    # A release policy change: the proposed policy content, and the version it would replace.
    proposal = models.JSONField(default=dict, blank=True)
    # What the request changes, one open request each per environment: "prompt:<id>",
    # "model_config:<id>", "flag:<id>", "shadow:prompt:<id>", "policy".
    subject = models.CharField(max_length=80, blank=True)
    # The release policy version the evidence was checked against.
    policy_version = models.PositiveIntegerField(null=True, blank=True)
    # After apply: what changed, from → to, as it was then (the page keeps showing it).
    applied_change = models.JSONField(default=dict, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    applied_at = models.DateTimeField(null=True, blank=True)
    applied_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["application", "status", "-created_at"], name="promotion_inbox")
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "subject"],
                condition=models.Q(status__in=["pending", "approved"]) & ~models.Q(subject=""),
                name="promotion_one_open_per_subject",
            )
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.label}"

    @property
    def version(self):
        """The version this request is about (the other half of a bundle is `paired`)."""
        return {
            self.Kind.PROMPT: self.prompt_version,
            self.Kind.MODEL_CONFIG: self.model_version,
            self.Kind.FLAG_RULES: self.flag_version,
        }.get(self.kind)

    @property
    def paired(self):
        """The version the prompt or model config is evaluated and served with."""
        if self.kind == self.Kind.PROMPT:
            return self.model_version
        if self.kind == self.Kind.MODEL_CONFIG:
            return self.prompt_version
        return None

    @property
    def bundle_label(self) -> str:
        """`prompt@N × model@M` — exactly what will be live together after apply."""
        if self.prompt_version_id and self.model_version_id:
            p, m = self.prompt_version, self.model_version
            return f"{p.head.key}@{p.number} × {m.head.key}@{m.number}"
        return ""

    @property
    def label(self) -> str:
        if self.kind == self.Kind.POLICY:
            return f"release policy → {self.environment.key}"
        version = self.version
        if version is None:
            return "(nothing)"
        shadow = " (shadow)" if self.shadow else ""
        return f"{version.head.key}@{version.number}{shadow} → {self.environment.key}"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN


class Approval(models.Model):
    class Decision(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"

    request = models.ForeignKey(
        PromotionRequest, on_delete=models.CASCADE, related_name="approvals"
    )
    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    decision = models.CharField(max_length=8, choices=Decision.choices)
    comment = models.TextField(blank=True)
    revision = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["request", "approver", "revision"], name="approval_once_per_revision"
            )
        ]

    def __str__(self) -> str:
        return f"{self.approver} {self.decision}s #{self.request_id}"


class Rollout(models.Model):
    """A staged canary for an approved prompt or model-config promotion: a flag whose variants
    are the old and new versions moves traffic step by step; guard metrics from usage can halt
    it and send everyone back to the old version."""

    class Status(models.TextChoices):
        RUNNING = "running"
        PAUSED = "paused"
        HALTED = "halted", "Halted (guard breach)"
        ABORTED = "aborted"
        COMPLETED = "completed"

    ACTIVE = (Status.RUNNING, Status.PAUSED)

    request = models.OneToOneField(
        PromotionRequest, on_delete=models.CASCADE, related_name="rollout"
    )
    flag = models.ForeignKey("flags.Flag", on_delete=models.PROTECT, related_name="+")
    steps = models.JSONField(default=list)  # percents, e.g. [5, 25, 50, 100]
    hold_minutes = models.PositiveIntegerField(default=30)
    current_step = models.PositiveSmallIntegerField(default=0)
    step_started_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    guards = models.JSONField(default=dict)
    last_check = models.JSONField(default=dict, blank=True)
    halted_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"rollout of #{self.request_id} ({self.status})"

    @property
    def percent(self) -> int:
        return self.steps[self.current_step] if self.steps else 0


class ShadowDeployment(models.Model):
    """A version the runtime config tells clients to call alongside the live one (and report),
    without serving its answers."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="shadows")
    kind = models.CharField(max_length=16, choices=PromotionRequest.Kind.choices[:2])
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
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        version = self.prompt_version or self.model_version
        return f"shadow {version} in {self.environment}"

    @property
    def version(self):
        return self.prompt_version or self.model_version
