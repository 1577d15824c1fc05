from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from console.accounts.roles import Role
from console.accounts.services import grant_role
from console.audit.services import SYSTEM
from console.registry.models import Application


class Command(BaseCommand):
    help = "Give USER exactly ROLE in application APP (replacing any previous role)."

    def add_arguments(self, parser):
        parser.add_argument("user")
        parser.add_argument("app")
        parser.add_argument("role", help=f"one of: {', '.join(Role.values)}")

    def handle(self, *args, user, app, role, **options):
        account = get_user_model().objects.filter(username=user).first()
        if account is None:
            raise CommandError(f"user {user!r} does not exist")
        application = Application.objects.filter(key=app).first()
        if application is None:
            raise CommandError(f"application {app!r} does not exist")
        try:
            grant_role(actor=SYSTEM, user=account, application=application, role=role)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(f"{user} is {role} in {app}")
