"""Rotating the ledger's checkpoint key (manage.py rotate_ledger_key), attacked as an insider
with the database, the key directory, or a stolen old key would: every checkpoint the old key
signed keeps verifying, and nothing the old key (or a key slipped in beside it) signs after the
rotation is believed."""

import io
import json
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command
from django.core.management.base import CommandError

from audits import actions, ledger, signing
from audits.canonical import canonical_json
from audits.models import AuditEvent, LedgerCheckpoint
from audits.roles import Role
from tests.security.tampering import verify

pytestmark = pytest.mark.django_db(transaction=True)


def _events(personas, count: int = 2) -> None:
    """A few more ledger events (role changes)."""
    for _ in range(count):
        actions.grant_role(actor=personas.admin, user=personas.outsider, role=Role.AUDITOR)
        actions.remove_role(actor=personas.admin, user=personas.outsider, role=Role.AUDITOR)


def _sign() -> None:
    call_command("verify_ledger", stdout=io.StringIO())  # verifies, then signs a checkpoint


def _rotate() -> str:
    out = io.StringIO()
    call_command("rotate_ledger_key", stdout=out)
    return out.getvalue()


def _key_id(key) -> str:
    return signing.key_id(signing.raw_public_key(key.public_key()))


def _forged_checkpoint(key, size: int) -> dict:
    """A checkpoint of the real tree at `size`, signed by `key` (as its holder can)."""
    body = canonical_json(
        {
            "origin": "assay",
            "tree_size": size,
            "root_hash": ledger.root_hash(size).hex(),
            "timestamp": "2030-01-01T00:00:00.000000+00:00",
        }
    )
    return {"body": body.decode(), "signature": signing.b64(key.sign(body)), "key_id": _key_id(key)}


def _held(tmp_path, name: str, *points: dict):
    path = tmp_path / name
    path.write_text("".join(json.dumps(p) + "\n" for p in points))
    return path


def _retired() -> list[dict]:
    return json.loads(ledger.retired_keys_path().read_text())["retired"]


def _write_retired(entries: list[dict]) -> None:
    ledger.write_retired_keys(entries)


def test_rotation_keeps_every_old_checkpoint_verifying(personas, ledger_key_files, tmp_path):
    _sign()
    old = ledger.server_key()
    held = _held(
        tmp_path, "auditor.jsonl", *ledger.read_checkpoints(ledger_key_files.ASSAY_CHECKPOINT_LOG)
    )
    _events(personas)
    _sign()
    assert verify("--checkpoint", str(held)) == "ok"

    out = _rotate()
    new = ledger.server_key()
    assert _key_id(new) != _key_id(old)
    assert "was not kept" in out
    assert _key_id(new) in out

    # The handover is in the ledger, signed by both keys, and in the retired-keys file.
    event = AuditEvent.objects.get(verb="ledger.key_rotated")
    statement = event.data["statement"]
    assert (statement["old_key_id"], statement["new_key_id"]) == (_key_id(old), _key_id(new))
    assert statement["tree_size"] == event.seq - 1
    assert _retired() == [
        {"key_id": _key_id(old), "public_key": statement["old_public_key"], **event.data}
    ]
    assert stat.S_IMODE(ledger_key_files.ASSAY_LEDGER_KEY_FILE.stat().st_mode) == 0o600
    # A last checkpoint by the old key at the handover, a first by the new key over the event.
    by_size = {p.tree_size: p.key_id for p in LedgerCheckpoint.objects.all()}
    assert by_size[event.seq - 1] == _key_id(old)
    assert by_size[event.seq] == _key_id(new)
    log = ledger.read_checkpoints(ledger_key_files.ASSAY_CHECKPOINT_LOG)
    assert {p["key_id"] for p in log} == {_key_id(old), _key_id(new)}

    # Old checkpoints (stored, the deployment's log, an auditor's saved file) still verify.
    assert verify("--checkpoint", str(held)) == "ok"
    _events(personas)
    _sign()
    assert verify("--checkpoint", str(held)) == "ok"
    assert LedgerCheckpoint.objects.latest("tree_size").key_id == _key_id(new)


def test_rotating_twice_chains_three_keys(personas, ledger_key_files, tmp_path):
    _sign()
    first = ledger.server_key()
    _rotate()
    second = ledger.server_key()
    _events(personas)
    _sign()
    _rotate()
    third = ledger.server_key()
    _events(personas)
    _sign()
    assert verify() == "ok"
    assert [e["key_id"] for e in _retired()] == [_key_id(first), _key_id(second)]
    sizes = [e["statement"]["tree_size"] for e in _retired()]
    assert sizes[0] < sizes[1]
    assert {p.key_id for p in LedgerCheckpoint.objects.all()} == {
        _key_id(first),
        _key_id(second),
        _key_id(third),
    }
    # The first key held trees up to the first rotation only, even below the second one.
    held = _held(tmp_path, "forged.jsonl", _forged_checkpoint(first, sizes[0] + 1))
    assert f"but that key was retired at {sizes[0]}" in verify("--checkpoint", str(held))
    # ... and the second key took over after the first rotation, not before.
    held = _held(tmp_path, "early.jsonl", _forged_checkpoint(second, sizes[0]))
    assert f"only took over after {sizes[0]}" in verify("--checkpoint", str(held))


