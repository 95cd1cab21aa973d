"""The audit ledger: every state change writes one AuditEvent in the same transaction."""

from typing import Any

from django.db import models, transaction

from audits.models import AuditEvent


def actor_label(actor) -> str:
    if actor is None:
        return "system"
    return actor.get_username()


def record(
    verb: str, *, actor, target: models.Model, data: dict[str, Any] | None = None
) -> AuditEvent:
    if not transaction.get_connection().in_atomic_block:
        # An event outside the change's transaction could survive a rolled-back change.
        raise RuntimeError(f"ledger event {verb!r} must be written inside the change's transaction")
    return AuditEvent.objects.create(
        actor=actor if actor is not None and actor.pk else None,
        actor_label=actor_label(actor),
        verb=verb,
        target_type=target._meta.model_name,
        target_id=str(target.pk),
        data=data or {},
    )
