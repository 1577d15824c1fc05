from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from console.audit import anchors
from console.audit.verify import verify_chain


class Command(BaseCommand):
    help = (
        "Recompute the audit hash chain (with the AIRLOCK_AUDIT_KEYS keys) and check it against "
        "every anchor in the anchor file; exit non-zero naming the first broken seq."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--anchor-file",
            type=Path,
            help="anchors to check, e.g. a copy kept elsewhere (default: the configured file)",
        )

    def handle(self, *args, anchor_file: Path | None = None, **options):
        anchor_file = anchor_file or anchors.configured_file()
        try:
            found = anchors.read_anchors(anchor_file) if anchor_file else []
        except anchors.AnchorFileError as exc:
            raise CommandError(f"anchor file {anchor_file}: {exc}") from None
        result = verify_chain(anchors=found)
        if not result.ok:
            raise CommandError(
                f"audit chain broken at seq {result.broken_seq}: {result.problem} "
                f"({result.count} events verified before it)"
            )
        line = f"audit chain intact: {result.count} events"
        if anchor_file:
            line += f", {result.anchors} anchors agree"
        self.stdout.write(line)
