"""State-changing workflows. Each is atomic and writes its ledger event in the same transaction.

Views, serializers and tasks validate input and call these; they never change records directly.
Contested transitions are compare-and-swap: an UPDATE filtered on the old state, acting only when
it changed exactly one row.
"""

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from audits import checkkinds, decision_checks, dispatch, gate, ledger, signing, statements
from audits.canonical import canonical_json, sha256_hex
from audits.models import (
    AuditEvent,
    CatalogFeature,
    CheckPolicy,
    CheckRun,
    Decision,
    Evidence,
    Lens,
    ModelVersion,
    Release,
    RequiredCheck,
    ReviewerKey,
    evidence_path,
)
from audits.roles import has_role


class ActionError(Exception):
    """A request that the current state of the records does not allow; the message says why."""


class ConflictError(ActionError):
    pass


class ForbiddenError(ActionError):
    """The person may not do this (four-eyes rules, someone else's key, a revoked key)."""


# --- model versions -------------------------------------------------------------------------


@transaction.atomic
def register_model_version(
    *, actor, family: str, version: str, source_path: str, fmt: str,
    parent: ModelVersion | None = None, description: str = "",
) -> ModelVersion:
    if ModelVersion.objects.filter(family=family, version=version).exists():
        raise ConflictError(f"model version {family}@{version} is already registered")
    model_version = ModelVersion.objects.create(
        family=family, version=version, source_path=source_path, format=fmt,
        parent=parent, description=description, registered_by=actor,
    )
    ledger.record("model_version.registered", actor=actor, target=model_version, data={
        "family": family, "version": version, "source_path": source_path, "format": fmt,
        "parent": str(parent.pk) if parent else None,
    })
    dispatch.enqueue_model_digests(model_version.pk)
    return model_version


@transaction.atomic
def update_model_version(*, actor, model_version: ModelVersion, description: str) -> ModelVersion:
    model_version.description = description
    model_version.save(update_fields=["description"])
    ledger.record("model_version.described", actor=actor, target=model_version,
                  data={"description": description})
    return model_version


@dataclass(frozen=True)
class ModelDigests:
    weights_digest: str
    tokenizer_digest: str
    config_digest: str
    file_digests: dict[str, str]


@transaction.atomic
def record_model_digests(*, model_version_id, digests: ModelDigests) -> bool:
    updated = ModelVersion.objects.filter(
        pk=model_version_id, digest_status=ModelVersion.DigestStatus.PENDING
    ).update(
        digest_status=ModelVersion.DigestStatus.COMPUTED, digested_at=timezone.now(),
        weights_digest=digests.weights_digest, tokenizer_digest=digests.tokenizer_digest,
        config_digest=digests.config_digest, file_digests=digests.file_digests,
    )
    if updated:
        model_version = ModelVersion.objects.get(pk=model_version_id)
        ledger.record("model_version.digested", actor=None, target=model_version, data={
            "weights_digest": digests.weights_digest, "files": len(digests.file_digests),
        })
    return bool(updated)


@transaction.atomic
def record_model_digest_failure(*, model_version_id, reason: str) -> bool:
    updated = ModelVersion.objects.filter(
        pk=model_version_id, digest_status=ModelVersion.DigestStatus.PENDING
    ).update(digest_status=ModelVersion.DigestStatus.FAILED, digest_error=reason)
    if updated:
        model_version = ModelVersion.objects.get(pk=model_version_id)
        ledger.record("model_version.digest_failed", actor=None, target=model_version,
                      data={"reason": reason})
    return bool(updated)


# --- policies -------------------------------------------------------------------------------


def validated_checks(checks: Iterable[Mapping[str, Any]]) -> list[dict]:
    """The checks as a policy stores them: kinds known, parameters and thresholds validated
    with their defaults filled in."""
    validated, keys = [], set()
    for check in checks:
        if check["key"] in keys:
            raise checkkinds.CheckSpecError(f"check key {check['key']!r} appears twice")
        keys.add(check["key"])
        kind = checkkinds.get(check["kind"])
        validated.append({
            "key": check["key"], "kind": kind.name,
            "parameters": kind.validate_parameters(check.get("parameters") or {}),
            "thresholds": kind.validate_thresholds(check.get("thresholds") or {}),
            "blocking": check.get("blocking", True),
        })
    return validated


