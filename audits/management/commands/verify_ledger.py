"""`manage.py verify_ledger`: recompute the ledger and name everything that does not match."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from audits import ledger, verification


class Command(BaseCommand):
    help = (
        "Recompute the hash chain, Merkle tree, checkpoints, and every record the gate reads "
        "against the ledger; exit 1 on a mismatch."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--checkpoint",
            action="append",
            default=[],
            type=Path,
            metavar="FILE",
            help="a signed checkpoint held elsewhere (JSON, or JSON lines); repeatable",
        )
        parser.add_argument(
            "--no-sign",
            action="store_true",
            help="do not sign a new checkpoint after a successful verification",
        )

    def handle(self, *args, **options):
        for path in options["checkpoint"]:
            self._readable(path)
        problems = verification.verify_everything(options["checkpoint"])
        if problems:
            for problem in problems:
                self.stderr.write(f"MISMATCH: {problem}")
            raise CommandError(
                f"the ledger does not verify ({len(problems)} problem(s)); the first: {problems[0]}"
            )
        size = ledger.tree_size()
        if not options["no_sign"]:
            point = ledger.checkpoint()
            size = point.tree_size
        self.stdout.write(
            f"ledger verifies: {size} events; chain, Merkle tree, checkpoints, check runs, "
            "evidence, policies, releases, keys, decisions and roles all match"
        )

    @staticmethod
    def _readable(path: Path) -> None:
        try:
            ledger.read_checkpoints(path)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read checkpoints from {path}: {exc}") from None
