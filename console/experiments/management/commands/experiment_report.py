"""`manage.py experiment_report APP FLAG --env ENV`: the experiment report as one JSON line."""

import json

from django.core.management.base import BaseCommand, CommandError

from console.experiments import report
from console.flags.models import Flag
from console.registry.models import Environment


class Command(BaseCommand):
    help = "Print the report of an experiment (a flag splitting traffic) as one JSON line."

    def add_arguments(self, parser):
        parser.add_argument("app", help="application key")
        parser.add_argument("flag", help="flag key")
        parser.add_argument("--env", required=True, help="environment key, e.g. prod")

    def handle(self, *args, app, flag, env, **options):
        found = Flag.objects.filter(application__key=app, key=flag).select_related("application")
        found = found.first()
        if found is None:
            raise CommandError(f"no flag {flag!r} in application {app!r}")
        environment = Environment.objects.filter(application__key=app, key=env).first()
        if environment is None:
            raise CommandError(f"no environment {env!r} in application {app!r}")
        try:
            result = report.build(found, environment)
        except report.NotAnExperiment as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(json.dumps(result, separators=(",", ":")))