def _replace_checks(policy: CheckPolicy, checks: list[dict]) -> None:
    policy.required_checks.all().delete()
    RequiredCheck.objects.bulk_create(RequiredCheck(policy=policy, **check) for check in checks)


@transaction.atomic
def create_policy(
    *, actor, name: str, checks: Iterable[Mapping[str, Any]], description: str = "",
    approvals_required: int = 2, submitter_may_approve: bool = False,
) -> CheckPolicy:
    """A new draft; a name that exists already gets the next version number."""
    validated = validated_checks(checks)
    latest = CheckPolicy.objects.select_for_update().filter(name=name).order_by("-version")
    version = (latest.values_list("version", flat=True).first() or 0) + 1
    policy = CheckPolicy.objects.create(
        name=name, version=version, description=description, created_by=actor,
        approvals_required=approvals_required, submitter_may_approve=submitter_may_approve,
    )
    _replace_checks(policy, validated)
    ledger.record("policy.drafted", actor=actor, target=policy, data=policy.content())
    return policy


@transaction.atomic
def update_draft_policy(
    *, actor, policy: CheckPolicy, changes: Mapping[str, Any],
    checks: Iterable[Mapping[str, Any]] | None = None,
) -> CheckPolicy:
    policy = CheckPolicy.objects.select_for_update().get(pk=policy.pk)
    if policy.is_published:
        raise ConflictError(
            f"policy {policy} is published and immutable; create a new version instead"
        )
    for name, value in changes.items():
        setattr(policy, name, value)
    policy.save()
    if checks is not None:
        _replace_checks(policy, validated_checks(checks))
    ledger.record("policy.edited", actor=actor, target=policy, data=policy.content())
    return policy


@transaction.atomic
def publish_policy(*, actor, policy: CheckPolicy) -> CheckPolicy:
    if not policy.required_checks.exists():
        raise ActionError(f"policy {policy} requires no checks; add at least one before publishing")
    digest = policy.compute_digest()
    updated = CheckPolicy.objects.filter(pk=policy.pk, status=CheckPolicy.Status.DRAFT).update(
        status=CheckPolicy.Status.PUBLISHED, digest=digest, published_by=actor,
        published_at=timezone.now(),
    )
    if not updated:
        raise ConflictError(f"policy {policy} is already published")
    policy.refresh_from_db()
    ledger.record("policy.published", actor=actor, target=policy,
                  data={"digest": digest, "content": policy.content()})
    return policy


# --- releases -------------------------------------------------------------------------------


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


def open_release(
    *, actor, model_version: ModelVersion, policy: CheckPolicy, title: str = "",
    idempotency_key: str | None = None, request_digest: str = "",
) -> tuple[Release, bool]:
    """Open a release and queue one check run per required check. Returns (release, created)."""
    existing = _existing_idempotent_release(actor, idempotency_key, request_digest)
    if existing:
        return existing, False
    try:
        return _open_release(actor, model_version, policy, title, idempotency_key,
                             request_digest), True
    except IntegrityError:
        # A concurrent request with the same key won the race; answer with its release.
        existing = _existing_idempotent_release(actor, idempotency_key, request_digest)
        if existing is None:
            raise
        return existing, False


@transaction.atomic
def _open_release(actor, model_version, policy, title, idempotency_key, request_digest):
    _check_release_can_open(model_version, policy)
    release = Release.objects.create(
        model_version=model_version, policy=policy, policy_digest=policy.digest, title=title,
        submitter=actor, idempotency_key=idempotency_key or None, request_digest=request_digest,
        state=Release.State.CHECKING,
    )
    ledger.record("release.opened", actor=actor, target=release, data={
        "model_version": str(model_version.pk), "weights_digest": model_version.weights_digest,
        "policy": str(policy.pk), "policy_digest": policy.digest,
    })
    for required in policy.required_checks.all():
        _queue_check_run(actor=actor, release=release, required=required, attempt=1)
    refresh_release_state(release_id=release.pk)
    return release


