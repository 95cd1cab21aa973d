"""API routes of the dossier (included under /api/v1/)."""

from django.urls import path

from audits.dossier import api

releases = api.ReleaseDossierViewSet.as_view({"get": "list", "post": "create"})
export = api.DossierExportViewSet.as_view({"get": "retrieve"})
pdf = api.DossierExportViewSet.as_view({"get": "pdf"})
bundle = api.DossierExportViewSet.as_view({"get": "bundle"})

urlpatterns = [
    path("releases/<uuid:release_id>/dossier/", releases, name="release-dossier"),
    path("dossiers/<uuid:export_id>/", export, name="dossier-export"),
    path("dossiers/<uuid:export_id>/dossier.pdf", pdf, name="dossier-export-pdf"),
    path("dossiers/<uuid:export_id>/bundle.zip", bundle, name="dossier-export-bundle"),
]
