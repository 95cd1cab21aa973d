"""Dossier exports: requested, claimed by a worker, progressing, finished with both digests in
the ledger (dossier.exported), or failed with the reason.

State changes are compare-and-swap on (status, deliveries), as for check runs, so a redelivered
task can neither finish an export twice nor overwrite a newer delivery's progress.
"""

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from audits import dispatch, ledger
from audits.dossier import bundle, collect
from audits.dossier.models import DossierExport, dossier_root
from audits.errors import ConflictError
from audits.ledger import Verb
from audits.models import Release

EXPORT_TASK = "audits.dossier.export"
UNFINISHED = (DossierExport.Status.QUEUED, DossierExport.Status.RUNNING)
# An export unfinished this long after it was asked for lost its worker (the task's hard
# limit is 1900 s): it no longer blocks a new one.
ABANDONED_AFTER = timedelta(hours=1)


@transaction.atomic
def request_export(*, actor, release: Release) -> DossierExport:
    """Queue an export of the release's dossier (one at a time per release)."""
    release = Release.objects.select_for_update().get(pk=release.pk)
    DossierExport.objects.filter(
        release=release,
        status__in=UNFINISHED,
        requested_at__lt=timezone.now() - ABANDONED_AFTER,
    ).update(
        status=DossierExport.Status.FAILED,
        error=f"abandoned: not finished {ABANDONED_AFTER} after it was asked for",
        finished_at=timezone.now(),
    )
    running = DossierExport.objects.filter(release=release, status__in=UNFINISHED).first()
    if running is not None:
        raise ConflictError(
            f"an export of release {release.pk} is already {running.status} (export "
            f"{running.pk}); follow it at /api/v1/dossiers/{running.pk}/"
        )
    export = DossierExport.objects.create(release=release, requested_by=actor)
    export_id = str(export.pk)
    transaction.on_commit(lambda: dispatch.send_now(EXPORT_TASK, export_id, queue="cpu"))
    return export


def start_export(*, export_id) -> DossierExport | None:
    """Claim an export for this delivery; None when there is nothing to do (finished)."""
    export = DossierExport.objects.filter(pk=export_id).first()
    if export is None or export.is_finished:
        return None
    updated = DossierExport.objects.filter(
        pk=export.pk, status=export.status, deliveries=export.deliveries
    ).update(
        status=DossierExport.Status.RUNNING,
        deliveries=export.deliveries + 1,
        started_at=timezone.now(),
        progress=0.0,
        stage="starting",
        directory=str(export.pk),
    )
    if not updated:
        return None
    export.refresh_from_db()
    return export


def report_progress(*, export_id, delivery: int, fraction: float, stage: str) -> bool:
    return bool(
        DossierExport.objects.filter(
            pk=export_id, status=DossierExport.Status.RUNNING, deliveries=delivery
        ).update(progress=min(max(fraction, 0.0), 1.0), stage=stage[:200])
    )


@transaction.atomic
def complete_export(
    *, export_id, delivery: int, written: bundle.Written, tree_size: int
) -> DossierExport | None:
    """Record a finished export and its ledger event; None if this delivery lost the export."""
    updated = DossierExport.objects.filter(
        pk=export_id, status=DossierExport.Status.RUNNING, deliveries=delivery
    ).update(
        status=DossierExport.Status.SUCCEEDED,
        progress=1.0,
        stage="done",
        finished_at=timezone.now(),
        pdf_sha256=written.pdf_sha256,
        pdf_size=written.pdf_size,
        bundle_sha256=written.bundle_sha256,
        bundle_size=written.bundle_size,
        manifest_sha256=written.manifest_sha256,
        tree_size=tree_size,
    )
    if not updated:
        return None
    export = DossierExport.objects.select_related("requested_by").get(pk=export_id)
    event = ledger.record(
        Verb.DOSSIER_EXPORTED,
        actor=export.requested_by,
        target=export,
        data={
            "release": str(export.release_id),
            "pdf_sha256": written.pdf_sha256,
            "pdf_size": written.pdf_size,
            "bundle_sha256": written.bundle_sha256,
            "bundle_size": written.bundle_size,
            "manifest_sha256": written.manifest_sha256,
            "tree_size": tree_size,
        },
    )
    DossierExport.objects.filter(pk=export_id).update(ledger_seq=event.seq)
    export.refresh_from_db()
    return export


def fail_export(*, export_id, delivery: int | None, reason: str) -> bool:
    filters: dict = {"pk": export_id, "status__in": UNFINISHED}
    if delivery is not None:
        filters["deliveries"] = delivery
    return bool(
        DossierExport.objects.filter(**filters).update(
            status=DossierExport.Status.FAILED,
            error=reason[:10_000],
            finished_at=timezone.now(),
            stage="failed",
        )
    )


def build(
    export: DossierExport, out_dir: Path, progress: Callable[[float, str], None]
) -> tuple[bundle.Written, int]:
    """Read the records (bound to a fresh checkpoint), write the PDF and the bundle."""
    progress(0.05, "reading the records and the ledger")
    snap = collect.snapshot(export.release_id, dossier_id=str(export.pk))
    return bundle.write_dossier(snap, out_dir, progress=progress), snap.tree_size


def run_export(*, export_id) -> DossierExport | None:
    """The whole job of one delivery: claim, build, record (or fail with the reason)."""
    export = start_export(export_id=export_id)
    if export is None:
        return None
    delivery = export.deliveries

    def progress(fraction: float, stage: str) -> None:
        report_progress(export_id=export_id, delivery=delivery, fraction=fraction, stage=stage)

    try:
        written, tree_size = build(export, export.path, progress)
    except Exception as exc:
        fail_export(export_id=export_id, delivery=delivery, reason=_reason(exc))
        raise
    return complete_export(
        export_id=export_id, delivery=delivery, written=written, tree_size=tree_size
    )


def _reason(exc: Exception) -> str:
    return f"the export failed ({type(exc).__name__}): {exc}"


def export_dossier(*, actor, release: Release, out_dir: Path) -> DossierExport:
    """Export synchronously into out_dir (the command line): recorded like any export."""
    with transaction.atomic():
        export = DossierExport.objects.create(
            release=release,
            requested_by=actor,
            status=DossierExport.Status.RUNNING,
            deliveries=1,
            started_at=timezone.now(),
            directory=str(_relative(out_dir)),
        )
    try:
        written, tree_size = build(export, out_dir, lambda fraction, stage: None)
    except Exception as exc:
        fail_export(export_id=export.pk, delivery=1, reason=_reason(exc))
        raise
    done = complete_export(export_id=export.pk, delivery=1, written=written, tree_size=tree_size)
    assert done is not None  # noqa: S101 - nobody else holds a synchronous export
    return done


def _relative(out_dir: Path) -> Path:
    """out_dir as stored: relative to the dossier root when inside it, else absolute."""
    resolved = out_dir.resolve()
    try:
        return resolved.relative_to(dossier_root())
    except ValueError:
        return resolved
