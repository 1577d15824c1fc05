"""Flag writes: create and edit definitions, save rule versions, kill and restore — each one
audited in the transaction of the change.

Rules follow the environment's policy (direct in unprotected environments, promotion in
protected ones); the kill switch does not: it works everywhere, at once, with a reason.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from console.audit import services as audit
from console.core.versioning import SaveResult, acting_user, save_version, version_author
from console.flags import validation
from console.flags.models import (
    Flag,
    FlagKind,
    FlagRules,
    FlagType,
    definition_in,
    served_definition,
)
from console.flags.signals import flag_rules_changed
from console.registry.models import Application, Environment
from console.registry.services import PromotionRequired

MAX_REASON = 1000


def _ref_resolver(application: Application):
    from console.registry.kinds import MODEL_CONFIG, PROMPT

    kinds = {"prompt": PROMPT, "model_config": MODEL_CONFIG}

    def resolve(kind: str, key: str, version: int) -> str | None:
        k = kinds[kind]
        exists = k.version.objects.filter(
            head__application=application, head__key=key, number=version
        ).exists()
        return None if exists else f"{k.label.lower()} {key} has no version {version}"

    return resolve


def _definition(flag: Flag) -> dict:
    return {
        "key": flag.key,
        "name": flag.name,
        "description": flag.description,
        "flag_type": flag.flag_type,
        "kind": flag.kind,
        "owner": flag.owner.get_username() if flag.owner_id else None,
        "variants": flag.variants,
        "off_variant": flag.off_variant,
    }


def served_off_variant(head: FlagRules) -> str:
    """The off variant a kill switch serves in the rule set's environment: the approved one."""
    latest = head.latest_version
    return definition_in(latest.content if latest else None, head.flag)["off_variant"]


def _with_definition(content: dict, definition: dict) -> dict:
    return {**content, "definition": definition}


def first_rules(flag: Flag, environment: Environment) -> dict:
    """A new rule set: switched off. In a protected environment the flag is not served at all
    (`unreleased`) until a promotion brings it rules, so creating a flag — whatever its
    variants name — changes nothing a protected environment serves."""
    content = _with_definition(validation.empty_rules(flag.off_variant), served_definition(flag))
    return {**content, "unreleased": True} if environment.protected else content


def _changed(environment_ids: list[int]) -> None:
    transaction.on_commit(
        lambda: flag_rules_changed.send(sender=Flag, environment_ids=environment_ids)
    )


def create_flag(
    *,
    actor: Any,
    application: Application,
    key: str,
    name: str,
    flag_type: str,
    kind: str = FlagKind.RELEASE,
    description: str = "",
    owner: Any = None,
    variants: list[dict] | None = None,
    off_variant: str = "",
) -> Flag:
    """Create a flag and a rule set (v1, switched off) in every environment of its application.

    The first rule sets serve the off variant everywhere, protected environments included:
    creating a flag changes what no environment serves until someone switches it on.
    """
    author = version_author(actor)
    if kind not in FlagKind.values:
        raise ValidationError({"kind": f"must be one of {', '.join(FlagKind.values)}"})
    if variants is None:
        variants = validation.default_variants(flag_type)
    if not off_variant and flag_type == FlagType.BOOLEAN:
        off_variant = "off"
    cleaned, off_variant = validation.clean_variants(
        flag_type, variants, off_variant, _ref_resolver(application)
    )
    with transaction.atomic():
        flag = Flag(
            application=application,
            key=key,
            name=name,
            description=description,
            flag_type=flag_type,
            kind=kind,
            owner=owner,
            variants=cleaned,
            off_variant=off_variant,
        )
        flag.full_clean(validate_constraints=False)
        try:
            with transaction.atomic():
                flag.save()
        except IntegrityError:
            raise ValidationError({"key": f"flag {key!r} already exists"}) from None
        environments = list(application.environments.order_by("order", "key"))
        for env in environments:
            head = FlagRules.objects.create(
                flag=flag, environment=env, key=flag.key, name=f"{flag.key} in {env.key}"
            )
            save_version(
                head, first_rules(flag, env), author=author, message="Created", base_number=0
            )
        audit.record(
            actor=actor,
            action="flag.create",
            obj=flag,
            object_label=flag.key,
            application=application,
            after=_definition(flag),
        )
        _changed([e.pk for e in environments])
    return flag


