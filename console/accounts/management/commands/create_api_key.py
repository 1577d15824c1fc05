"""Issue a runtime API key from a terminal: `manage.py create_api_key APP ENV NAME`.

The key is printed alone on the last line (so `... | tail -1` captures it); it is stored only
as a hash and cannot be shown again.
"""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from console.accounts import keys
from console.accounts.models import ApiKeyScope
from console.audit.models import ActorType
from console.audit.services import Actor
from console.registry.models import Environment


class Command(BaseCommand):
    help = "Create an API key for one environment of an application and print it once."

    def add_arguments(self, parser):
        parser.add_argument("application", help="application key, e.g. support-bot")
        parser.add_argument("environment", help="environment key, e.g. prod")
        parser.add_argument("name", help="what uses the key, e.g. support-web-prod")
        parser.add_argument(
            "--scope",
            action="append",
            choices=ApiKeyScope.values,
            help="repeat for several (default: config:read)",
        )
        parser.add_argument("--rate-limit", type=int, default=None, help="requests per minute")

    def handle(self, *args, application, environment, name, scope, rate_limit, **options):
        env = (
            Environment.objects.filter(application__key=application, key=environment)
            .select_related("application")
            .first()
        )
        if env is None:
            raise CommandError(f"no environment {environment!r} in application {application!r}")
        actor = Actor(ActorType.SYSTEM, None, "manage.py create_api_key")
        try:
            issued = keys.create_api_key(
                actor=actor,
                environment=env,
                name=name,
                scopes=scope,
                rate_limit_per_minute=rate_limit,
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stderr.write(
            f"Created {issued.api_key.name} for {application}/{environment} "
            f"(scopes: {', '.join(issued.api_key.scopes)}). Shown once — store it now:"
        )
        self.stdout.write(issued.secret)
