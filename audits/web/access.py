"""Who may see and do what in the UI: the same rules as the API (audits.api.permissions) and
the records' own rules (Release.may_be_managed_by, queries.may_decide).

Every page needs a signed-in person with an Assay role other than pipeline (which may read gate
answers through the API only). Forms are shown only to those who may use them, and every POST
is checked again on the server, so a hand-made request is refused the same way.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import cast

from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied

from audits import queries
from audits.models import Release
from audits.roles import Role, has_role, roles_of

SUBMITTERS = (Role.SUBMITTER, Role.ADMIN)
REVIEWERS = (Role.REVIEWER, Role.ADMIN)
ADMINS = (Role.ADMIN,)
# Exporting a dossier changes nothing the gate reads; the dossier API lets these roles do it.
EXPORTERS = (Role.SUBMITTER, Role.REVIEWER, Role.ADMIN, Role.AUDITOR)
READERS = (Role.SUBMITTER, Role.REVIEWER, Role.ADMIN, Role.AUDITOR)


def may_read(user) -> bool:
    return has_role(user, *READERS)


def reader_required(view: Callable) -> Callable:
    """Signed in, with a role that reads everything; otherwise the login page or a 403."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not may_read(request.user):
            raise PermissionDenied(
                "your account has no Assay role that may use this interface; ask an admin to "
                "give you one (submitter, reviewer, admin or auditor)"
            )
        return view(request, *args, **kwargs)

    return wrapped


def signed_in(request) -> User:
    """The person behind a request that reader_required let through."""
    return cast(User, request.user)


def require(user, roles: tuple[Role, ...], what: str) -> None:
    if not has_role(user, *roles):
        names = ", ".join(role.value for role in roles)
        raise PermissionDenied(f"{what} needs one of the roles: {names}")


@dataclass(frozen=True)
class ReleaseAbilities:
    """What the viewer may do on one release (the forms a page shows)."""

    manage: bool  # withdraw, re-run, cancel
    sign: bool
    export: bool
    why_not_sign: str


def release_abilities(user, release: Release) -> ReleaseAbilities:
    withdrawn = release.withdrawn_at is not None
    manage = has_role(user, *SUBMITTERS) and release.may_be_managed_by(user) and not withdrawn
    why = ""
    if withdrawn:
        why = "the release was withdrawn"
    elif user.pk == release.submitter_id and not release.policy.submitter_may_approve:
        why = "you submitted this release; the four-eyes rule keeps you from deciding on it"
    elif not queries.may_decide(user, release):
        why = f"decisions under this policy need the role {release.policy.approver_role!r}"
    return ReleaseAbilities(
        manage=manage,
        sign=not why,
        export=has_role(user, *EXPORTERS),
        why_not_sign=why,
    )


def role_names(user) -> list[str]:
    return sorted(roles_of(user))
