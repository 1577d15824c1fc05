"""Import a CSV/JSONL file into a golden set's draft from scripts and CI pipelines."""

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from console.audit.services import SYSTEM
from console.datasets import services
from console.datasets.io import FORMATS
from console.datasets.models import Dataset


class Command(BaseCommand):
    help = (
        "Import FILE into the draft of golden set DATASET of application APP (all or nothing; "
        "every problem is listed by line and field and the exit status is 1)."
    )

    def add_arguments(self, parser):
        parser.add_argument("app")
        parser.add_argument("dataset")
        parser.add_argument("file")
        parser.add_argument("--format", choices=FORMATS, help="default: from the file extension")
        parser.add_argument("--mode", choices=["merge", "replace"], default="merge")
        parser.add_argument("--publish", action="store_true", help="publish a version afterwards")
        parser.add_argument("-m", "--message", default="", help="the version message (--publish)")
        parser.add_argument("--as-user", help="record the change as this user (default: system)")

    def handle(self, *args, app, dataset, file, **options):
        target = (
            Dataset.objects.filter(application__key=app, key=dataset)
            .select_related("application")
            .first()
        )
        if target is None:
            raise CommandError(f"no golden set {dataset!r} in application {app!r}")
        if options["publish"] and not options["message"].strip():
            raise CommandError("--publish needs -m MESSAGE saying what changed")
        actor = SYSTEM
        if options["as_user"]:
            actor = get_user_model().objects.filter(username=options["as_user"]).first()
            if actor is None:
                raise CommandError(f"user {options['as_user']!r} does not exist")
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"{file}: no such file")
        try:
            summary = services.import_file(
                actor=actor, dataset=target, data=path.read_bytes(), filename=path.name,
                fmt=options["format"], mode=options["mode"],
            )  # fmt: skip
        except services.ImportRejected as exc:
            for problem in exc.problems:
                self.stderr.write(f"{path.name}: {problem}")
            if exc.truncated:
                self.stderr.write("(more problems not shown)")
            raise CommandError(f"nothing imported: {len(exc.problems)} problem(s)") from None
        self.stdout.write(
            f"imported {path.name}: {summary['added']} added, {summary['changed']} changed, "
            f"{summary['unchanged']} unchanged, {summary['removed']} removed"
        )
        if options["publish"]:
            try:
                version = services.publish(actor=actor, dataset=target, message=options["message"])
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from None
            if version is None:
                self.stdout.write("nothing to publish: the draft equals the latest version")
            else:
                self.stdout.write(f"published {app}/{dataset} v{version.number}")
