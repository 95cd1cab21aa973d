"""The Django admin: every Assay record read-only (changes go through actions and the ledger),
and people management for Assay admins: add people, grant and remove roles, deactivate
accounts, reset passwords. Every account change is a ledger event (audits.account_signals),
made by the signed-in admin."""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import Group

from audits import gate, queries
from audits.models import (
    AuditEvent,
    CatalogFeature,
    CheckPolicy,
    CheckRun,
    Decision,
    Evidence,
    LedgerCheckpoint,
    Lens,
    ModelVersion,
    PolicyAssignment,
    Release,
    RequiredCheck,
    ReviewerKey,
)
from audits.roles import Role, has_role, roles_of

admin.site.site_header = "Assay administration"
admin.site.site_title = "Assay"


def _staff_with_role(request) -> bool:
    user = request.user
    return user.is_active and user.is_staff and bool(roles_of(user))


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_module_permission(self, request):
        return _staff_with_role(request)

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


@admin.register(PolicyAssignment)
class PolicyAssignmentAdmin(ReadOnlyAdmin):
    list_display = ["family", "policy_name", "assigned_by", "assigned_at"]


@admin.register(Release)
class ReleaseAdmin(ReadOnlyAdmin):
    list_display = ["id", "model_version", "policy", "purpose", "state", "submitter", "opened_at"]
    list_filter = ["state", "purpose"]
    readonly_fields = ["gate_answer"]

    @admin.display(description="gate answer (computed now)")
    def gate_answer(self, release) -> str:
        answer = gate.evaluate(queries.gate_facts(release))
        lines = [f"{answer.state}; may ship: {'yes' if answer.may_ship else 'no'}"]
        lines += [f"- {reason['message']}" for reason in answer.reasons + answer.blockers]
        lines += [f"- trust warning: {w['message']}" for w in answer.trust_warnings]
        return "\n".join(lines)


@admin.register(CheckRun)
class CheckRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "attempt", "status", "verdict", "release", "finished_at"]
    list_filter = ["status", "verdict", "kind"]


@admin.register(Evidence)
class EvidenceAdmin(ReadOnlyAdmin):
    list_display = ["title", "evidence_kind", "sha256", "size", "check_run"]


@admin.register(Decision)
class DecisionAdmin(ReadOnlyAdmin):
    list_display = ["decision", "check_key", "reviewer", "release", "signed_at", "recorded_at"]
    list_filter = ["decision"]


@admin.register(ReviewerKey)
class ReviewerKeyAdmin(ReadOnlyAdmin):
    list_display = ["key_id", "user", "label", "registered_at", "revoked_at"]


@admin.register(Lens)
class LensAdmin(ReadOnlyAdmin):
    list_display = ["name", "model_version", "status", "architecture", "hook_name", "d_sae"]


@admin.register(CatalogFeature)
class CatalogFeatureAdmin(ReadOnlyAdmin):
    list_display = ["lens", "index", "label", "risk_axis", "status", "reviewed_by"]
    list_filter = ["status", "risk_axis"]


@admin.register(LedgerCheckpoint)
class LedgerCheckpointAdmin(ReadOnlyAdmin):
    list_display = ["tree_size", "root_hash", "timestamp", "key_id"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["seq", "at", "actor_label", "verb", "target_type", "target_id"]
    list_filter = ["verb"]


# --- people ---------------------------------------------------------------------------------


def _is_assay_admin(request) -> bool:
    return request.user.is_active and request.user.is_staff and has_role(request.user, Role.ADMIN)


class PersonAdmin(UserAdmin):
    """People and their roles, for Assay admins. Roles are the groups; an account is never
    deleted (its signatures and ledger events name it), only deactivated."""

    list_display = ["username", "first_name", "last_name", "email", "is_active", "roles"]
    list_filter = ["is_active", "groups"]
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Person", {"fields": ("first_name", "last_name", "email")}),
        ("Access", {"fields": ("is_active", "is_staff", "groups")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    readonly_fields = ["last_login", "date_joined"]

    @admin.display(description="roles")
    def roles(self, user) -> str:
        return ", ".join(sorted(roles_of(user))) or "-"

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "groups":  # roles only
            kwargs["queryset"] = Group.objects.filter(name__in=[r.value for r in Role])
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def has_module_permission(self, request):
        return _is_assay_admin(request) or request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return self.has_module_permission(request)

    def has_add_permission(self, request):
        return self.has_module_permission(request)

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False  # an Assay admin cannot take over a superuser's account
        return self.has_module_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False


admin.site.unregister(get_user_model())
admin.site.unregister(Group)
admin.site.register(get_user_model(), PersonAdmin)
