"""The Django admin shows every record read-only: changes go through actions and the ledger."""

from django.contrib import admin

from audits.models import (
    AuditEvent,
    CheckPolicy,
    CheckRun,
    Evidence,
    ModelVersion,
    Release,
    RequiredCheck,
)
from audits.roles import roles_of


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff and bool(roles_of(request.user))

    def has_view_permission(self, request, obj=None):
        return self.has_module_permission(request)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class RequiredCheckInline(admin.TabularInline):
    model = RequiredCheck
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = [
        "family",
        "version",
        "format",
        "digest_status",
        "registered_by",
        "registered_at",
    ]
    search_fields = ["family", "version"]


@admin.register(CheckPolicy)
class CheckPolicyAdmin(ReadOnlyAdmin):
    list_display = ["name", "version", "status", "approvals_required", "published_at"]
    inlines = [RequiredCheckInline]


@admin.register(Release)
class ReleaseAdmin(ReadOnlyAdmin):
    list_display = ["id", "model_version", "policy", "state", "submitter", "opened_at"]
    list_filter = ["state"]


@admin.register(CheckRun)
class CheckRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "attempt", "status", "verdict", "release", "finished_at"]
    list_filter = ["status", "verdict", "kind"]


@admin.register(Evidence)
class EvidenceAdmin(ReadOnlyAdmin):
    list_display = ["title", "evidence_kind", "sha256", "size", "check_run"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["seq", "at", "actor_label", "verb", "target_type", "target_id"]
    list_filter = ["verb"]
