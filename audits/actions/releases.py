"""Opening and withdrawing releases."""

from django.db import IntegrityError, transaction
from django.utils import timezone

from audits import ledger
from audits.actions.check_runs import cancel_queued_or_running, queue_check_run
from audits.actions.release_state import refresh_release_state
from audits.errors import ConflictError, ForbiddenError
from audits.ledger import Verb
from audits.models import CheckPolicy, CheckRun, ModelVersion, Release
from audits.queries import assigned_policy


def _check_release_can_open(model_version: ModelVersion, policy: CheckPolicy) -> None:
    if not policy.is_published:
        raise ConflictError(f"policy {policy} is a draft; a release needs a published policy")
    if model_version.digest_status == ModelVersion.DigestStatus.FAILED:
        raise ConflictError(
            f"model version {model_version} could not be digested: {model_version.digest_error}"
        )
    if not model_version.digests_ready:
        raise ConflictError(
            f"the digests of model version {model_version} are still being computed; "
            "retry once its digest_status is 'computed'"
        )


def _existing_idempotent_release(actor, idempotency_key, request_digest) -> Release | None:
    if not idempotency_key:
        return None
    existing = Release.objects.filter(submitter=actor, idempotency_key=idempotency_key).first()
    if existing and existing.request_digest != request_digest:
        raise ConflictError(
            "this Idempotency-Key was already used for a different request; use a new key"
        )
    return existing


def policy_for(
    model_version: ModelVersion, policy: CheckPolicy | None, purpose: str
) -> CheckPolicy:
    """The policy a new release must be opened under. A release (one that may ship) takes the
    policy an admin assigned to its model family, never one the submitter picks; an
    evaluation (which never ships) may use any published policy."""
    if purpose == Release.Purpose.EVALUATION:
        if policy is None:
            raise ConflictError("an evaluation needs a policy: name the published policy to run")
        return policy
    assignment, required = assigned_policy(model_version.family)
    if assignment is None or required is None:
        raise ConflictError(
            f"no published policy is assigned to model family {model_version.family!r} and "
            "there is no default; an admin assigns one (POST /api/v1/policy-assignments/)"
        )
    if policy is not None and policy.pk != required.pk:
        raise ForbiddenError(
            f"releases of {model_version.family!r} must be opened under policy {required} "
            f"(assigned by {assignment.assigned_by} on {assignment.assigned_at:%Y-%m-%d}); "
            f"{policy} was asked for. Omit the policy, or open an evaluation, which never ships"
        )
    return required


def open_release(
    *,
    actor,
    model_version: ModelVersion,
    policy: CheckPolicy | None = None,
    title: str = "",
    idempotency_key: str | None = None,
    request_digest: str = "",
    purpose: str = Release.Purpose.RELEASE,
) -> tuple[Release, bool]:
    """Open a release and queue one check run per required check. Returns (release, created)."""
    existing = _existing_idempotent_release(actor, idempotency_key, request_digest)
    if existing:
        return existing, False
    chosen = policy_for(model_version, policy, purpose)
    try:
        return _open_release(
            actor, model_version, chosen, title, idempotency_key, request_digest, purpose
        ), True
    except IntegrityError:
        # A concurrent request with the same key won the race; answer with its release.
        existing = _existing_idempotent_release(actor, idempotency_key, request_digest)
        if existing is None:
            raise
        return existing, False


@transaction.atomic
def _open_release(actor, model_version, policy, title, idempotency_key, request_digest, purpose):
    _check_release_can_open(model_version, policy)
    release = Release.objects.create(
        model_version=model_version,
        policy=policy,
        policy_digest=policy.digest,
        purpose=purpose,
        title=title,
        submitter=actor,
        idempotency_key=idempotency_key or None,
        request_digest=request_digest,
        state=Release.State.CHECKING,
    )
    ledger.record(
        Verb.RELEASE_OPENED,
        actor=actor,
        target=release,
        data={
            "model_version": str(model_version.pk),
            "weights_digest": model_version.weights_digest,
            "policy": str(policy.pk),
            "policy_digest": policy.digest,
            "purpose": purpose,
        },
    )
    for required in policy.required_checks.all():
        queue_check_run(actor=actor, release=release, required=required, attempt=1)
    refresh_release_state(release_id=release.pk)
    return release


@transaction.atomic
def withdraw_release(*, actor, release: Release, reason: str) -> Release:
    if not release.may_be_managed_by(actor):
        raise ForbiddenError("only the release's submitter or an admin may withdraw it")
    updated = Release.objects.filter(pk=release.pk, withdrawn_at__isnull=True).update(
        withdrawn_at=timezone.now()
    )
    if not updated:
        raise ConflictError(f"release {release.pk} is already withdrawn")
    release.refresh_from_db()
    ledger.record(Verb.RELEASE_WITHDRAWN, actor=actor, target=release, data={"reason": reason})
    for run in release.check_runs.exclude(status__in=CheckRun.FINISHED):
        cancel_queued_or_running(actor=actor, run=run)
    refresh_release_state(release_id=release.pk)
    return release
