"""Roles are Django groups. A user's roles decide what they may do; see README, Roles."""

from enum import StrEnum

from django.contrib.auth.models import Group


class Role(StrEnum):
    SUBMITTER = "submitter"
    REVIEWER = "reviewer"
    ADMIN = "admin"
    AUDITOR = "auditor"
    # Release tooling: may read a release's gate answer and nothing else.
    PIPELINE = "pipeline"


def ensure_role_groups() -> None:
    for role in Role:
        Group.objects.get_or_create(name=role.value)


def roles_of(user) -> set[str]:
    """The person's Assay roles; none while the account is deactivated (their approvals then
    stop counting: eligibility is judged when the gate is asked, not when they signed)."""
    if not user or not user.is_authenticated or not user.is_active:
        return set()
    names = {group.name for group in user.groups.all()}
    if user.is_superuser:
        names.add(Role.ADMIN.value)
    return names & {role.value for role in Role}


def has_role(user, *roles: Role | str) -> bool:
    return bool(roles_of(user) & {str(role) for role in roles})


def grant(user, role: Role) -> None:
    group, _ = Group.objects.get_or_create(name=role.value)
    user.groups.add(group)