def test_a_stolen_old_key_cannot_sign_past_the_rotation(personas, ledger_key_files, tmp_path):
    _sign()
    stolen = ledger.server_key()  # the thief copies the key file before the rotation
    _rotate()
    size = AuditEvent.objects.get(verb="ledger.key_rotated").seq - 1
    _events(personas)
    now = ledger.tree_size()
    # The real roots, so only the key's retirement can refuse them.
    for forged_size in (size + 1, now):
        held = _held(
            tmp_path, f"forged-{forged_size}.jsonl", _forged_checkpoint(stolen, forged_size)
        )
        message = verify("--checkpoint", str(held))
        assert f"signed by retired key {_key_id(stolen)} for a tree of {forged_size}" in message
        assert f"retired at {size}" in message
    # Within its span the stolen key still cannot vouch for a rewritten tree.
    body = json.loads(_forged_checkpoint(stolen, size)["body"])
    body["root_hash"] = "00" * 32
    raw = canonical_json(body)
    point = {
        "body": raw.decode(),
        "signature": signing.b64(stolen.sign(raw)),
        "key_id": _key_id(stolen),
    }
    held = _held(tmp_path, "rewritten.jsonl", point)
    assert "no longer has the root signed" in verify("--checkpoint", str(held))
    # A stolen old key put back as the server's key signs nothing new.
    ledger.write_private_key(ledger_key_files.ASSAY_LEDGER_KEY_FILE, stolen)
    with pytest.raises(ledger.LedgerIntegrityError, match="which was retired"):
        ledger.checkpoint()
    assert "the chain of rotations is broken" in verify()


def test_a_key_slipped_into_the_retired_keys_file_is_refused(personas, ledger_key_files, tmp_path):
    """An insider with the key directory (even with the current private key) adds a key of
    their own as 'retired', to pass off checkpoints it signs: no rotation event says so."""
    _sign()
    current = ledger.server_key()
    theirs = Ed25519PrivateKey.generate()
    statement = {
        "origin": "assay",
        "old_key_id": _key_id(theirs),
        "old_public_key": signing.b64(signing.raw_public_key(theirs.public_key())),
        "new_key_id": _key_id(current),
        "new_public_key": signing.b64(signing.raw_public_key(current.public_key())),
        "tree_size": 1,
        "root_hash": ledger.root_hash(1).hex(),
    }
    message = ledger.rotation_message(statement)
    _write_retired(
        [
            {
                "key_id": statement["old_key_id"],
                "public_key": statement["old_public_key"],
                "statement": statement,
                "signatures": {
                    "old": signing.b64(theirs.sign(message)),
                    "new": signing.b64(current.sign(message)),
                },
            }
        ]
    )
    held = _held(tmp_path, "theirs.jsonl", _forged_checkpoint(theirs, 1))
    message_text = verify("--checkpoint", str(held))
    assert f"retires key {_key_id(theirs)}, but no ledger.key_rotated event" in message_text
    # Without the current key's signature the slipped key is not even in the chain.
    entries = _retired()
    entries[0]["signatures"]["new"] = signing.b64(theirs.sign(message))
    _write_retired(entries)
    message_text = verify("--checkpoint", str(held))
    assert "the new key's signature on the rotation statement does not verify" in message_text
    assert f"it names key {_key_id(theirs)}, which is neither" in message_text


@pytest.mark.parametrize("role", ["old", "new"])
def test_a_rotation_statement_with_one_signature_changed_is_refused(
    personas, ledger_key_files, role
):
    _sign()
    old = ledger.server_key()
    _rotate()
    entries = _retired()
    signature = bytearray(signing.b64decode(entries[0]["signatures"][role], "sig"))
    signature[7] ^= 1
    entries[0]["signatures"][role] = signing.b64(bytes(signature))
    _write_retired(entries)
    message = verify()
    assert f"the {role} key's signature on the rotation statement does not verify" in message
    assert f"names key {_key_id(old)}, which is neither" in message  # its checkpoints fall
    assert "is not the rotation ledger event" in message


def test_a_widened_rotation_statement_is_refused(personas, ledger_key_files, tmp_path):
    """Raising the tree size the old key held (to pass off its later signatures) breaks both
    signatures, in the file and in the ledger alike."""
    _sign()
    old = ledger.server_key()
    _rotate()
    _events(personas)
    entries = _retired()
    entries[0]["statement"]["tree_size"] = ledger.tree_size()
    _write_retired(entries)
    held = _held(tmp_path, "late.jsonl", _forged_checkpoint(old, ledger.tree_size()))
    message = verify("--checkpoint", str(held))
    assert "the old key's signature on the rotation statement does not verify" in message
    assert "is not the rotation ledger event" in message


def test_the_retired_keys_file_must_hold_what_the_ledger_recorded(personas, ledger_key_files):
    _sign()
    _rotate()
    seq = AuditEvent.objects.get(verb="ledger.key_rotated").seq
    ledger.retired_keys_path().unlink()
    message = verify()
    assert f"ledger event #{seq} (ledger.key_rotated) retired key" in message
    assert "the retired-keys file does not list it" in message


def test_a_lost_key_file_after_a_rotation_is_not_replaced_silently(personas, ledger_key_files):
    _sign()
    _rotate()
    ledger_key_files.ASSAY_LEDGER_KEY_FILE.unlink()
    with pytest.raises(ledger.LedgerIntegrityError, match="restore the key file"):
        ledger.server_key()


def test_a_failed_rotation_leaves_the_key_and_the_ledger_as_they_were(
    personas, ledger_key_files, monkeypatch
):
    _sign()
    before = ledger_key_files.ASSAY_LEDGER_KEY_FILE.read_bytes()
    size = ledger.tree_size()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ledger, "write_private_key", fail)
    with pytest.raises(OSError, match="disk full"):
        _rotate()
    assert ledger_key_files.ASSAY_LEDGER_KEY_FILE.read_bytes() == before
    assert not ledger.retired_keys_path().exists()
    assert ledger.tree_size() == size
    assert verify() == "ok"


def test_an_empty_ledger_has_nothing_to_hand_over(ledger_key_files):
    with pytest.raises(CommandError, match="the ledger is empty"):
        _rotate()
