"""Registry writes: applications, environments, versions and bindings — each audited."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from console.audit import services as audit
from console.core.versioning import SaveResult, VersionedHead, save_version
from console.registry.kinds import Kind, kind_for_head
from console.registry.models import Application, Environment


class PromotionRequired(Exception):
    """A protected environment's bindings change only through an applied promotion."""

    def __init__(self, environment: Environment):
        self.environment = environment
        super().__init__(
            f"{environment.name} is protected ({environment.policy_summary}): "
            "request a promotion instead of rebinding directly."
        )


def create_application(
    *, actor, key: str, name: str, description: str = "", environments: list[dict] | None = None
) -> Application:
    """Create an application and its ordered environments in one audited change."""
    with transaction.atomic():
        application = Application(key=key, name=name, description=description)
        application.full_clean()
        application.save()
        for order, spec in enumerate(environments or []):
            env = Environment(application=application, order=order, **spec)
            env.full_clean()
            env.save()
        audit.record(
            actor=actor,
            action="application.create",
            obj=application,
            object_label=application.key,
            application=application,
            after={
                "key": key,
                "name": name,
                "environments": [e.get("key") for e in environments or []],
            },
        )
    return application


def update_environment_policy(
    *,
    actor,
    environment: Environment,
    protected: bool,
    required_approvals: int,
    eval_gate_required: bool,
) -> Environment:
    """Set an environment's protection directly — for setting up applications (scripts, the
    demo, tests). No console route calls it: people change policies through the releases
    policy service, where loosening a protected environment needs another admin's approval."""
    if required_approvals < 0 or required_approvals > 10:
        raise ValidationError({"required_approvals": "must be between 0 and 10"})
    with transaction.atomic():
        env = Environment.objects.select_for_update().get(pk=environment.pk)
        before = _policy(env)
        env.protected = protected
        env.required_approvals = required_approvals if protected else 0
        env.eval_gate_required = eval_gate_required if protected else False
        if _policy(env) == before:
            return env
        env.save(update_fields=["protected", "required_approvals", "eval_gate_required"])
        audit.record(
            actor=actor,
            action="environment.policy.change",
            obj=env,
            object_label=f"{env.application.key}/{env.key}",
            application=env.application_id,
            environment=env,
            before=before,
            after=_policy(env),
        )
    return env


def mirror_environment_policy(
    environment: Environment, *, protected: bool, required_approvals: int, eval_gate_required: bool
) -> None:
    """Copy the release policy in force onto the environment's own fields. Called only by the
    releases policy service, inside the transaction that saves and audits the policy version."""
    Environment.objects.filter(pk=environment.pk).update(
        protected=protected,
        required_approvals=required_approvals,
        eval_gate_required=eval_gate_required,
    )
    environment.protected = protected
    environment.required_approvals = required_approvals
    environment.eval_gate_required = eval_gate_required


def _policy(env: Environment) -> dict:
    return {
        "protected": env.protected,
        "required_approvals": env.required_approvals,
        "eval_gate_required": env.eval_gate_required,
    }


def create_head(
    *,
    actor,
    kind: Kind,
    application: Application,
    key: str,
    name: str,
    description: str = "",
    content: dict,
    message: str = "",
) -> SaveResult:
    """Create a prompt or model config together with its first version."""
    cleaned = kind.clean(content)
    with transaction.atomic():
        head = kind.head(application=application, key=key, name=name, description=description)
        # Uniqueness is left to the database so two simultaneous creates cannot both pass.
        head.full_clean(validate_constraints=False)
        try:
            with transaction.atomic():
                head.save()
        except IntegrityError:
            raise ValidationError({"key": f"{kind.label} {key!r} already exists"}) from None
        result = save_version(
            head, cleaned, author=actor, message=message or "Created", base_number=0
        )
        audit.record(
            actor=actor,
            action=f"{kind.action}.create",
            obj=head,
            object_label=f"{head.key}@1",
            application=application,
            after={"key": key, "name": name, "content": cleaned},
            reason=message,
        )
    return result


def save_head_version(
    *, actor, head: VersionedHead, content: dict, base_number: int, message: str = ""
) -> SaveResult:
    """Save the next version of a prompt or model config.

    Identical content creates nothing; a save based on an outdated version raises
    VersionConflict showing what the other person changed.
    """
    kind = kind_for_head(head)
    cleaned = kind.clean(content)
    with transaction.atomic():
        result = save_version(head, cleaned, author=actor, message=message, base_number=base_number)
        if result.created:
            version = result.version
            audit.record(
                actor=actor,
                action=f"{kind.action}.version.create",
                obj=head,
                object_label=f"{head.key}@{version.number}",
                application=head.application_id,
                before=version.parent.content if version.parent_id else None,
                after=version.content,
                reason=message,
            )
    return result


def bind_version(
    *, actor, environment: Environment, version, reason: str = "", via_promotion: bool = False
):
    """Make `version` live in `environment`.

    Unprotected environments rebind directly; protected ones only through an applied
    promotion (`via_promotion=True`, called by the releases service).
    """
    head = version.head
    kind = kind_for_head(head)
    if head.application_id != environment.application_id:
        raise ValidationError("The version and the environment belong to different applications.")
    if environment.protected and not via_promotion:
        raise PromotionRequired(environment)
    with transaction.atomic():
        binding = (
            kind.binding.objects.select_for_update()
            .filter(environment=environment, head=head)
            .select_related("version")
            .first()
        )
        before = {"version": binding.version.number} if binding else None
        if binding and binding.version_id == version.pk:
            return binding
        if binding:
            binding.version = version
            binding.bound_at = timezone.now()
            binding.bound_by = actor if getattr(actor, "pk", None) else None
            binding.save(update_fields=["version", "bound_at", "bound_by"])
        else:
            binding = kind.binding.objects.create(
                environment=environment,
                head=head,
                version=version,
                bound_by=actor if getattr(actor, "pk", None) else None,
            )
        audit.record(
            actor=actor,
            action=f"{kind.action}.bind",
            obj=head,
            object_label=f"{head.key}@{version.number} → {environment.key}",
            application=environment.application_id,
            environment=environment,
            before=before,
            after={"version": version.number},
            reason=reason,
        )
    return binding
