"""`manage.py usage_rollup_repair APP`: rebuild an application's usage rollups from its raw
events, after a rollup pass skipped it (logged as "usage rollup skipped application N")."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from console.registry.models import Application
from console.usage import services


class Command(BaseCommand):
    help = "Rebuild an application's hourly and daily usage rollups from its raw events."

    def add_arguments(self, parser):
        parser.add_argument("application", help="application key")

    def handle(self, *args, **opts):
        application = Application.objects.filter(key=opts["application"]).first()
        if application is None:
            raise CommandError(f"no application {opts['application']!r}")
        rows = services.repair_rollups(application.pk)
        self.stdout.write(f"{application.key}: {rows} hourly rollup row(s) rebuilt")
