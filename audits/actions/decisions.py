"""Reviewer keys and signed decisions. The server verifies a decision's signature and its
statement against the release's current evidence before recording anything."""

import secrets

from django.core import signing as django_signing
from django.db import transaction
from django.utils import timezone

from audits import ledger, signing, statement_rules
from audits.actions.release_state import refresh_release_state
from audits.canonical import sha256_hex
from audits.errors import ConflictError, ForbiddenError
from audits.ledger import Verb
from audits.models import Decision, Release, ReviewerKey
from audits.roles import has_role

CHALLENGE_SALT = "assay.reviewer-key-challenge"
CHALLENGE_MAX_AGE = 600  # seconds


def issue_key_challenge(*, actor) -> str:
    """A challenge for registering a key, bound to this person, valid for ten minutes."""
    return django_signing.TimestampSigner(salt=CHALLENGE_SALT).sign_object(
        {"user": actor.pk, "nonce": secrets.token_hex(16)}
    )


def _check_challenge(actor, challenge: str) -> None:
    try:
        value = django_signing.TimestampSigner(salt=CHALLENGE_SALT).unsign_object(
            challenge, max_age=CHALLENGE_MAX_AGE
        )
    except django_signing.SignatureExpired:
        raise signing.SignatureError("the challenge expired; fetch a new one") from None
    except django_signing.BadSignature:
        raise signing.SignatureError("the challenge was not issued by this server") from None
    if value.get("user") != actor.pk:
        raise ForbiddenError("the challenge was issued to another person")


def register_reviewer_key(
    *, actor, public_key: str, challenge: str, proof: str, label: str = ""
) -> ReviewerKey:
    """Register a key after its proof of possession: the key's signature over
    signing.key_proof_message for this person and a challenge this server issued to them."""
    raw = signing.parse_public_key(public_key)
    key_id = signing.key_id(raw)
    _check_challenge(actor, challenge)
    message = signing.key_proof_message(
        username=actor.get_username(), key_id=key_id, challenge=challenge
    )
    try:
        signing.verify_signature(raw, message, signing.b64decode(proof, "proof"), pae=False)
    except signing.SignatureError:
        raise signing.SignatureError(
            "the proof of possession does not verify: sign the proof message (see "
            "GET /api/v1/reviewer-keys/challenge/) for yourself with this very key"
        ) from None
    return _store_key(actor, raw, key_id, label, {"challenge": challenge, "proof": proof})


@transaction.atomic
def _store_key(actor, raw: bytes, key_id: str, label: str, possession: dict) -> ReviewerKey:
    if ReviewerKey.objects.filter(key_id=key_id).exists():
        raise ConflictError(f"key {key_id} is already registered")
    key = ReviewerKey.objects.create(
        key_id=key_id, user=actor, public_key=signing.b64(raw), label=label
    )
    ledger.record(
        Verb.REVIEWER_KEY_REGISTERED,
        actor=actor,
        target=key,
        data={
            "key_id": key_id,
            "user": actor.get_username(),
            "public_key": signing.b64(raw),
            "label": label,
            "proof_of_possession": possession,
        },
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
    # Approvals signed with a revoked key stop counting at once (docs/threat-model.md).
    for release_id in set(key.decisions.values_list("release_id", flat=True)):
        refresh_release_state(release_id=release_id)
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
