"""Records of dossier exports: who asked for which release's dossier, how far it got, and the
digests of what it wrote (the same digests its dossier.exported ledger event records)."""

import uuid
from pathlib import Path

from django.conf import settings
from django.db import models

from audits.models import Release


def dossier_root() -> Path:
    """Where exports are written: ASSAY_DOSSIER_ROOT when configured, else var/dossiers."""
    configured = getattr(settings, "ASSAY_DOSSIER_ROOT", None)
    return Path(configured or Path(settings.VAR_DIR) / "dossiers").resolve()


class DossierExport(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    UNFINISHED = (Status.QUEUED, Status.RUNNING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="dossier_exports")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    stage = models.CharField(max_length=200, blank=True)
    deliveries = models.PositiveSmallIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Relative to dossier_root(), so a moved var/ keeps its exports.
    directory = models.CharField(max_length=200, blank=True)
    pdf_sha256 = models.CharField(max_length=64, blank=True)
    pdf_size = models.PositiveBigIntegerField(null=True, blank=True)
    bundle_sha256 = models.CharField(max_length=64, blank=True)
    bundle_size = models.PositiveBigIntegerField(null=True, blank=True)
    # sha256 of the bundle's manifest.json: printed in the PDF, which cannot name the zip's own
    # digest (the zip carries the PDF's).
    manifest_sha256 = models.CharField(max_length=64, blank=True)
    tree_size = models.BigIntegerField(null=True, blank=True)  # the checkpoint it is bound to
    ledger_seq = models.BigIntegerField(null=True, blank=True)  # its dossier.exported event
    error = models.TextField(blank=True)

    class Meta:
        ordering = ("-requested_at",)
        indexes = (models.Index(fields=("release", "status")),)

    def __str__(self) -> str:
        return f"dossier {self.id} of release {self.release_id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status not in self.UNFINISHED

    @property
    def path(self) -> Path:
        return dossier_root() / (self.directory or str(self.id))

    @property
    def pdf_path(self) -> Path:
        return self.path / "dossier.pdf"

    @property
    def bundle_path(self) -> Path:
        return self.path / "bundle.zip"
