"""`manage.py rotate_ledger_key`: replace the server's checkpoint key, keeping every checkpoint
the old key signed verifiable (audits.actions.ledger_keys)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from audits import actions, ledger
from audits.errors import ActionError


class Command(BaseCommand):
    help = (
        "Rotate the ledger's checkpoint key: the old key signs a last checkpoint, both keys sign "
        "the handover (a ledger.key_rotated event and the retired-keys file), the new key "
        "replaces the old one in ASSAY_LEDGER_KEY_FILE and signs a checkpoint."
    )

    def handle(self, *args, **options):
        try:
            rotation = actions.rotate_ledger_key(actor=None)
        except (ActionError, ledger.LedgerIntegrityError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"checkpoint key rotated at tree size {rotation.tree_size} "
            f"(ledger event #{rotation.event_seq}, ledger.key_rotated)\n"
            f"  retired key: {rotation.old_key_id} (signs trees of at most "
            f"{rotation.tree_size} events)\n"
            f"  new key:     {rotation.new_key_id}\n"
            f"  installed in {settings.ASSAY_LEDGER_KEY_FILE}\n"
            f"  retired-keys file: {ledger.retired_keys_path()}\n"
            "The old private key was not kept: it has been overwritten in the key file and "
            "exists nowhere else unless you archived it before running this (offline, if at "
            "all). Back up the new key file and the retired-keys file together; auditors who "
            f"pin the server key should now pin {rotation.new_key_id}."
        )
