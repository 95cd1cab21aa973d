"""`manage.py verify_ledger`: recompute the ledger and name the first thing that does not match."""

from django.core.management.base import BaseCommand, CommandError

from audits import ledger, verification


class Command(BaseCommand):
    help = "Recompute the hash chain, checkpoints, decisions and evidence; exit 1 on a mismatch."

    def handle(self, *args, **options):
        problems = verification.verify_everything()
        if problems:
            for problem in problems:
                self.stderr.write(f"MISMATCH: {problem}")
            raise CommandError(
                f"the ledger does not verify ({len(problems)} problem(s)); the first: {problems[0]}"
            )
        point = ledger.checkpoint()
        self.stdout.write(
            f"ledger verifies: {point.tree_size} events, root {point.root_hash}, "
            "chain, checkpoints, decisions and evidence all match"
        )
