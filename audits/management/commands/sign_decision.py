"""`manage.py sign_decision`: fetch a release's statement, show it, sign it with a local key
file, and submit the signed envelope. The private key never leaves this machine."""

import os

from django.core.management.base import BaseCommand, CommandError

from audits import signing, signing_client


class Command(BaseCommand):
    help = "Sign an approve / reject / waive decision on a release with a local Ed25519 key."

    def add_arguments(self, parser):
        parser.add_argument("--server", default="http://127.0.0.1:8000")
        parser.add_argument(
            "--token", default=os.environ.get("ASSAY_TOKEN"), help="API token (or ASSAY_TOKEN)"
        )
        parser.add_argument("--release", required=True)
        parser.add_argument("--decision", required=True, choices=["approve", "reject", "waive"])
        parser.add_argument("--check", help="the blocking check to waive")
        parser.add_argument("--rationale", required=True)
        parser.add_argument("--condition", action="append", default=[])
        parser.add_argument("--name", help="your printed name (default: your account's name)")
        parser.add_argument("--key", required=True, help="private key file from `keygen`")
        parser.add_argument(
            "--register-key",
            action="store_true",
            help="register the public key first if the server does not know it",
        )
        parser.add_argument("--yes", action="store_true", help="sign without asking")

    def handle(self, *args, **options):
        if not options["token"]:
            raise CommandError("an API token is required (--token or ASSAY_TOKEN)")
        server = signing_client.Server(options["server"], options["token"])
        try:
            self._sign(server, options)
        except (signing_client.ClientError, signing.SignatureError) as exc:
            raise CommandError(str(exc)) from None

    def _sign(self, server, options):
        key = signing_client.load_key(options["key"])
        key_id = signing.key_id(signing.raw_public_key(key.public_key()))
        if options["register_key"]:
            signing_client.ensure_key_registered(server, key, label="sign_decision")
        statement = signing_client.complete(
            signing_client.fetch_statement(
                server, options["release"], options["decision"], options["check"]
            ),
            key_id=key_id,
            rationale=options["rationale"],
            conditions=options["condition"],
            name=options["name"],
        )
        self.stdout.write("You are about to sign:")
        for line in signing_client.summary_lines(statement):
            self.stdout.write(f"  {line}")
        if not options["yes"] and input("Sign this statement? [y/N] ").strip().lower() != "y":
            raise CommandError("not signed")
        decision = signing_client.sign_and_submit(server, options["release"], statement, key)
        self.stdout.write(f"recorded decision {decision['id']} ({decision['decision']})")
