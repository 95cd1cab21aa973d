"""The release page's link to dossier exports (audits.dossier): the exports of a release and
a way to ask for a new one. When the dossier app is not installed the page says so."""

from dataclasses import dataclass
from importlib import import_module
from importlib.util import find_spec
from types import ModuleType

from django.apps import apps

from audits.models import Release


def _module(name: str) -> ModuleType | None:
    if not apps.is_installed("audits.dossier") or find_spec(name) is None:
        return None
    return import_module(name)


def available() -> bool:
    return (
        _module("audits.dossier.models") is not None
        and _module("audits.dossier.actions") is not None
    )


@dataclass(frozen=True)
class ExportRow:
    id: str
    status: str
    progress: float
    stage: str
    requested_by: str
    requested_at: object
    finished_at: object
    pdf_url: str
    bundle_url: str
    pdf_sha256: str
    bundle_sha256: str
    error: str
    ledger_seq: int | None

    @property
    def unfinished(self) -> bool:
        return self.status in ("queued", "running")

    @property
    def percent(self) -> int:
        return round(100 * (self.progress or 0))


def exports(release: Release) -> list[ExportRow] | None:
    """The release's exports, newest first; None when dossiers are not available here."""
    models = _module("audits.dossier.models")
    if models is None:
        return None
    rows = models.DossierExport.objects.filter(release=release).select_related("requested_by")
    return [_row(export) for export in rows.order_by("-requested_at")[:20]]


def _row(export) -> ExportRow:
    done = export.status == "succeeded"
    return ExportRow(
        id=str(export.pk),
        status=export.status,
        progress=export.progress,
        stage=export.stage,
        requested_by=export.requested_by.get_username() if export.requested_by else "system",
        requested_at=export.requested_at,
        finished_at=export.finished_at,
        pdf_url=f"/api/v1/dossiers/{export.pk}/dossier.pdf" if done else "",
        bundle_url=f"/api/v1/dossiers/{export.pk}/bundle.zip" if done else "",
        pdf_sha256=export.pdf_sha256,
        bundle_sha256=export.bundle_sha256,
        error=export.error,
        ledger_seq=export.ledger_seq,
    )


def request_export(*, actor, release: Release) -> None:
    actions = _module("audits.dossier.actions")
    if actions is None:
        from audits.errors import ConflictError

        raise ConflictError("dossier exports are not available on this server")
    actions.request_export(actor=actor, release=release)
