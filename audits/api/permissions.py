"""Who may do what through the API. Every role reads; writes need the named roles."""

from rest_framework.permissions import SAFE_METHODS, BasePermission

from audits.roles import Role, has_role, roles_of


class HasAnyRole(BasePermission):
    """The default: signed-in users with at least one Assay role may read. Writes are refused
    unless a view names the roles allowed to make them."""

    message = (
        "you need an Assay role (submitter, reviewer, admin, auditor or pipeline) to use this API"
    )

    def has_permission(self, request, view) -> bool:
        roles = roles_of(request.user)
        if not roles:
            return False
        if roles == {Role.PIPELINE.value}:
            return self._pipeline_may(request, view)
        if request.method in SAFE_METHODS:
            return True
        allowed = getattr(view, "write_roles", {}).get(getattr(view, "action", None), ())
        if not has_role(request.user, *allowed):
            self.message = (
                f"this action needs one of the roles: {', '.join(r.value for r in allowed)}"
                if allowed
                else "this action is not allowed for any role"
            )
            return False
        return True

    def _pipeline_may(self, request, view) -> bool:
        """A pipeline account reads gate answers (views list them in pipeline_actions)."""
        action = getattr(view, "action", None)
        if request.method in SAFE_METHODS and action in getattr(view, "pipeline_actions", ()):
            return True
        self.message = "a pipeline account may only read gate answers (GET …/releases/<id>/gate/)"
        return False


SUBMITTERS = (Role.SUBMITTER, Role.ADMIN)
ADMINS = (Role.ADMIN,)
REVIEWERS = (Role.REVIEWER, Role.ADMIN)
# The policy decides who may sign; these roles may try, and hear why not if they may not.
DECIDERS = (Role.REVIEWER, Role.SUBMITTER, Role.ADMIN)
