"""Recompute the ledger and everything it vouches for, and say what does not match.

Used by `manage.py verify_ledger`. It trusts nothing stored as derived: every event hash, the
chain, the head, every signed checkpoint's root, every decision's signature and its agreement
with the statement it was recorded from and with its ledger event, and every evidence file.
"""

import hashlib
from collections.abc import Iterator

from audits import ledger, merkle, signing
from audits.models import AuditEvent, Decision, Evidence, LedgerCheckpoint, LedgerHead


def _events() -> Iterator[AuditEvent]:
    return AuditEvent.objects.order_by("seq").iterator()


def check_chain() -> list[str]:
    """Problems in the hash chain; the first names the first event that does not match."""
    problems, previous, expected_seq = [], ledger.GENESIS, 1
    for event in _events():
        if event.seq != expected_seq:
            problems.append(f"event #{expected_seq} is missing (next is #{event.seq})")
            return problems
        actual = hashlib.sha256(ledger.event_bytes(event)).hexdigest()
        if event.prev_hash != previous:
            problems.append(
                f"event #{event.seq} ({event.verb}) does not follow the chain: its "
                f"prev_hash is not the hash of event #{event.seq - 1}"
            )
        if actual != event.entry_hash:
            problems.append(
                f"event #{event.seq} ({event.verb}) does not match its hash: the "
                "row was changed after it was written"
            )
        if problems:
            return problems
        previous, expected_seq = event.entry_hash, expected_seq + 1
    head = LedgerHead.objects.filter(pk=1).first()
    if head and (head.seq, head.head_hash) != (expected_seq - 1, previous):
        problems.append(
            f"the ledger head says #{head.seq} but the chain ends at "
            f"#{expected_seq - 1}: events were removed or added out of band"
        )
    return problems


def check_checkpoints() -> list[str]:
    problems = []
    leaves = ledger.leaf_hashes()
    public = signing.raw_public_key(ledger.server_key().public_key())
    for point in LedgerCheckpoint.objects.order_by("tree_size"):
        try:
            signing.Ed25519PublicKey.from_public_bytes(public).verify(
                signing.b64decode(point.signature, "signature"), point.body.encode()
            )
        except (signing.InvalidSignature, signing.SignatureError):
            problems.append(f"checkpoint at tree size {point.tree_size} has a bad signature")
            continue
        if (
            point.tree_size > len(leaves)
            or merkle.root(leaves[: point.tree_size]).hex() != point.root_hash
        ):
            problems.append(
                f"the ledger no longer has the root signed at tree size "
                f"{point.tree_size}: events up to #{point.tree_size} were rewritten"
            )
    return problems


def _decision_problem(decision: Decision, events: dict[str, AuditEvent]) -> str | None:
    label = f"decision {decision.id} ({decision.decision} by {decision.reviewer_id})"
    try:
        opened = signing.open_envelope(decision.envelope)
        signing.verify_signature(
            signing.b64decode(decision.key.public_key, "key"), opened.payload, opened.signature
        )
    except signing.SignatureError as exc:
        return f"{label}: its envelope does not verify ({exc})"
    predicate = opened.statement["predicate"]
    stored = (
        decision.decision,
        decision.check_key or None,
        decision.rationale,
        decision.conditions,
        decision.evidence_digest,
        str(decision.release_id),
    )
    signed = (
        predicate["decision"]["type"],
        predicate["decision"]["check"],
        predicate["rationale"],
        predicate["conditions"],
        predicate["evidence_digest"],
        predicate["release"],
    )
    if stored != signed or decision.statement != opened.statement:
        return f"{label}: the row differs from the statement its reviewer signed"
    event = events.get(str(decision.id))
    if (
        event is None
        or event.data.get("payload_sha256") != hashlib.sha256(opened.payload).hexdigest()
    ):
        return f"{label}: it is not the decision the ledger recorded"
    return None


def check_decisions() -> list[str]:
    events = {
        event.target_id: event for event in AuditEvent.objects.filter(verb="decision.recorded")
    }
    found = (_decision_problem(d, events) for d in Decision.objects.select_related("key"))
    return [problem for problem in found if problem]


def check_evidence() -> list[str]:
    problems = []
    for evidence in Evidence.objects.all():
        try:
            evidence.read_bytes()
        except Exception as exc:
            problems.append(str(exc))
    return problems


def verify_everything() -> list[str]:
    return check_chain() + check_checkpoints() + check_decisions() + check_evidence()