def _queue_check_run(*, actor, release: Release, required: RequiredCheck, attempt: int):
    run = CheckRun.objects.create(
        release=release, required_check=required, kind=required.kind, attempt=attempt
    )
    ledger.record("check_run.queued", actor=actor, target=run,
                  data={"release": str(release.pk), "check": required.key, "attempt": attempt})
    dispatch.enqueue_check_run(run.pk, run.kind)
    return run


@transaction.atomic
def withdraw_release(*, actor, release: Release, reason: str) -> Release:
    updated = Release.objects.filter(pk=release.pk, withdrawn_at__isnull=True).update(
        withdrawn_at=timezone.now()
    )
    if not updated:
        raise ConflictError(f"release {release.pk} is already withdrawn")
    release.refresh_from_db()
    ledger.record("release.withdrawn", actor=actor, target=release, data={"reason": reason})
    for run in release.check_runs.exclude(status__in=CheckRun.FINISHED):
        _cancel(actor=actor, run=run)
    refresh_release_state(release_id=release.pk)
    return release


def counting_runs(release: Release) -> list[CheckRun]:
    """The latest attempt of each required check: the one the gate counts."""
    latest: dict[int, CheckRun] = {}
    for run in release.check_runs.select_related("required_check").order_by("attempt"):
        latest[run.required_check_id] = run
    return list(latest.values())


def standing_decisions(release: Release) -> list[Decision]:
    """Each reviewer's latest approve or reject (a later decision supersedes an earlier one),
    and every waiver."""
    latest: dict[int, Decision] = {}
    waivers = []
    for decision in release.decisions.order_by("recorded_at"):
        if decision.decision == Decision.Type.WAIVE:
            waivers.append(decision)
        else:
            latest[decision.reviewer_id] = decision
    return list(latest.values()) + waivers


def may_decide(user, release: Release) -> bool:
    policy = release.policy
    if user.pk == release.submitter_id and not policy.submitter_may_approve:
        return False
    return has_role(user, policy.approver_role)


def gate_facts(release: Release) -> gate.ReleaseFacts:
    current = statements.evidence_digest(release)
    decisions = [
        (d, may_decide(d.reviewer, release), d.evidence_digest == current)
        for d in standing_decisions(release)
    ]
    waived = {d.check_key for d, eligible, fresh in decisions
              if d.decision == Decision.Type.WAIVE and eligible and fresh}
    checks = tuple(
        gate.CheckFacts(
            key=run.required_check.key, kind=run.kind, blocking=run.required_check.blocking,
            status=run.status, verdict=run.verdict, waived=run.required_check.key in waived,
        )
        for run in counting_runs(release)
    )
    return gate.ReleaseFacts(
        withdrawn=release.withdrawn_at is not None,
        approvals_required=release.policy.approvals_required,
        checks=checks,
        decisions=tuple(
            gate.DecisionFacts(d.reviewer_id, d.decision, eligible, fresh)
            for d, eligible, fresh in decisions if d.decision != Decision.Type.WAIVE
        ),
    )


@transaction.atomic
def refresh_release_state(*, release_id) -> gate.GateAnswer:
    release = Release.objects.select_for_update().select_related("policy").get(pk=release_id)
    answer = gate.evaluate(gate_facts(release))
    if answer.state != release.state or answer.reasons != release.state_reasons:
        previous = release.state
        Release.objects.filter(pk=release.pk).update(
            state=answer.state, state_reasons=answer.reasons
        )
        if answer.state != previous:
            ledger.record("release.state_changed", actor=None, target=release, data={
                "from": previous, "to": answer.state, "reasons": answer.reasons,
            })
    return answer


# --- check runs -----------------------------------------------------------------------------


def _cancel(*, actor, run: CheckRun) -> bool:
    updated = CheckRun.objects.filter(
        pk=run.pk, status__in=(CheckRun.Status.QUEUED, CheckRun.Status.RUNNING)
    ).update(status=CheckRun.Status.CANCELLED, cancelled_by=actor, finished_at=timezone.now())
    if updated:
        ledger.record("check_run.cancelled", actor=actor, target=run,
                      data={"release": str(run.release_id)})
    return bool(updated)


