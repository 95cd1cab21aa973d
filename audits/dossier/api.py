"""The dossier's API (thin: validate, call an action, answer with the record).

    GET  /api/v1/releases/<id>/dossier/          the release's exports, newest first
    POST /api/v1/releases/<id>/dossier/          queue an export (202); 409 while one runs
    GET  /api/v1/dossiers/<export id>/           one export: status, progress, digests, links
    GET  /api/v1/dossiers/<export id>/dossier.pdf and /bundle.zip   downloads, re-hashed first

Everyone with a role reads; submitters, reviewers, admins and auditors may export (an export
changes nothing the gate reads; the ledger records who asked).
"""

import hashlib
import logging
from typing import ClassVar

from django.http import FileResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.response import Response

from audits.dossier import actions
from audits.dossier.models import DossierExport
from audits.errors import ConflictError
from audits.models import Release
from audits.roles import Role

logger = logging.getLogger(__name__)
EXPORTERS = (Role.SUBMITTER, Role.REVIEWER, Role.ADMIN, Role.AUDITOR)
MAX_LISTED = 200  # the newest exports of a release; older ones stay in the ledger


class DossierExportSerializer(serializers.ModelSerializer):
    requested_by: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )
    pdf_url = serializers.SerializerMethodField()
    bundle_url = serializers.SerializerMethodField()

    class Meta:
        model = DossierExport
        fields = (
            "id",
            "release",
            "requested_by",
            "requested_at",
            "status",
            "progress",
            "stage",
            "started_at",
            "finished_at",
            "pdf_sha256",
            "pdf_size",
            "bundle_sha256",
            "bundle_size",
            "manifest_sha256",
            "tree_size",
            "ledger_seq",
            "error",
            "pdf_url",
            "bundle_url",
        )
        read_only_fields = fields

    def _link(self, export: DossierExport, name: str) -> str | None:
        if export.status != DossierExport.Status.SUCCEEDED:
            return None
        path = f"/api/v1/dossiers/{export.pk}/{name}"
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path

    def get_pdf_url(self, export: DossierExport) -> str | None:
        return self._link(export, "dossier.pdf")

    def get_bundle_url(self, export: DossierExport) -> str | None:
        return self._link(export, "bundle.zip")


class ReleaseDossierViewSet(viewsets.ViewSet):
    """A release's dossier exports: list them, or queue a new one."""

    write_roles: ClassVar[dict] = {"create": EXPORTERS}
    serializer_class = DossierExportSerializer

    @extend_schema(responses=DossierExportSerializer(many=True))
    def list(self, request, release_id=None):
        release = get_object_or_404(Release, pk=release_id)
        exports = DossierExport.objects.filter(release=release).select_related("requested_by")
        exports = exports[:MAX_LISTED]
        data = DossierExportSerializer(exports, many=True, context={"request": request}).data
        return Response(data)

    @extend_schema(request=None, responses={202: DossierExportSerializer})
    def create(self, request, release_id=None):
        """Queue an export of the release's dossier (PDF + verifiable bundle) as a job; follow
        its progress at the returned record."""
        release = get_object_or_404(Release, pk=release_id)
        export = actions.request_export(actor=request.user, release=release)
        data = DossierExportSerializer(export, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED)


class DossierExportViewSet(viewsets.ViewSet):
    """One dossier export and its files. Downloads are re-hashed against the digests the
    export (and its ledger event) recorded, and refused with 409 when they differ."""

    serializer_class = DossierExportSerializer

    @extend_schema(responses=DossierExportSerializer)
    def retrieve(self, request, export_id=None):
        export = get_object_or_404(
            DossierExport.objects.select_related("requested_by"), pk=export_id
        )
        return Response(DossierExportSerializer(export, context={"request": request}).data)

    @extend_schema(responses={(200, "application/pdf"): bytes})
    def pdf(self, request, export_id=None):
        export = get_object_or_404(DossierExport, pk=export_id)
        return _download(export, export.pdf_path, export.pdf_sha256, "application/pdf")

    @extend_schema(responses={(200, "application/zip"): bytes})
    def bundle(self, request, export_id=None):
        export = get_object_or_404(DossierExport, pk=export_id)
        return _download(export, export.bundle_path, export.bundle_sha256, "application/zip")


def _download(export: DossierExport, path, expected: str, media_type: str) -> FileResponse:
    if export.status != DossierExport.Status.SUCCEEDED:
        raise ConflictError(f"export {export.pk} is {export.status}; nothing to download yet")
    try:
        handle = path.open("rb")
    except OSError:
        raise ConflictError(
            f"export {export.pk}: {path.name} is no longer on the server; export again"
        ) from None
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    if digest.hexdigest() != expected:
        handle.close()
        logger.warning("dossier export %s: %s no longer matches its sha256", export.pk, path)
        raise ConflictError(
            f"export {export.pk}: {path.name} no longer matches the sha256 {expected} recorded "
            f"when it was exported (ledger event #{export.ledger_seq}); it was altered. "
            "Export again."
        )
    handle.seek(0)
    response = FileResponse(handle, content_type=media_type, as_attachment=True, filename=path.name)
    response["Digest"] = f"sha-256={expected}"
    return response
