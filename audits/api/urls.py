from rest_framework.routers import DefaultRouter

from audits.api import views

router = DefaultRouter()
router.register("model-versions", views.ModelVersionViewSet, basename="model-version")
router.register("policies", views.PolicyViewSet, basename="policy")
router.register("releases", views.ReleaseViewSet, basename="release")
router.register("check-runs", views.CheckRunViewSet, basename="check-run")
router.register("evidence", views.EvidenceViewSet, basename="evidence")
router.register("audit-events", views.AuditEventViewSet, basename="audit-event")
router.register("reviewer-keys", views.ReviewerKeyViewSet, basename="reviewer-key")
router.register("ledger", views.LedgerViewSet, basename="ledger")
router.register("lenses", views.LensViewSet, basename="lens")
router.register("catalog-features", views.CatalogFeatureViewSet, basename="catalog-feature")

app_name = "api"
urlpatterns = [*router.urls]