@transaction.atomic
def cancel_check_run(*, actor, run: CheckRun) -> CheckRun:
    if not _cancel(actor=actor, run=run):
        run.refresh_from_db()
        raise ConflictError(f"check run {run.pk} is {run.status}; only queued or running runs "
                            "can be cancelled")
    refresh_release_state(release_id=run.release_id)
    run.refresh_from_db()
    return run


@transaction.atomic
def rerun_check(*, actor, release: Release, check_key: str) -> CheckRun:
    """A new attempt of one required check; earlier attempts and their evidence are kept, and
    the newest attempt is the one that counts."""
    release = Release.objects.select_for_update().get(pk=release.pk)
    if release.withdrawn_at is not None:
        raise ConflictError(f"release {release.pk} was withdrawn")
    runs = release.check_runs.filter(required_check__key=check_key).order_by("-attempt")
    latest = runs.first()
    if latest is None:
        raise ActionError(f"release {release.pk} has no check {check_key!r}")
    if not latest.is_finished:
        raise ConflictError(f"check {check_key!r} is still {latest.status}; cancel it first")
    run = _queue_check_run(actor=actor, release=release, required=latest.required_check,
                           attempt=latest.attempt + 1)
    refresh_release_state(release_id=release.pk)
    return run


@transaction.atomic
def start_check_run(*, run_id, worker: str) -> CheckRun | None:
    """Claim a run for this delivery; None when there is nothing to do (finished, cancelled)."""
    run = CheckRun.objects.filter(pk=run_id).first()
    if run is None or run.is_finished:
        return None
    redelivered = run.status == CheckRun.Status.RUNNING
    updated = CheckRun.objects.filter(
        pk=run.pk, status=run.status, deliveries=run.deliveries
    ).update(
        status=CheckRun.Status.RUNNING, deliveries=run.deliveries + 1, worker=worker,
        started_at=timezone.now(), progress=0.0, stage="starting",
    )
    if not updated:
        return None
    run.refresh_from_db()
    ledger.record("check_run.started", actor=None, target=run, data={
        "worker": worker, "delivery": run.deliveries, "redelivered": redelivered,
    })
    return run


def report_progress(*, run_id, delivery: int, fraction: float, stage: str) -> bool:
    """Progress of the current delivery; False once the run is no longer ours (cancelled)."""
    fraction = min(max(float(fraction), 0.0), 1.0)
    return bool(CheckRun.objects.filter(
        pk=run_id, status=CheckRun.Status.RUNNING, deliveries=delivery
    ).update(progress=fraction, stage=stage[:200]))


def append_log(*, run_id, line: str) -> None:
    run = CheckRun.objects.filter(pk=run_id).only("log").first()
    if run is not None:
        CheckRun.objects.filter(pk=run_id).update(log=(run.log + line.rstrip() + "\n")[-200_000:])


@dataclass(frozen=True)
class Artifact:
    title: str
    media_type: str
    evidence_kind: str
    data: bytes


def store_evidence_bytes(data: bytes) -> str:
    """Write bytes into the content-addressed store (atomically, idempotently); return sha256."""
    digest = hashlib.sha256(data).hexdigest()
    path = evidence_path(digest)
    if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == digest:
        return digest
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return digest


def _manifest(run: CheckRun, verdict: str, metrics: dict, provenance: dict, rows) -> bytes:
    return canonical_json({
        "check_run": str(run.pk), "release": str(run.release_id), "kind": run.kind,
        "check": run.required_check.key, "attempt": run.attempt, "verdict": verdict,
        "metrics": metrics, "provenance": provenance,
        "artifacts": [
            {"title": row.title, "sha256": row.sha256, "size": row.size,
             "media_type": row.media_type, "evidence_kind": row.evidence_kind}
            for row in rows
        ],
    })


def _attach(run: CheckRun, artifact: Artifact) -> Evidence:
    return Evidence.objects.create(
        check_run=run, title=artifact.title, media_type=artifact.media_type,
        evidence_kind=artifact.evidence_kind, sha256=store_evidence_bytes(artifact.data),
        size=len(artifact.data),
    )


@dataclass(frozen=True)
class Outcome:
    verdict: str
    metrics: dict
    summary: str
    provenance: dict
    artifacts: tuple[Artifact, ...]


