"""Reviewer keys and signed decisions. The server verifies a decision's signature and its
statement against the release's current evidence before recording anything."""

from django.db import transaction
from django.utils import timezone

from audits import ledger, signing, statement_rules
from audits.actions.release_state import refresh_release_state
from audits.canonical import sha256_hex
from audits.errors import ConflictError, ForbiddenError
from audits.ledger import Verb
from audits.models import Decision, Release, ReviewerKey
from audits.roles import has_role


@transaction.atomic
def register_reviewer_key(*, actor, public_key: str, label: str = "") -> ReviewerKey:
    raw = signing.parse_public_key(public_key)
    key_id = signing.key_id(raw)
    if ReviewerKey.objects.filter(key_id=key_id).exists():
        raise ConflictError(f"key {key_id} is already registered")
    key = ReviewerKey.objects.create(
        key_id=key_id, user=actor, public_key=signing.b64(raw), label=label
    )
    ledger.record(
        Verb.REVIEWER_KEY_REGISTERED,
        actor=actor,
        target=key,
        data={"key_id": key_id, "user": actor.get_username(), "label": label},
    )
    return key


@transaction.atomic
def revoke_reviewer_key(*, actor, key: ReviewerKey) -> ReviewerKey:
    if key.user_id != actor.pk and not has_role(actor, "admin"):
        raise ForbiddenError("only the key's owner or an admin can revoke it")
    revoked_at = timezone.now()
    updated = ReviewerKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
        revoked_at=revoked_at
    )
    if not updated:
        raise ConflictError(f"key {key.key_id} is already revoked")
    key.refresh_from_db()
    ledger.record(
        Verb.REVIEWER_KEY_REVOKED,
        actor=actor,
        target=key,
        data={"key_id": key.key_id, "revoked_at": revoked_at.isoformat()},
    )
    return key


def record_decision(*, actor, release: Release, envelope: dict) -> Decision:
    """Verify a signed decision against the release's current evidence, then record it."""
    opened = signing.open_envelope(envelope)
    key = _signing_key(actor, opened.key_id)
    signing.verify_signature(
        signing.b64decode(key.public_key, "key"), opened.payload, opened.signature
    )
    return _record_verified_decision(actor=actor, release_id=release.pk, key=key, opened=opened)


def _signing_key(actor, key_id: str) -> ReviewerKey:
    key = ReviewerKey.objects.filter(key_id=key_id).first()
    if key is None:
        raise signing.SignatureError(f"no registered key has id {key_id}; register it first")
    if key.user_id != actor.pk:
        raise ForbiddenError(f"key {key_id} belongs to another person")
    if key.revoked_at is not None:
        raise ForbiddenError(
            f"key {key_id} was revoked at {key.revoked_at.isoformat()}; "
            "signatures made with it are no longer accepted"
        )
    return key


@transaction.atomic
def _record_verified_decision(*, actor, release_id, key, opened) -> Decision:
    # Locked so the evidence cannot change between the comparison and the insert.
    release = (
        Release.objects.select_for_update()
        .select_related("policy", "model_version")
        .get(pk=release_id)
    )
    predicate = statement_rules.check_statement(
        actor=actor, release=release, key=key, statement=opened.statement
    )
    payload_sha256 = sha256_hex(opened.payload)
    if Decision.objects.filter(payload_sha256=payload_sha256).exists():
        raise ConflictError("this exact signed statement was already recorded")
    decision = Decision.objects.create(
        release=release,
        reviewer=actor,
        key=key,
        decision=predicate["decision"]["type"],
        check_key=predicate["decision"]["check"] or "",
        rationale=predicate["rationale"],
        conditions=predicate["conditions"],
        evidence_digest=predicate["evidence_digest"],
        statement=opened.statement,
        envelope=signing_envelope(opened),
        payload_sha256=payload_sha256,
        signed_at=predicate["signed_at"],
    )
    ledger.record(
        Verb.DECISION_RECORDED,
        actor=actor,
        target=decision,
        data={
            "release": str(release.pk),
            "decision": decision.decision,
            "check": decision.check_key,
            "key_id": key.key_id,
            "payload_sha256": payload_sha256,
            "evidence_digest": decision.evidence_digest,
        },
    )
    refresh_release_state(release_id=release.pk)
    return decision


def signing_envelope(opened) -> dict:
    return {
        "payloadType": signing.PAYLOAD_TYPE,
        "payload": signing.b64(opened.payload),
        "signatures": [{"keyid": opened.key_id, "sig": signing.b64(opened.signature)}],
    }