def update_flag(
    *,
    actor: Any,
    flag: Flag,
    name: str,
    description: str,
    kind: str,
    owner: Any,
    variants: list[dict],
    off_variant: str,
) -> Flag:
    """Change a flag's definition. A variant still served by any environment's rules cannot be
    removed (that environment would serve something undefined)."""
    if kind not in FlagKind.values:
        raise ValidationError({"kind": f"must be one of {', '.join(FlagKind.values)}"})
    cleaned, off_variant = validation.clean_variants(
        flag.flag_type, variants, off_variant, _ref_resolver(flag.application)
    )
    with transaction.atomic():
        locked = Flag.objects.select_for_update().get(pk=flag.pk)
        before = _definition(locked)
        kept = {v["key"] for v in cleaned}
        followers = [
            head
            for head in FlagRules.objects.filter(flag=locked).select_related("environment")
            if not head.environment.protected
        ]
        for head in followers:
            latest = head.latest_version
            missing = validation.referenced_variants(latest.content) - kept if latest else set()
            if missing:
                raise ValidationError(
                    {
                        "variants": f"{', '.join(sorted(missing))} is still served in "
                        f"{head.environment.key} (rules v{latest.number}); change those rules "
                        "first"
                    }
                )
        locked.name, locked.description, locked.kind = name, description, kind
        locked.owner = owner
        locked.variants, locked.off_variant = cleaned, off_variant
        locked.full_clean(validate_constraints=False)
        after = _definition(locked)
        if after == before:
            return locked
        locked.updated_at = timezone.now()
        locked.save()
        # Unprotected environments follow the definition at once; protected ones keep serving
        # the copy in their rules until a promotion brings the new one.
        definition = served_definition(locked)
        followed = []
        for head in followers:
            latest = head.latest_version
            content = _with_definition(
                {k: v for k, v in (latest.content if latest else {}).items() if k != "definition"}
                or validation.empty_rules(locked.off_variant),
                definition,
            )
            result = save_version(
                head,
                content,
                author=version_author(actor),
                message="Definition changed",
                base_number=head.latest_number,
            )
            if result.created:
                followed.append(head.environment)
        audit.record(
            actor=actor,
            action="flag.update",
            obj=locked,
            object_label=locked.key,
            application=locked.application_id,
            before=before,
            after={**after, "served_in": [e.key for e in followed]},
        )
        _changed([e.pk for e in followed])
    return locked


def rules_head(flag: Flag, environment: Environment) -> FlagRules:
    """The rule set of `flag` in `environment`, created (switched off, v1) for an environment
    added later."""
    head, created = FlagRules.objects.get_or_create(
        flag=flag,
        environment=environment,
        defaults={"key": flag.key, "name": f"{flag.key} in {environment.key}"},
    )
    if created:
        with transaction.atomic():
            save_version(
                head,
                first_rules(flag, environment),
                author=version_author(None),
                message="Created",
                base_number=0,
            )
    return head


