"""Flip a kill switch from a terminal (incident runbooks), with the same service and audit
event as the console's button:

    manage.py kill_switch support-bot answers-enabled --env prod --reason "bad answers, #412"
    manage.py kill_switch support-bot answers-enabled --env prod --reason "fixed" --restore
"""

import getpass

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from console.audit.models import ActorType
from console.audit.services import Actor
from console.flags import services
from console.flags.models import Flag


class Command(BaseCommand):
    help = "Kill (or --restore) a flag in one environment, at once, with a reason. Audited."

    def add_arguments(self, parser):
        parser.add_argument("application", help="application key, e.g. support-bot")
        parser.add_argument("flag", help="flag key, e.g. answers-enabled")
        parser.add_argument("--env", required=True, help="environment key, e.g. prod")
        parser.add_argument("--reason", required=True, help="why (goes into the audit log)")
        parser.add_argument("--restore", action="store_true", help="lift the kill switch")
        parser.add_argument(
            "--user", help="console username to record as the actor (default: this terminal)"
        )

    def handle(self, *args, application, flag, env, reason, restore, user, **options):
        record = (
            Flag.objects.filter(application__key=application, key=flag)
            .select_related("application")
            .first()
        )
        if record is None:
            raise CommandError(f"no flag {flag!r} in application {application!r}")
        environment = record.application.environments.filter(key=env).first()
        if environment is None:
            raise CommandError(f"no environment {env!r} in application {application!r}")
        if user:
            actor = get_user_model().objects.filter(username=user, is_active=True).first()
            if actor is None:
                raise CommandError(f"no active user {user!r}")
        else:
            actor = Actor(ActorType.SYSTEM, None, f"kill_switch command ({getpass.getuser()})")
        service = services.restore_flag if restore else services.kill_flag
        try:
            head, changed = service(
                actor=actor, flag=record, environment=environment, reason=reason
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        if not changed:
            state = "live" if restore else "killed"
            self.stdout.write(f"{flag} was already {state} in {env}; nothing changed.")
            return
        if restore:
            self.stdout.write(self.style.SUCCESS(f"Restored {flag} in {env}: its rules apply."))
        else:
            self.stdout.write(
                self.style.WARNING(
                    f"Killed {flag} in {env}: it serves "
                    f"{services.served_off_variant(head)!r} from now on."
                )
            )
