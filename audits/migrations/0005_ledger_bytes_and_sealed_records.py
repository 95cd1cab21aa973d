"""Fill in the stored bytes and Merkle nodes of existing ledger events, then install the
triggers of this schema: append-only Merkle nodes, sealed finished check runs, published
policies and their required checks. (On SQLite, adding a column rebuilds a table and drops
its triggers, so the append-only ones are installed again too.)"""

import hashlib

from django.db import migrations

from audits import merkle, triggers
from audits.canonical import canonical_json
from audits.ledger import timestamp


def _event_body(event) -> bytes:
    return canonical_json(
        {
            "seq": event.seq,
            "at": timestamp(event.at),
            "actor": event.actor_label,
            "verb": event.verb,
            "target_type": event.target_type,
            "target_id": event.target_id,
            "data": event.data,
            "prev_hash": event.prev_hash,
        }
    )


def backfill(apps, schema_editor):
    AuditEvent = apps.get_model("audits", "AuditEvent")
    MerkleNode = apps.get_model("audits", "MerkleNode")
    LedgerHead = apps.get_model("audits", "LedgerHead")
    if not AuditEvent.objects.exists():
        return
    triggers.remove(schema_editor, triggers.APPEND_ONLY_V1)
    frontier: list = []
    for event in AuditEvent.objects.order_by("seq").iterator():
        body = _event_body(event)
        if hashlib.sha256(body).hexdigest() != event.entry_hash:
            raise RuntimeError(f"event #{event.seq} does not match its hash; run verify_ledger")
        AuditEvent.objects.filter(seq=event.seq).update(body=body.decode("utf-8"))
        frontier = _append(MerkleNode, event.seq - 1, merkle.leaf_hash(body), frontier)
    LedgerHead.objects.filter(pk=1).update(frontier=frontier)


def _append(MerkleNode, index: int, leaf: bytes, frontier: list) -> list:
    nodes = [MerkleNode(level=0, index=index, hash=leaf.hex())]
    carry, level = leaf, 0
    while level < len(frontier) and frontier[level] is not None:
        carry = merkle.node_hash(bytes.fromhex(frontier[level]), carry)
        frontier[level] = None
        level += 1
        nodes.append(MerkleNode(level=level, index=index >> level, hash=carry.hex()))
    if level == len(frontier):
        frontier.append(carry.hex())
    else:
        frontier[level] = carry.hex()
    MerkleNode.objects.bulk_create(nodes)
    return frontier


def install(apps, schema_editor):
    triggers.install(schema_editor, triggers.PROTECTED_TABLES)
    triggers.install_sealed(schema_editor)


def remove(apps, schema_editor):
    triggers.remove_sealed(schema_editor)
    triggers.remove(schema_editor, triggers.APPEND_ONLY_V2)


class Migration(migrations.Migration):
    dependencies = [("audits", "0004_ledger_bytes_merkle_nodes_policy_assignment")]

    operations = [
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.RunPython(install, remove),
    ]
