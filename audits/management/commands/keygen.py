"""`manage.py keygen`: write an Ed25519 key pair for signing decisions (the private key stays
with you; register the public key with POST /api/v1/reviewer-keys/)."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from audits import signing


class Command(BaseCommand):
    help = "Write an Ed25519 private key (PEM, mode 600) and print its public key and key id."

    def add_arguments(self, parser):
        parser.add_argument("path", help="where to write the private key (PEM)")
        parser.add_argument("--force", action="store_true", help="overwrite an existing file")

    def handle(self, *args, path, force, **options):
        target = Path(path)
        if target.exists() and not force:
            raise CommandError(f"{target} exists; use --force to overwrite it")
        key = signing.generate_private_key()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch(mode=0o600, exist_ok=True)
        target.chmod(0o600)
        target.write_bytes(signing.private_key_pem(key))
        raw = signing.raw_public_key(key.public_key())
        self.stdout.write(f"private key: {target}")
        self.stdout.write(f"public key (base64): {signing.b64(raw)}")
        self.stdout.write(f"key id: {signing.key_id(raw)}")
