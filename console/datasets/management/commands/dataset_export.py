"""Write a golden set (draft or a published version) to stdout or a file, streaming."""

from django.core.management.base import BaseCommand, CommandError

from console.datasets import selectors
from console.datasets.io import FORMATS, export_lines
from console.datasets.models import Dataset, DatasetVersion


class Command(BaseCommand):
    help = "Export golden set DATASET of application APP as CSV or JSONL."

    def create_parser(self, prog_name, subcommand, **kwargs):
        # Here --version N selects a dataset version, replacing Django's --version flag.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("app")
        parser.add_argument("dataset")
        parser.add_argument("--version", type=int, help="a published version (default: the draft)")
        parser.add_argument("--format", choices=FORMATS, default="csv")
        parser.add_argument("-o", "--output", help="write to this file instead of stdout")

    def handle(self, *args, app, dataset, **options):
        target = Dataset.objects.filter(application__key=app, key=dataset).first()
        if target is None:
            raise CommandError(f"no golden set {dataset!r} in application {app!r}")
        if options["version"] is not None:
            version = DatasetVersion.objects.filter(head=target, number=options["version"]).first()
            if version is None:
                raise CommandError(f"{app}/{dataset} has no version {options['version']}")
            items = selectors.version_items(version)
        else:
            items = selectors.draft_export_items(target)
        if options["output"]:
            with open(options["output"], "w", encoding="utf-8", newline="") as out:
                out.writelines(export_lines(items, options["format"]))
        else:
            for chunk in export_lines(items, options["format"]):
                self.stdout.write(chunk, ending="")
