"""Check runs: queued, claimed by a worker, progressing, finished with evidence or a reason,
cancelled, re-run, re-queued by the reconciler."""

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from audits import dispatch, ledger
from audits.actions.release_state import refresh_release_state
from audits.canonical import canonical_json, sha256_hex
from audits.errors import ActionError, ConflictError, ForbiddenError
from audits.ledger import Verb
from audits.models import AuditEvent, CheckRun, Evidence, Release, RequiredCheck, evidence_path


def queue_check_run(*, actor, release: Release, required: RequiredCheck, attempt: int):
    run = CheckRun.objects.create(
        release=release, required_check=required, kind=required.kind, attempt=attempt
    )
    ledger.record(
        Verb.CHECK_RUN_QUEUED,
        actor=actor,
        target=run,
        data={"release": str(release.pk), "check": required.key, "attempt": attempt},
    )
    dispatch.enqueue_check_run(run.pk, run.kind)
    return run


def cancel_queued_or_running(*, actor, run: CheckRun) -> bool:
    updated = CheckRun.objects.filter(
        pk=run.pk, status__in=(CheckRun.Status.QUEUED, CheckRun.Status.RUNNING)
    ).update(status=CheckRun.Status.CANCELLED, cancelled_by=actor, finished_at=timezone.now())
    if updated:
        ledger.record(
            Verb.CHECK_RUN_CANCELLED, actor=actor, target=run, data={"release": str(run.release_id)}
        )
    return bool(updated)


@transaction.atomic
def cancel_check_run(*, actor, run: CheckRun) -> CheckRun:
    if not run.release.may_be_managed_by(actor):
        raise ForbiddenError("only the release's submitter or an admin may cancel its checks")
    if not cancel_queued_or_running(actor=actor, run=run):
        run.refresh_from_db()
        raise ConflictError(
            f"check run {run.pk} is {run.status}; only queued or running runs can be cancelled"
        )
    refresh_release_state(release_id=run.release_id)
    run.refresh_from_db()
    return run


@transaction.atomic
def rerun_check(*, actor, release: Release, check_key: str) -> CheckRun:
    """A new attempt of one required check; earlier attempts and their evidence are kept, and
    the newest attempt is the one that counts."""
    release = Release.objects.select_for_update().get(pk=release.pk)
    if not release.may_be_managed_by(actor):
        raise ForbiddenError("only the release's submitter or an admin may re-run its checks")
    if release.withdrawn_at is not None:
        raise ConflictError(f"release {release.pk} was withdrawn")
    runs = release.check_runs.filter(required_check__key=check_key).order_by("-attempt")
    latest = runs.first()
    if latest is None:
        keys = sorted(release.policy.required_checks.values_list("key", flat=True))
        raise ActionError(
            f"release {release.pk} has no check {check_key!r}; its checks are: {', '.join(keys)}"
        )
    if not latest.is_finished:
        raise ConflictError(f"check {check_key!r} is still {latest.status}; cancel it first")
    run = queue_check_run(
        actor=actor, release=release, required=latest.required_check, attempt=latest.attempt + 1
    )
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
        status=CheckRun.Status.RUNNING,
        deliveries=run.deliveries + 1,
        worker=worker,
        started_at=timezone.now(),
        progress=0.0,
        stage="starting",
    )
    if not updated:
        return None
    run.refresh_from_db()
    ledger.record(
        Verb.CHECK_RUN_STARTED,
        actor=None,
        target=run,
        data={
            "worker": worker,
            "delivery": run.deliveries,
            "redelivered": redelivered,
        },
    )
    return run


def report_progress(*, run_id, delivery: int, fraction: float, stage: str) -> bool:
    """Progress of the current delivery; False once the run is no longer ours (cancelled)."""
    fraction = min(max(float(fraction), 0.0), 1.0)
    return bool(
        CheckRun.objects.filter(
            pk=run_id, status=CheckRun.Status.RUNNING, deliveries=delivery
        ).update(progress=fraction, stage=stage[:200])
    )


def append_log(*, run_id, line: str) -> None:
    """A line in a queued or running run's log; a finished run is sealed (lines that arrive
    after a cancellation are dropped)."""
    unfinished = CheckRun.objects.filter(pk=run_id).exclude(status__in=CheckRun.FINISHED)
    run = unfinished.only("log").first()
    if run is not None:
        unfinished.update(log=(run.log + line.rstrip() + "\n")[-200_000:])


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
    return canonical_json(
        {
            "check_run": str(run.pk),
            "release": str(run.release_id),
            "kind": run.kind,
            "check": run.required_check.key,
            "attempt": run.attempt,
            "verdict": verdict,
            "metrics": metrics,
            "provenance": provenance,
            "artifacts": [
                {
                    "title": row.title,
                    "sha256": row.sha256,
                    "size": row.size,
                    "media_type": row.media_type,
                    "evidence_kind": row.evidence_kind,
                }
                for row in rows
            ],
        }
    )


def _attach(run: CheckRun, artifact: Artifact) -> Evidence:
    return Evidence.objects.create(
        check_run=run,
        title=artifact.title,
        media_type=artifact.media_type,
        evidence_kind=artifact.evidence_kind,
        sha256=store_evidence_bytes(artifact.data),
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
def complete_check_run(
    *,
    run_id,
    delivery: int,
    outcome: Outcome,
    on_recorded: Callable[[CheckRun], None] | None = None,
) -> bool:
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
        status=CheckRun.Status.SUCCEEDED,
        verdict=outcome.verdict,
        metrics=outcome.metrics,
        summary=outcome.summary,
        provenance=outcome.provenance,
        progress=1.0,
        stage="done",
        manifest_digest=sha256_hex(manifest),
        finished_at=timezone.now(),
    )
    ledger.record(
        Verb.CHECK_RUN_SUCCEEDED,
        actor=None,
        target=run,
        data={
            "verdict": outcome.verdict,
            "manifest_digest": sha256_hex(manifest),
        },
    )
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
        status=CheckRun.Status.ERRORED,
        error=reason[:10_000],
        finished_at=timezone.now(),
    )
    if updated:
        run = CheckRun.objects.get(pk=run_id)
        ledger.record(
            Verb.CHECK_RUN_ERRORED, actor=None, target=run, data={"reason": reason[:2000]}
        )
        refresh_release_state(release_id=run.release_id)
    return bool(updated)


@transaction.atomic
def record_evidence_integrity_failure(*, actor, evidence: Evidence, message: str) -> AuditEvent:
    return ledger.record(
        Verb.EVIDENCE_INTEGRITY_FAILED,
        actor=actor,
        target=evidence,
        data={"sha256": evidence.sha256, "message": message},
    )


def requeue_stuck_run(*, run: CheckRun, reason: str) -> bool:
    """Put a run the reconciler found stuck (message lost, worker gone) back on the queue."""
    with transaction.atomic():
        updated = CheckRun.objects.filter(
            pk=run.pk, status=run.status, deliveries=run.deliveries
        ).update(status=CheckRun.Status.QUEUED, queued_at=timezone.now(), stage="re-enqueued")
        if updated:
            ledger.record(
                Verb.CHECK_RUN_REQUEUED,
                actor=None,
                target=run,
                data={"reason": reason, "deliveries": run.deliveries},
            )
            dispatch.enqueue_check_run(run.pk, run.kind)
    return bool(updated)
