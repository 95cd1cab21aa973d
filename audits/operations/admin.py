"""Webhooks and their delivery log in the Django admin, read-only (secrets never shown);
webhooks are created through the API, which shows the secret once."""

from django.contrib import admin

from audits.admin import ReadOnlyAdmin
from audits.operations.models import Webhook, WebhookDelivery
from audits.roles import Role, has_role


class AdminsAndAuditorsAdmin(ReadOnlyAdmin):
    def has_module_permission(self, request):
        return super().has_module_permission(request) and has_role(
            request.user, Role.ADMIN, Role.AUDITOR
        )


@admin.register(Webhook)
class WebhookAdmin(AdminsAndAuditorsAdmin):
    list_display = ("name", "url", "states", "is_active", "created_by", "created_at")
    exclude = ("secret_encrypted",)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(AdminsAndAuditorsAdmin):
    list_display = ("created_at", "webhook", "release", "event", "status", "attempt_count")
    list_filter = ("status", "event")
    readonly_fields = (
        "webhook",
        "release",
        "event",
        "status",
        "attempt_count",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "created_at",
        "finished_at",
        "body",
    )
