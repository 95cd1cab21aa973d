"""`manage.py export_dossier <release-id> --out DIR`: DIR/dossier.pdf and DIR/bundle.zip."""

import uuid
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from audits.dossier import actions
from audits.models import Release


class Command(BaseCommand):
    help = (
        "Export a release's audit dossier: DIR/dossier.pdf (PDF/A-3b) and DIR/bundle.zip (the "
        "records, evidence, signatures and ledger proofs, with verify.py). The export is a "
        "ledger event recording both digests."
    )

    def add_arguments(self, parser):
        parser.add_argument("release", help="the release id")
        parser.add_argument("--out", type=Path, required=True, metavar="DIR")
        parser.add_argument(
            "--as",
            dest="username",
            help="the person the ledger records as exporting (default: system)",
        )

    def handle(self, *args, **options):
        release = self._release(options["release"])
        actor = self._actor(options["username"])
        out = options["out"]
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CommandError(f"cannot create {out}: {exc}") from None
        try:
            export = actions.export_dossier(actor=actor, release=release, out_dir=out)
        except Exception as exc:  # the export record says failed, with the same reason
            raise CommandError(f"the export of release {release.pk} failed: {exc}") from exc
        self.stdout.write(
            f"dossier {export.pk} of release {release.pk}\n"
            f"  {out / 'dossier.pdf'}  sha256 {export.pdf_sha256}\n"
            f"  {out / 'bundle.zip'}  sha256 {export.bundle_sha256}\n"
            f"  manifest sha256 {export.manifest_sha256}; ledger event #{export.ledger_seq}\n"
            f"verify offline: unzip -o {out / 'bundle.zip'} verify.py -d {out} && "
            f"python {out / 'verify.py'} {out / 'bundle.zip'}"
        )

    @staticmethod
    def _release(value: str) -> Release:
        try:
            release = Release.objects.filter(pk=uuid.UUID(value)).first()
        except ValueError:
            raise CommandError(f"{value!r} is not a release id (a UUID)") from None
        if release is None:
            raise CommandError(f"no release has the id {value}")
        return release

    @staticmethod
    def _actor(username: str | None):
        if username is None:
            return None
        user = get_user_model()._default_manager.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user is called {username!r}")
        return user
