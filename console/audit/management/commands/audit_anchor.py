from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from console.audit import anchors


class Command(BaseCommand):
    help = (
        "Append the audit chain's head (seq, hash, time, key id) as one JSON line to the anchor "
        "file (AIRLOCK_AUDIT_ANCHOR_FILE), outside the database. Beat runs it every minute."
    )

    def add_arguments(self, parser):
        parser.add_argument("--anchor-file", type=Path, help="default: AIRLOCK_AUDIT_ANCHOR_FILE")

    def handle(self, *args, anchor_file: Path | None = None, **options):
        try:
            head, written = anchors.anchor_head(anchor_file)
        except (anchors.AnchorFileError, OSError) as exc:
            raise CommandError(f"audit anchor: {exc}") from None
        if head is None:
            self.stdout.write("audit log is empty: nothing to anchor")
        elif written:
            self.stdout.write(f"anchored seq {head.seq} ({head.hash[:12]}…, key {head.key_id})")
        else:
            self.stdout.write(f"seq {head.seq} is already anchored")
