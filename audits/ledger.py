"""The audit ledger: every state change writes one AuditEvent in the same transaction.

Events are numbered 1, 2, 3 … without gaps. Each event's bytes are the RFC 8785 canonical JSON
of {seq, at, actor, verb, target_type, target_id, data, prev_hash}; its entry_hash is the sha256
of those bytes and the next event's prev_hash (the first event's prev_hash is 64 zeros). The
events are also the leaves of an RFC 6962 Merkle tree (audits.merkle); the server signs
checkpoints of the tree (size, root, time) with its own Ed25519 key.
"""

import hashlib
import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from audits import merkle, signing
from audits.canonical import canonical_json
from audits.models import AuditEvent, LedgerCheckpoint, LedgerHead

GENESIS = "0" * 64


class Verb(StrEnum):
    """Every kind of ledger event. Only audits.actions (and the checkpoint signer) write them."""

    MODEL_VERSION_REGISTERED = "model_version.registered"
    MODEL_VERSION_DESCRIBED = "model_version.described"
    MODEL_VERSION_DIGESTED = "model_version.digested"
    MODEL_VERSION_DIGEST_FAILED = "model_version.digest_failed"
    POLICY_DRAFTED = "policy.drafted"
    POLICY_EDITED = "policy.edited"
    POLICY_PUBLISHED = "policy.published"
    RELEASE_OPENED = "release.opened"
    RELEASE_WITHDRAWN = "release.withdrawn"
    RELEASE_STATE_CHANGED = "release.state_changed"
    CHECK_RUN_QUEUED = "check_run.queued"
    CHECK_RUN_STARTED = "check_run.started"
    CHECK_RUN_SUCCEEDED = "check_run.succeeded"
    CHECK_RUN_ERRORED = "check_run.errored"
    CHECK_RUN_CANCELLED = "check_run.cancelled"
    CHECK_RUN_REQUEUED = "check_run.requeued"
    EVIDENCE_INTEGRITY_FAILED = "evidence.integrity_failed"
    REVIEWER_KEY_REGISTERED = "reviewer_key.registered"
    REVIEWER_KEY_REVOKED = "reviewer_key.revoked"
    DECISION_RECORDED = "decision.recorded"
    LENS_REGISTERED = "lens.registered"
    LENS_TRAINING_REQUESTED = "lens.training_requested"
    LENS_VALIDATED = "lens.validated"
    LENS_FAILED = "lens.failed"
    CATALOG_FEATURE_REVIEWED = "catalog_feature.reviewed"
    CATALOG_FEATURE_PROPOSED = "catalog_feature.proposed"
    CATALOG_CARRIED = "catalog.carried"


def actor_label(actor) -> str:
    if actor is None:
        return "system"
    return actor.get_username()


def timestamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def entry_bytes(
    *,
    seq: int,
    at: datetime,
    actor: str,
    verb: str,
    target_type: str,
    target_id: str,
    data: dict,
    prev_hash: str,
) -> bytes:
    return canonical_json(
        {
            "seq": seq,
            "at": timestamp(at),
            "actor": actor,
            "verb": verb,
            "target_type": target_type,
            "target_id": target_id,
            "data": data,
            "prev_hash": prev_hash,
        }
    )


def event_bytes(event: AuditEvent) -> bytes:
    return entry_bytes(
        seq=event.seq,
        at=event.at,
        actor=event.actor_label,
        verb=event.verb,
        target_type=event.target_type,
        target_id=event.target_id,
        data=event.data,
        prev_hash=event.prev_hash,
    )