def save_rules(
    *,
    actor: Any,
    flag: Flag,
    environment: Environment,
    content: dict,
    base_number: int,
    message: str = "",
    via_promotion: bool = False,
) -> SaveResult:
    """Save the next rules version of `flag` in `environment`.

    Unprotected environments take edits directly; protected ones only through an applied
    promotion (`via_promotion=True`). Identical content creates nothing; a save based on an
    outdated version raises VersionConflict.
    """
    if environment.application_id != flag.application_id:
        raise ValidationError("The flag and the environment belong to different applications.")
    if environment.protected and not via_promotion:
        raise PromotionRequired(environment)
    with transaction.atomic():
        head = rules_head(flag, environment)
        if environment.protected:
            # A promoted version brings the definition it was reviewed with; one without a
            # copy (older versions) keeps the definition served there now.
            latest = head.latest_version
            definition = content.get("definition") or definition_in(
                latest.content if latest else None, flag
            )
        else:
            definition = served_definition(flag)
        keys = [v["key"] for v in definition["variants"]]
        cleaned = _with_definition(validation.clean_rules(content, keys), definition)
        result = save_version(head, cleaned, author=actor, message=message, base_number=base_number)
        if result.created:
            version = result.version
            audit.record(
                actor=actor,
                action="flag.rules.create",
                obj=flag,
                object_label=f"{flag.key}@{version.number} in {environment.key}",
                application=flag.application_id,
                environment=environment,
                before=version.parent.content if version.parent_id else None,
                after=version.content,
                reason=message,
            )
            _changed([environment.pk])
    return result


def _clean_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "say why (it goes into the audit log)"})
    if len(reason) > MAX_REASON:
        raise ValidationError({"reason": f"at most {MAX_REASON} characters"})
    return reason


def _set_killed(
    *, actor: Any, flag: Flag, environment: Environment, reason: str, killed: bool
) -> tuple[FlagRules, bool]:
    if environment.application_id != flag.application_id:
        raise ValidationError("The flag and the environment belong to different applications.")
    reason = _clean_reason(reason)
    with transaction.atomic():
        head = rules_head(flag, environment)
        head = FlagRules.objects.select_for_update().get(pk=head.pk)
        if head.killed == killed:
            return head, False
        before = _kill_state(head)
        who = audit.Actor.of(actor)
        head.killed = killed
        head.killed_at = timezone.now()
        head.killed_by = acting_user(actor)
        head.killed_by_label = who.label
        head.kill_reason = reason
        head.save(
            update_fields=["killed", "killed_at", "killed_by", "killed_by_label", "kill_reason"]
        )
        audit.record(
            actor=actor,
            action="flag.kill" if killed else "flag.restore",
            obj=flag,
            object_label=f"{flag.key} in {environment.key}",
            application=flag.application_id,
            environment=environment,
            before=before,
            after=_kill_state(head),
            reason=reason,
        )
        _notify_kill(flag, environment, killed, reason, who.label)
        _changed([environment.pk])
    return head, True


def _notify_kill(flag: Flag, environment: Environment, killed: bool, reason: str, who: str) -> None:
    from django.urls import reverse

    from console.notifications.services import notify

    verb = "killed" if killed else "restored"
    notify(
        application=flag.application,
        kind=f"flag.{'kill' if killed else 'restore'}",
        title=f"{flag.key} {verb} in {environment.name} by {who}",
        body=reason,
        url=reverse("flags:detail", kwargs={"app": flag.application.key, "key": flag.key}),
        roles=("admin", "engineer"),
        data={"flag": flag.key, "environment": environment.key, "killed": killed},
    )


def _kill_state(head: FlagRules) -> dict:
    return {"killed": head.killed}


def kill_flag(
    *, actor: Any, flag: Flag, environment: Environment, reason: str
) -> tuple[FlagRules, bool]:
    """Serve the off variant in `environment` at once — protected environments included,
    bypassing approvals. A reason is required. Returns (rule set, whether anything changed)."""
    return _set_killed(actor=actor, flag=flag, environment=environment, reason=reason, killed=True)


def restore_flag(
    *, actor: Any, flag: Flag, environment: Environment, reason: str
) -> tuple[FlagRules, bool]:
    """Lift the kill switch: the environment serves its rules again, exactly as before."""
    return _set_killed(actor=actor, flag=flag, environment=environment, reason=reason, killed=False)