@transaction.atomic
def complete_check_run(*, run_id, delivery: int, outcome: Outcome,
                       on_recorded: Callable[[CheckRun], None] | None = None) -> bool:
    """Record a finished run with its evidence; False if this delivery no longer owns the run.

    on_recorded runs in the same transaction (catalog proposals, say), so a run is never
    recorded without what follows from it."""
    run = CheckRun.objects.select_for_update().select_related("required_check").get(pk=run_id)
    if run.status != CheckRun.Status.RUNNING or run.deliveries != delivery:
        return False
    rows = [_attach(run, artifact) for artifact in outcome.artifacts]
    manifest = _manifest(run, outcome.verdict, outcome.metrics, outcome.provenance, rows)
    _attach(run, Artifact("manifest.json", "application/json", Evidence.Kind.INTEGRITY, manifest))
    CheckRun.objects.filter(pk=run.pk).update(
        status=CheckRun.Status.SUCCEEDED, verdict=outcome.verdict, metrics=outcome.metrics,
        summary=outcome.summary, provenance=outcome.provenance, progress=1.0, stage="done",
        manifest_digest=sha256_hex(manifest), finished_at=timezone.now(),
    )
    ledger.record("check_run.succeeded", actor=None, target=run, data={
        "verdict": outcome.verdict, "manifest_digest": sha256_hex(manifest),
    })
    if on_recorded is not None:
        on_recorded(run)
    refresh_release_state(release_id=run.release_id)
    return True


@transaction.atomic
def fail_check_run(*, run_id, delivery: int | None, reason: str) -> bool:
    filters = {"pk": run_id, "status__in": (CheckRun.Status.QUEUED, CheckRun.Status.RUNNING)}
    if delivery is not None:
        filters["deliveries"] = delivery
    updated = CheckRun.objects.filter(**filters).update(
        status=CheckRun.Status.ERRORED, error=reason[:10_000], finished_at=timezone.now(),
    )
    if updated:
        run = CheckRun.objects.get(pk=run_id)
        ledger.record("check_run.errored", actor=None, target=run, data={"reason": reason[:2000]})
        refresh_release_state(release_id=run.release_id)
    return bool(updated)


@transaction.atomic
def record_evidence_integrity_failure(*, actor, evidence: Evidence, message: str) -> AuditEvent:
    return ledger.record("evidence.integrity_failed", actor=actor, target=evidence,
                         data={"sha256": evidence.sha256, "message": message})


# --- reviewer keys and signed decisions -----------------------------------------------------


@transaction.atomic
def register_reviewer_key(*, actor, public_key: str, label: str = "") -> ReviewerKey:
    raw = signing.parse_public_key(public_key)
    key_id = signing.key_id(raw)
    if ReviewerKey.objects.filter(key_id=key_id).exists():
        raise ConflictError(f"key {key_id} is already registered")
    key = ReviewerKey.objects.create(key_id=key_id, user=actor, public_key=signing.b64(raw),
                                     label=label)
    ledger.record("reviewer_key.registered", actor=actor, target=key,
                  data={"key_id": key_id, "user": actor.get_username(), "label": label})
    return key


@transaction.atomic
def revoke_reviewer_key(*, actor, key: ReviewerKey) -> ReviewerKey:
    if key.user_id != actor.pk and not has_role(actor, "admin"):
        raise ForbiddenError("only the key's owner or an admin can revoke it")
    updated = ReviewerKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now())
    if not updated:
        raise ConflictError(f"key {key.key_id} is already revoked")
    key.refresh_from_db()
    ledger.record("reviewer_key.revoked", actor=actor, target=key,
                  data={"key_id": key.key_id, "revoked_at": key.revoked_at.isoformat()})
    return key


def record_decision(*, actor, release: Release, envelope: dict) -> Decision:
    """Verify a signed decision against the release's current evidence, then record it."""
    opened = signing.open_envelope(envelope)
    key = _signing_key(actor, opened.key_id)
    signing.verify_signature(signing.b64decode(key.public_key, "key"), opened.payload,
                             opened.signature)
    return _record_verified_decision(actor=actor, release_id=release.pk, key=key, opened=opened)