def record(
    verb: Verb, *, actor, target: models.Model, data: dict[str, Any] | None = None
) -> AuditEvent:
    if not transaction.get_connection().in_atomic_block:
        # An event outside the change's transaction could survive a rolled-back change.
        raise RuntimeError(f"ledger event {verb!r} must be written inside the change's transaction")
    verb = Verb(verb)  # an unknown verb is a programming error, refused here
    head, _ = LedgerHead.objects.select_for_update().get_or_create(pk=1)
    # Stored exactly as hashed: the canonical round trip fixes types (UUIDs, tuples) up front.
    data = json.loads(canonical_json(data or {}))
    fields: dict[str, Any] = {
        "seq": head.seq + 1,
        "at": timezone.now(),
        "actor": actor_label(actor),
        "verb": verb.value,
        "target_type": target._meta.model_name,
        "target_id": str(target.pk),
        "data": data,
        "prev_hash": head.head_hash,
    }
    entry_hash = hashlib.sha256(entry_bytes(**fields)).hexdigest()
    event = AuditEvent.objects.create(
        seq=fields["seq"],
        at=fields["at"],
        actor=actor if actor is not None and actor.pk else None,
        actor_label=fields["actor"],
        verb=verb.value,
        target_type=fields["target_type"],
        target_id=fields["target_id"],
        data=data,
        prev_hash=head.head_hash,
        entry_hash=entry_hash,
    )
    LedgerHead.objects.filter(pk=1).update(seq=event.seq, head_hash=entry_hash)
    return event


# --- the Merkle tree and proofs -------------------------------------------------------------


def leaf_hashes(tree_size: int | None = None) -> list[bytes]:
    events = AuditEvent.objects.order_by("seq")
    if tree_size is not None:
        events = events.filter(seq__lte=tree_size)
    return [merkle.leaf_hash(event_bytes(event)) for event in events.iterator()]


def tree_size() -> int:
    head = LedgerHead.objects.filter(pk=1).first()
    return head.seq if head else 0


def inclusion(seq: int, size: int) -> dict:
    leaves = leaf_hashes(size)
    if not 1 <= seq <= size <= len(leaves):
        raise ValueError(f"need 1 <= seq <= tree_size <= {len(leaves)}")
    return {
        "seq": seq,
        "leaf_index": seq - 1,
        "tree_size": size,
        "leaf_hash": leaves[seq - 1].hex(),
        "root_hash": merkle.root(leaves).hex(),
        "audit_path": [node.hex() for node in merkle.inclusion_proof(seq - 1, leaves)],
    }


def consistency(first: int, second: int) -> dict:
    leaves = leaf_hashes(second)
    if not 1 <= first <= second <= len(leaves):
        raise ValueError(f"need 1 <= first <= second <= {len(leaves)}")
    return {
        "first": first,
        "second": second,
        "first_root": merkle.root(leaves[:first]).hex(),
        "second_root": merkle.root(leaves).hex(),
        "proof": [node.hex() for node in merkle.consistency_proof(first, leaves)],
    }


# --- checkpoints signed by the server -------------------------------------------------------


def server_key():
    """The server's checkpoint key (ASSAY_LEDGER_KEY_FILE); made on first use if absent."""
    path = Path(settings.ASSAY_LEDGER_KEY_FILE)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(signing.private_key_pem(signing.generate_private_key()))
        path.chmod(0o600)
    return signing.load_private_key(path)


def server_public_key() -> dict:
    raw = signing.raw_public_key(server_key().public_key())
    return {"algorithm": "ed25519", "public_key": signing.b64(raw), "key_id": signing.key_id(raw)}


@transaction.atomic
def checkpoint() -> LedgerCheckpoint:
    """A signed checkpoint of the tree as it is now (reused if the tree has not grown)."""
    size = LedgerHead.objects.select_for_update().get_or_create(pk=1)[0].seq
    existing = LedgerCheckpoint.objects.filter(tree_size=size).first()
    if existing:
        return existing
    key = server_key()
    body = canonical_json(
        {
            "origin": settings.ASSAY_LEDGER_ORIGIN,
            "tree_size": size,
            "root_hash": merkle.root(leaf_hashes(size)).hex(),
            "timestamp": timestamp(timezone.now()),
        }
    )
    fields = json.loads(body)
    return LedgerCheckpoint.objects.create(
        tree_size=size,
        root_hash=fields["root_hash"],
        timestamp=datetime.fromisoformat(fields["timestamp"]),
        key_id=signing.key_id(signing.raw_public_key(key.public_key())),
        body=body.decode(),
        signature=signing.b64(key.sign(body)),
    )
