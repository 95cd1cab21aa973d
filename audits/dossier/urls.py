"""API routes of the dossier (included under /api/v1/)."""

urlpatterns: list = []
