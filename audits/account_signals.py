"""Wires Django's model signals for users, role groups and API tokens to the account actions,
so that a change made anywhere (API, admin, shell, createsuperuser) is a ledger event with the
person who made it (audits.current_actor)."""

from django.contrib.auth import get_user_model
from django.db.models.signals import m2m_changed, post_save, pre_save

from audits import current_actor
from audits.actions import accounts
from audits.roles import Role

ROLE_NAMES = {role.value for role in Role}
FLAGS = ("is_active", "is_superuser")


def _stored(user) -> dict | None:
    if user.pk is None:
        return None
    return type(user)._default_manager.filter(pk=user.pk).values("password", *FLAGS).first()


def before_user_saved(sender, instance, raw=False, **kwargs) -> None:
    if not raw:
        instance._assay_before = _stored(instance)


def after_user_saved(sender, instance, created, raw=False, **kwargs) -> None:
    if raw:
        return
    actor = current_actor.current()
    before = getattr(instance, "_assay_before", None)
    if created or before is None:
        accounts.record_user_created(actor=actor, user=instance)
        return
    after = {flag: getattr(instance, flag) for flag in FLAGS}
    accounts.record_flags_changed(actor=actor, user=instance, before=before, after=after)
    if before["password"] != instance.password:
        accounts.record_password_changed(actor=actor, user=instance)


def _role_groups(pk_set, model) -> dict:
    return dict(model._default_manager.filter(pk__in=pk_set or ()).values_list("pk", "name"))


def groups_changed(sender, instance, action, reverse, model, pk_set, **kwargs) -> None:
    if action == "pre_clear":
        instance._assay_cleared = (
            list(instance.groups.all()) if not reverse else list(instance.user_set.all())
        )
        return
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    granted = action == "post_add"
    for user, group_name in _pairs(instance, action, reverse, model, pk_set):
        if group_name in ROLE_NAMES:
            accounts.record_role_change(
                actor=current_actor.current(), user=user, role=group_name, granted=granted
            )


def _pairs(instance, action, reverse, model, pk_set):
    """(user, group name) for each membership the change touched."""
    if action == "post_clear":
        cleared = getattr(instance, "_assay_cleared", [])
        if reverse:
            return [(user, instance.name) for user in cleared]
        return [(instance, group.name) for group in cleared]
    if reverse:  # group.user_set.add(users)
        users = get_user_model()._default_manager.filter(pk__in=pk_set or ())
        return [(user, instance.name) for user in users]
    return [(instance, name) for name in _role_groups(pk_set, model).values()]


def token_saved(sender, instance, created, raw=False, **kwargs) -> None:
    if created and not raw:
        accounts.record_token_created(
            actor=current_actor.current(),
            user=instance.user,
            token_id=instance.digest[:16],
            expiry=instance.expiry,
        )


def connect() -> None:
    from knox.models import get_token_model

    user_model = get_user_model()
    pre_save.connect(before_user_saved, sender=user_model, dispatch_uid="assay_user_pre")
    post_save.connect(after_user_saved, sender=user_model, dispatch_uid="assay_user_post")
    m2m_changed.connect(
        groups_changed, sender=user_model.groups.through, dispatch_uid="assay_user_groups"
    )
    post_save.connect(token_saved, sender=get_token_model(), dispatch_uid="assay_token_post")
