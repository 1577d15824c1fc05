"""Membership writes: grant, change and revoke roles, each audited."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from guardian.shortcuts import assign_perm, remove_perm

from console.accounts.models import Membership
from console.accounts.roles import ALL_PERMISSIONS, ROLE_PERMISSIONS, Role
from console.audit import services as audit
from console.registry.models import Application


def _set_perms(user: AbstractBaseUser, application: Application, role: str | None) -> None:
    wanted = ROLE_PERMISSIONS[role] if role else frozenset()
    for perm in ALL_PERMISSIONS - wanted:
        remove_perm(f"registry.{perm}", user, application)
    for perm in wanted:
        assign_perm(f"registry.{perm}", user, application)


def _lock(application: Application) -> None:
    """Serialise membership changes per application, so the last-admin rule holds under
    concurrent requests."""
    Application.objects.select_for_update().filter(pk=application.pk).first()


def _keep_an_admin(membership: Membership) -> None:
    others = Membership.objects.filter(application_id=membership.application_id, role=Role.ADMIN)
    if not others.exclude(pk=membership.pk).exists():
        raise ValidationError("An application must keep at least one admin.")


def grant_role(*, actor, user: AbstractBaseUser, application: Application, role: str) -> Membership:
    """Give `user` exactly `role` in `application` (replacing any previous role)."""
    if role not in Role.values:
        raise ValidationError(
            {"role": f"Unknown role {role!r}; choose one of {', '.join(Role.values)}."}
        )
    with transaction.atomic():
        _lock(application)
        membership = Membership.objects.filter(user=user, application=application).first()
        before = {"role": membership.role} if membership else None
        if membership and membership.role == role:
            return membership
        if membership and membership.role == Role.ADMIN:
            _keep_an_admin(membership)
        if membership:
            membership.role = role
            membership.save(update_fields=["role"])
        else:
            membership = Membership.objects.create(user=user, application=application, role=role)
        _set_perms(user, application, role)
        audit.record(
            actor=actor,
            action="membership.grant" if before is None else "membership.change",
            obj=membership,
            object_label=f"{user.get_username()} in {application.key}",
            application=application,
            before=before,
            after={"user": user.get_username(), "role": role},
        )
    return membership


def revoke_membership(*, actor, membership: Membership) -> None:
    with transaction.atomic():
        user, application = membership.user, membership.application
        _lock(application)
        if membership.role == Role.ADMIN:
            _keep_an_admin(membership)
        _set_perms(user, application, None)
        audit.record(
            actor=actor,
            action="membership.revoke",
            obj=membership,
            object_label=f"{user.get_username()} in {application.key}",
            application=application,
            before={"user": user.get_username(), "role": membership.role},
        )
        membership.delete()
