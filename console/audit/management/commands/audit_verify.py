from django.core.management.base import BaseCommand, CommandError

from console.audit.verify import verify_chain


class Command(BaseCommand):
    help = "Recompute the audit hash chain; exit non-zero naming the first broken seq."

    def handle(self, *args, **options):
        result = verify_chain()
        if not result.ok:
            raise CommandError(
                f"audit chain broken at seq {result.broken_seq}: {result.problem} "
                f"({result.count} events verified before it)"
            )
        self.stdout.write(f"audit chain intact: {result.count} events")
