"""Rotating the server's checkpoint key without invalidating the checkpoints it signed.

Under the ledger's head lock, in one transaction: the old key signs a checkpoint of the tree as
it is; both keys sign a rotation statement (origin, both public keys and key ids, the tree size
and root at the handover), written to the ledger as a `ledger.key_rotated` event; the retired
key, with its statement and both signatures, is added to the retired-keys file; the new private
key replaces the old one in the key file; the new key signs a checkpoint that includes the
rotation event. The old private key is not kept anywhere.

The files are written before the transaction commits (so no other checkpoint can be signed
between the event and the new key) and put back as they were if it does not commit. Call it
from its own transaction (`manage.py rotate_ledger_key`), never inside another one: an outer
rollback would undo the event but not the files.
"""

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction

from audits import ledger, signing
from audits.errors import ConflictError
from audits.ledger import Verb
from audits.models import LedgerCheckpoint, LedgerHead


@dataclass(frozen=True)
class Rotation:
    old_key_id: str
    new_key_id: str
    tree_size: int  # the last tree the old key may sign
    event_seq: int  # the ledger.key_rotated event
    old_checkpoint: LedgerCheckpoint
    new_checkpoint: LedgerCheckpoint


def rotate_ledger_key(*, actor=None) -> Rotation:
    key_path = Path(settings.ASSAY_LEDGER_KEY_FILE)
    retired_path = ledger.retired_keys_path()
    saved: dict[Path, bytes | None] = {}
    written = False
    try:
        with transaction.atomic():
            head = LedgerHead.objects.select_for_update().get_or_create(pk=1)[0]
            if head.seq == 0:
                raise ConflictError(
                    "the ledger is empty: nothing was signed with the checkpoint key yet, so "
                    "there is nothing to hand over (replace the key file instead)"
                )
            old_key = ledger.server_key()
            # Read under the lock: another rotation cannot change the files from here on.
            for path in (key_path, retired_path):
                saved[path] = path.read_bytes() if path.exists() else None
            old_raw = signing.raw_public_key(old_key.public_key())
            retired = ledger.read_retired_keys()
            _, problems = ledger.key_ring(old_raw, retired, origin=settings.ASSAY_LEDGER_ORIGIN)
            if problems:
                raise ConflictError(
                    "the chain of earlier rotations does not verify, so it cannot be extended; "
                    f"run verify_ledger. The first problem: {problems[0]}"
                )
            old_point = ledger.checkpoint()
            if old_point.key_id != signing.key_id(old_raw):
                raise ConflictError(
                    f"the checkpoint at tree size {old_point.tree_size} was signed by key "
                    f"{old_point.key_id}, not by the current key: run verify_ledger"
                )
            new_key = signing.generate_private_key()
            new_raw = signing.raw_public_key(new_key.public_key())
            statement: dict[str, str | int] = {
                "origin": settings.ASSAY_LEDGER_ORIGIN,
                "old_key_id": signing.key_id(old_raw),
                "old_public_key": signing.b64(old_raw),
                "new_key_id": signing.key_id(new_raw),
                "new_public_key": signing.b64(new_raw),
                "tree_size": old_point.tree_size,
                "root_hash": old_point.root_hash,
            }
            message = ledger.rotation_message(statement)
            signatures = {
                "old": signing.b64(old_key.sign(message)),  # "I hand over to this key"
                "new": signing.b64(new_key.sign(message)),  # "my predecessor held up to here"
            }
            event = ledger.record(
                Verb.LEDGER_KEY_ROTATED,
                actor=actor,
                target=old_point,
                data={"statement": statement, "signatures": signatures},
            )
            written = True
            ledger.write_retired_keys(
                [
                    *retired,
                    {
                        "key_id": statement["old_key_id"],
                        "public_key": statement["old_public_key"],
                        "statement": statement,
                        "signatures": signatures,
                    },
                ]
            )
            ledger.write_private_key(key_path, new_key)
            new_point = ledger.checkpoint()
    except BaseException:
        if written:
            _restore(saved)
        raise
    return Rotation(
        old_key_id=str(statement["old_key_id"]),
        new_key_id=str(statement["new_key_id"]),
        tree_size=old_point.tree_size,
        event_seq=event.seq,
        old_checkpoint=old_point,
        new_checkpoint=new_point,
    )


def _restore(saved: dict[Path, bytes | None]) -> None:
    """Put the key file and the retired-keys file back as they were before the rotation."""
    for path, content in saved.items():
        if content is None:
            path.unlink(missing_ok=True)
        else:
            ledger.atomic_write(path, content, mode=0o600)
