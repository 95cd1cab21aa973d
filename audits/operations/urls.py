"""Operational endpoints, mounted at the site root: probes, metrics, and the webhooks' API."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from audits.operations import api, health, metrics

router = SimpleRouter()
router.register("webhooks", api.WebhookViewSet, basename="webhook")
router.register("webhook-deliveries", api.WebhookDeliveryViewSet, basename="webhook-delivery")

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("api/v1/", include(router.urls)),
]