def _signing_key(actor, key_id: str) -> ReviewerKey:
    key = ReviewerKey.objects.filter(key_id=key_id).first()
    if key is None:
        raise signing.SignatureError(f"no registered key has id {key_id}; register it first")
    if key.user_id != actor.pk:
        raise ForbiddenError(f"key {key_id} belongs to another person")
    if key.is_revoked:
        raise ForbiddenError(f"key {key_id} was revoked at {key.revoked_at.isoformat()}; "
                             "signatures made with it are no longer accepted")
    return key


@transaction.atomic
def _record_verified_decision(*, actor, release_id, key, opened) -> Decision:
    # Locked so the evidence cannot change between the comparison and the insert.
    release = Release.objects.select_for_update().select_related(
        "policy", "model_version").get(pk=release_id)
    predicate = decision_checks.check_statement(actor=actor, release=release, key=key,
                                                statement=opened.statement)
    payload_sha256 = sha256_hex(opened.payload)
    if Decision.objects.filter(payload_sha256=payload_sha256).exists():
        raise ConflictError("this exact signed statement was already recorded")
    decision = Decision.objects.create(
        release=release, reviewer=actor, key=key, decision=predicate["decision"]["type"],
        check_key=predicate["decision"]["check"] or "", rationale=predicate["rationale"],
        conditions=predicate["conditions"], evidence_digest=predicate["evidence_digest"],
        statement=opened.statement, envelope=signing_envelope(opened),
        payload_sha256=payload_sha256, signed_at=predicate["signed_at"],
    )
    ledger.record("decision.recorded", actor=actor, target=decision, data={
        "release": str(release.pk), "decision": decision.decision, "check": decision.check_key,
        "key_id": key.key_id, "payload_sha256": payload_sha256,
        "evidence_digest": decision.evidence_digest,
    })
    refresh_release_state(release_id=release.pk)
    return decision


def signing_envelope(opened) -> dict:
    return {"payloadType": signing.PAYLOAD_TYPE, "payload": signing.b64(opened.payload),
            "signatures": [{"keyid": opened.key_id, "sig": signing.b64(opened.signature)}]}


# --- lenses and the feature catalog ---------------------------------------------------------


@transaction.atomic
def register_lens(*, actor, model_version: ModelVersion, name: str, source_path: str) -> Lens:
    if Lens.objects.filter(model_version=model_version, name=name).exists():
        raise ConflictError(f"model version {model_version} already has a lens named {name!r}")
    lens = Lens.objects.create(model_version=model_version, name=name, source_path=source_path,
                               registered_by=actor)
    ledger.record("lens.registered", actor=actor, target=lens, data={
        "model_version": str(model_version.pk), "name": name, "source_path": source_path})
    dispatch.enqueue_lens_validation(lens.pk)
    return lens


@dataclass(frozen=True)
class LensFacts:
    hook_name: str
    architecture: str
    d_in: int
    d_sae: int
    digest: str


@transaction.atomic
def request_lens_training(*, actor, model_version: ModelVersion, name: str, target: str,
                          request: dict) -> Lens:
    """A lens to be trained by a worker job into target (a new directory in the lens store)."""
    if Lens.objects.filter(model_version=model_version, name=name).exists():
        raise ConflictError(f"model version {model_version} already has a lens named {name!r}")
    lens = Lens.objects.create(model_version=model_version, name=name, source_path=target,
                               registered_by=actor, status=Lens.Status.TRAINING,
                               training={"request": request})
    ledger.record("lens.training_requested", actor=actor, target=lens, data={
        "model_version": str(model_version.pk), "name": name, "request": request})
    dispatch.enqueue_lens_training(lens.pk)
    return lens


@transaction.atomic
def record_lens_validated(*, lens_id, facts: LensFacts, training: dict | None = None) -> bool:
    extra = {"training": training} if training is not None else {}
    updated = Lens.objects.filter(
        pk=lens_id, status__in=(Lens.Status.PENDING, Lens.Status.TRAINING)
    ).update(status=Lens.Status.READY, hook_name=facts.hook_name,
             architecture=facts.architecture, d_in=facts.d_in, d_sae=facts.d_sae,
             digest=facts.digest, error="", **extra)
    if updated:
        ledger.record("lens.validated", actor=None, target=Lens.objects.get(pk=lens_id),
                      data={"hook_name": facts.hook_name, "architecture": facts.architecture,
                            "d_in": facts.d_in, "d_sae": facts.d_sae, "digest": facts.digest})
    return bool(updated)


