"""Webhook secrets at rest: encrypted (Fernet: AES-128-CBC + HMAC-SHA256) under a key that is
not in the database, so a database dump alone does not let anyone forge deliveries.

The keys are ASSAY_WEBHOOK_KEYS (comma-separated Fernet keys, the first encrypts, all decrypt:
add a new key first, rotate every webhook's secret or re-encrypt, then drop the old key). Without
it, one key is derived from ASSAY_SECRET_KEY (HKDF-SHA256), so changing the secret key then
needs every webhook secret rotated.
"""

import base64
import secrets

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

PREFIX = "whsec_"


class SecretUnavailableError(Exception):
    """A stored secret cannot be decrypted with the configured keys."""


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def _derived_key() -> bytes:
    raw = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"assay webhook secrets v1"
    ).derive(str(settings.SECRET_KEY).encode("utf-8"))
    return base64.urlsafe_b64encode(raw)


def _cipher() -> MultiFernet:
    keys: list[str | bytes] = [*settings.ASSAY_WEBHOOK_KEYS] or [_derived_key()]
    return MultiFernet([Fernet(key) for key in keys])


def encrypt(secret: str) -> str:
    return _cipher().encrypt(secret.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _cipher().decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise SecretUnavailableError(
            "the webhook's secret cannot be decrypted with the configured keys "
            "(ASSAY_WEBHOOK_KEYS or ASSAY_SECRET_KEY changed); rotate the webhook's secret: "
            "POST /api/v1/webhooks/<id>/rotate-secret/"
        ) from None


def valid_key(key: str) -> bool:
    try:
        Fernet(key)
    except (ValueError, TypeError):
        return False
    return True
