"""GET /api/v1/ledger/public-key/ after key rotations, used as a verifier would: the current
key as before, and each retired key with the trees it signed and the rotation statement that
vouches for it. No private key material is ever served."""

import base64
import io

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.core.management import call_command

from audits import ledger, signing
from audits.models import AuditEvent, LedgerCheckpoint

pytestmark = pytest.mark.django_db(transaction=True)


def _sign() -> LedgerCheckpoint:
    call_command("verify_ledger", stdout=io.StringIO())  # verifies, then signs a checkpoint
    return LedgerCheckpoint.objects.latest("tree_size")


def _rotate(personas) -> None:
    from audits import actions
    from audits.roles import Role

    call_command("rotate_ledger_key", stdout=io.StringIO())
    # The ledger grows after each rotation, so the next one has a tree to hand over.
    actions.grant_role(actor=personas.admin, user=personas.outsider, role=Role.AUDITOR)
    actions.remove_role(actor=personas.admin, user=personas.outsider, role=Role.AUDITOR)


def _published(personas) -> dict:
    response = personas.client("auditor").get("/api/v1/ledger/public-key/")
    assert response.status_code == 200, response.content
    return response.json()


def _verifies(public_key: str, point: LedgerCheckpoint) -> bool:
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key))
    try:
        key.verify(base64.b64decode(point.signature), point.body.encode())
    except InvalidSignature:
        return False
    return True


def _private_material(key) -> list[str]:
    """Every form the key file's secret could take in a response."""
    raw = key.private_bytes_raw()
    pem = signing.private_key_pem(key).decode()
    inner = "".join(pem.splitlines()[1:-1])
    return [signing.b64(raw), raw.hex(), inner, "PRIVATE KEY"]


def test_each_listed_retired_key_verifies_the_checkpoints_it_signed_and_the_current_does_not(
    personas, ledger_key_files
):
    private = []
    points = []
    for _ in range(2):
        points.append(_sign())
        private.append(ledger.server_key())
        _rotate(personas)
    private.append(ledger.server_key())
    points.append(_sign())

    published = _published(personas)

    # The current key's fields are what they always were.
    assert {k: published[k] for k in ("algorithm", "public_key", "key_id")} == (
        ledger.server_public_key()
    )
    first, second = published["retired"]
    rotations = list(AuditEvent.objects.filter(verb="ledger.key_rotated").order_by("seq"))
    for retired, point, event in zip((first, second), points[:2], rotations, strict=True):
        assert retired["key_id"] == point.key_id
        assert _verifies(retired["public_key"], point)
        assert not _verifies(published["public_key"], point)
        assert retired["valid_for"]["max_tree_size"] == point.tree_size
        assert retired["rotation_event"] == event.seq
        assert retired["retired_at"] is not None
        # The statement verifies with both keys it names, as a verifier checks the chain.
        message = ledger.rotation_message(retired["statement"])
        for role in ("old", "new"):
            Ed25519PublicKey.from_public_bytes(
                base64.b64decode(retired["statement"][f"{role}_public_key"])
            ).verify(base64.b64decode(retired["signatures"][role]), message)
    assert first["valid_for"] == {"min_tree_size": 1, "max_tree_size": points[0].tree_size}
    assert second["valid_for"]["min_tree_size"] == points[0].tree_size + 1
    assert first["statement"]["new_key_id"] == second["key_id"]
    assert second["statement"]["new_key_id"] == published["key_id"]
    assert _verifies(published["public_key"], points[2])

    text = _published_text(personas)
    for key in private:
        for secret in _private_material(key):
            assert secret not in text


def _published_text(personas) -> str:
    return personas.client("auditor").get("/api/v1/ledger/public-key/").content.decode()


def test_a_private_key_written_into_the_retired_keys_file_is_not_served(personas, ledger_key_files):
    """An operator 'archives' the old private key in the retired-keys file: the endpoint serves
    only the named public fields of each entry."""
    _sign()
    old = ledger.server_key()
    _rotate(personas)
    entries = ledger.read_retired_keys()
    entries[0]["private_key"] = signing.private_key_pem(old).decode()
    entries[0]["statement"] = {**entries[0]["statement"], "old_private_key": signing.b64(b"x")}
    ledger.write_retired_keys(entries)

    text = _published_text(personas)

    for secret in _private_material(old):
        assert secret not in text
    assert "private" not in text


def test_a_retired_key_the_chain_does_not_vouch_for_is_valid_for_nothing(
    personas, ledger_key_files
):
    _sign()
    _rotate(personas)
    entries = ledger.read_retired_keys()
    signature = bytearray(signing.b64decode(entries[0]["signatures"]["old"], "sig"))
    signature[7] ^= 1
    entries[0]["signatures"]["old"] = signing.b64(bytes(signature))
    ledger.write_retired_keys(entries)

    (retired,) = _published(personas)["retired"]

    assert retired["valid_for"] is None
    assert retired["rotation_event"] is None  # the ledger recorded another statement
