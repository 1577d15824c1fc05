"""Applications, their environments, and the versioned prompts and model configs bound to them."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from console.core.versioning import Version, VersionedHead


class Application(models.Model):
    key = models.SlugField(max_length=80, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        permissions = [
            ("curate_application", "Curate golden sets"),
            ("engineer_application", "Change prompts, model configs, flags; launch evals"),
            ("approve_application", "Approve promotions"),
            ("admin_application", "Manage members and keys"),
        ]

    def __str__(self) -> str:
        return self.name


class Environment(models.Model):
    application = models.ForeignKey(
        Application, on_delete=models.CASCADE, related_name="environments"
    )
    key = models.SlugField(max_length=40)
    name = models.CharField(max_length=100)
    order = models.PositiveSmallIntegerField(default=0)
    protected = models.BooleanField(default=False)
    required_approvals = models.PositiveSmallIntegerField(default=0)
    eval_gate_required = models.BooleanField(default=False)

    class Meta:
        ordering = ["application_id", "order", "key"]
        constraints = [
            models.UniqueConstraint(fields=["application", "key"], name="environment_unique_key")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def policy_summary(self) -> str:
        if not self.protected:
            return "Direct changes"
        parts = [f"{self.required_approvals} approval{'s' if self.required_approvals != 1 else ''}"]
        if self.eval_gate_required:
            parts.append("eval gate")
        return "Protected · " + ", ".join(parts)


class Prompt(VersionedHead):
    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="prompts")

    class Meta:
        ordering = ["key"]
        constraints = [
            models.UniqueConstraint(fields=["application", "key"], name="prompt_unique_key")
        ]


class PromptVersion(Version):
    """content: {"system": str, "user": str, "variables": [str], "params": {...}}"""

    head = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="versions")

    class Meta(Version.Meta):
        pass


class ModelConfig(VersionedHead):
    application = models.ForeignKey(
        Application, on_delete=models.CASCADE, related_name="model_configs"
    )

    class Meta:
        ordering = ["key"]
        constraints = [
            models.UniqueConstraint(fields=["application", "key"], name="modelconfig_unique_key")
        ]


class ModelConfigVersion(Version):
    """content: provider, base_url, model, api_key_env, temperature, max_tokens, timeout_s,
    max_retries, max_concurrency, price_input_per_1m, price_cached_input_per_1m,
    price_output_per_1m (USD)."""

    head = models.ForeignKey(ModelConfig, on_delete=models.PROTECT, related_name="versions")

    class Meta(Version.Meta):
        pass


class PromptBinding(models.Model):
    """Which prompt version is live in an environment."""

    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="prompt_bindings"
    )
    head = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="bindings")
    version = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="+")
    bound_at = models.DateTimeField(default=timezone.now)
    bound_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["environment", "head"], name="promptbinding_unique")
        ]

    def __str__(self) -> str:
        return f"{self.head_id}@{self.version_id} in {self.environment_id}"


class ModelConfigBinding(models.Model):
    """Which model config version is live in an environment."""

    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="model_config_bindings"
    )
    head = models.ForeignKey(ModelConfig, on_delete=models.CASCADE, related_name="bindings")
    version = models.ForeignKey(ModelConfigVersion, on_delete=models.PROTECT, related_name="+")
    bound_at = models.DateTimeField(default=timezone.now)
    bound_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "head"], name="modelconfigbinding_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.head_id}@{self.version_id} in {self.environment_id}"
