"""People and their accounts: every change that bears on who may sign (roles, activation,
superuser status, passwords, API tokens) is a ledger event, whoever made it and however
(API, admin, shell). The ledger's role events are also what verify_ledger checks the live
role memberships against."""

from django.contrib.auth.models import Group
from django.db import transaction

from audits import ledger
from audits.actions.release_state import refresh_releases_decided_by
from audits.errors import ActionError, ConflictError
from audits.ledger import Verb
from audits.roles import Role


def _record(verb: Verb, *, actor, user, data: dict) -> None:
    with transaction.atomic():
        ledger.record(verb, actor=actor, target=user, data={"user": user.get_username(), **data})
        refresh_releases_decided_by(user)


def record_user_created(*, actor, user) -> None:
    _record(
        Verb.USER_CREATED,
        actor=actor,
        user=user,
        data={"is_active": user.is_active, "is_superuser": user.is_superuser},
    )


def record_role_change(*, actor, user, role: str, granted: bool) -> None:
    verb = Verb.USER_ROLE_GRANTED if granted else Verb.USER_ROLE_REMOVED
    _record(verb, actor=actor, user=user, data={"role": role})


def record_flags_changed(*, actor, user, before: dict, after: dict) -> None:
    """is_active / is_superuser changes (a superuser holds the admin role)."""
    for flag in ("is_active", "is_superuser"):
        if before[flag] != after[flag]:
            _record(
                Verb.USER_FLAG_CHANGED,
                actor=actor,
                user=user,
                data={"flag": flag, "from": before[flag], "to": after[flag]},
            )


def record_password_changed(*, actor, user) -> None:
    _record(Verb.USER_PASSWORD_CHANGED, actor=actor, user=user, data={})


def record_token_created(*, actor, user, token_id: str, expiry) -> None:
    _record(
        Verb.USER_TOKEN_CREATED,
        actor=actor,
        user=user,
        data={"token_id": token_id, "expiry": expiry.isoformat() if expiry else None},
    )


def _role(name: str) -> Role:
    try:
        return Role(name)
    except ValueError:
        known = ", ".join(role.value for role in Role)
        raise ActionError(f"unknown role {name!r}; roles are: {known}") from None


def grant_role(*, actor, user, role: str) -> None:
    """Add a person to a role (the membership signal records the event)."""
    group, _ = Group.objects.get_or_create(name=_role(role).value)
    if user.groups.filter(pk=group.pk).exists():
        raise ConflictError(f"{user.get_username()} already has the role {role}")
    user.groups.add(group)


def remove_role(*, actor, user, role: str) -> None:
    group = Group.objects.filter(name=_role(role).value).first()
    if group is None or not user.groups.filter(pk=group.pk).exists():
        raise ConflictError(f"{user.get_username()} does not have the role {role}")
    user.groups.remove(group)