@transaction.atomic
def record_lens_failed(*, lens_id, reason: str) -> bool:
    updated = Lens.objects.filter(
        pk=lens_id, status__in=(Lens.Status.PENDING, Lens.Status.TRAINING)
    ).update(status=Lens.Status.FAILED, error=reason[:10_000])
    if updated:
        ledger.record("lens.failed", actor=None, target=Lens.objects.get(pk=lens_id),
                      data={"reason": reason[:2000]})
    return bool(updated)


@transaction.atomic
def review_feature(*, actor, feature: CatalogFeature, label: str, risk_axis: str,
                   status: str) -> CatalogFeature:
    """A person confirms, relabels or rejects a catalog feature; who and when are recorded."""
    before = {"label": feature.label, "risk_axis": feature.risk_axis, "status": feature.status}
    CatalogFeature.objects.filter(pk=feature.pk).update(
        label=label, risk_axis=risk_axis, status=status, reviewed_by=actor,
        reviewed_at=timezone.now())
    feature.refresh_from_db()
    ledger.record("catalog_feature.reviewed", actor=actor, target=feature, data={
        "lens": str(feature.lens_id), "index": feature.index, "before": before,
        "after": {"label": label, "risk_axis": risk_axis, "status": status}})
    return feature


def propose_features(*, run: CheckRun, lens: Lens, proposals: list[dict]) -> list[CatalogFeature]:
    """Catalog proposals from a discovery run. A feature proposed for several axes keeps the
    axis where it separates best (highest AUROC) until a person reviews it; reviewed features
    are never changed by a machine."""
    changed = []
    for proposal in proposals:
        feature, new = CatalogFeature.objects.get_or_create(
            lens=lens, index=proposal["index"],
            defaults={"label": proposal["label"], "risk_axis": proposal["risk_axis"],
                      "evidence": proposal["evidence"], "proposed_by_run": run})
        if new or _better_proposal(feature, proposal):
            if not new:
                CatalogFeature.objects.filter(pk=feature.pk).update(
                    label=proposal["label"], risk_axis=proposal["risk_axis"],
                    evidence=proposal["evidence"], proposed_by_run=run)
            changed.append(feature)
    if changed:
        ledger.record("catalog_feature.proposed", actor=None, target=run, data={
            "lens": str(lens.pk), "features": [f.index for f in changed],
            "risk_axis": proposals[0]["risk_axis"]})
    return changed


def _better_proposal(feature: CatalogFeature, proposal: dict) -> bool:
    return (feature.status == CatalogFeature.Status.PROPOSED
            and proposal["evidence"].get("auroc", 0) > feature.evidence.get("auroc", 0))


def carry_features(*, run: CheckRun, new_lens: Lens, matches: list[dict]) -> dict:
    """Carry catalog features to a new lens by drift matching; what did not match is recorded.

    Carried features start as proposals: a person confirms them for the new version."""
    carried, unmatched = [], []
    for match in matches:
        if match["new_index"] is None:
            unmatched.append({"from": str(match["feature"].pk), "index": match["feature"].index,
                              "best_cosine": match["best_cosine"]})
            continue
        feature, _ = CatalogFeature.objects.get_or_create(
            lens=new_lens, index=match["new_index"],
            defaults={"label": match["feature"].label, "risk_axis": match["feature"].risk_axis,
                      "carried_from": match["feature"], "match_cosine": match["cosine"],
                      "evidence": {"version_drift_run": str(run.pk)}, "proposed_by_run": run})
        carried.append({"from": str(match["feature"].pk), "to": str(feature.pk),
                        "index": match["feature"].index, "new_index": match["new_index"],
                        "cosine": match["cosine"]})
    record = {"new_lens": str(new_lens.pk), "carried": carried, "unmatched": unmatched}
    ledger.record("catalog.carried", actor=None, target=run, data=record)
    return record
