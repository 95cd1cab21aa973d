from django.urls import include, path
from rest_framework.routers import DefaultRouter

from audits.api import auth, schema, views  # noqa: F401 - schema registers extensions

router = DefaultRouter()
router.register("model-versions", views.ModelVersionViewSet, basename="model-version")
router.register("policies", views.PolicyViewSet, basename="policy")
router.register("policy-assignments", views.PolicyAssignmentViewSet, basename="policy-assignment")
router.register("releases", views.ReleaseViewSet, basename="release")
router.register("check-runs", views.CheckRunViewSet, basename="check-run")
router.register("evidence", views.EvidenceViewSet, basename="evidence")
router.register("audit-events", views.AuditEventViewSet, basename="audit-event")
router.register("reviewer-keys", views.ReviewerKeyViewSet, basename="reviewer-key")
router.register("ledger", views.LedgerViewSet, basename="ledger")
router.register("lenses", views.LensViewSet, basename="lens")
router.register("catalog-features", views.CatalogFeatureViewSet, basename="catalog-feature")

app_name = "api"
urlpatterns = [
    path("auth/token/", auth.TokenLoginView.as_view(), name="token-login"),
    path("auth/logout/", auth.LogoutView.as_view(), name="token-logout"),
    path("me/", auth.MeView.as_view(), name="me"),
    path("", include("audits.dossier.urls")),
    *router.urls,
]
