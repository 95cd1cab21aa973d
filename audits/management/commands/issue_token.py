"""`manage.py issue_token USER [--hours N]`: an API token for an account that cannot log in
interactively (a release pipeline). Printed once; only its digest is stored; a ledger event."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from knox.models import get_token_model


class Command(BaseCommand):
    help = "Issue an expiring API token for USER (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--hours", type=int, default=24 * 90, help="expires after (default 90 days)"
        )

    def handle(self, *args, username, hours, **options):
        user = get_user_model()._default_manager.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"no active user {username!r}")
        if hours < 1:
            raise CommandError("--hours must be at least 1")
        instance, token = get_token_model().objects.create(user=user, expiry=timedelta(hours=hours))
        self.stdout.write(f"token for {username} (expires {instance.expiry:%Y-%m-%d %H:%M} UTC):")
        self.stdout.write(token)
