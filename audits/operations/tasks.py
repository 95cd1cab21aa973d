"""Celery tasks of operations: webhook deliveries, the sweep that finds lost ones, and the purge
of expired API tokens. They take ids, re-read the rows, and return quietly when there is nothing
to do."""

import logging

from celery import shared_task

from audits.operations import webhooks

PURGE_TOKENS_TASK = "operations.purge_expired_tokens"

logger = logging.getLogger(__name__)


@shared_task(name=webhooks.DELIVER_TASK, acks_late=True, ignore_result=True)
def deliver_webhook(delivery_id: str) -> None:
    """One attempt (if it is due); a failed attempt schedules the next one itself, with
    backoff, until ASSAY_WEBHOOK_MAX_ATTEMPTS."""
    delivery = webhooks.attempt(delivery_id)
    if delivery is None:
        logger.info("webhook delivery %s has nothing due", delivery_id)


@shared_task(name=webhooks.SWEEP_TASK, ignore_result=True)
def sweep_webhook_deliveries() -> int:
    """Re-enqueue pending deliveries whose attempt is overdue (run by beat)."""
    due = webhooks.overdue()
    for delivery_id in due:
        webhooks.enqueue(delivery_id)
    if due:
        logger.info("re-enqueued %d overdue webhook deliveries", len(due))
    return len(due)


@shared_task(name=PURGE_TOKENS_TASK, ignore_result=True)
def purge_expired_tokens() -> int:
    """Delete expired API tokens (run by beat). Authentication refuses an expired token when it
    is presented (audits.api.authentication); this keeps the table from growing with the
    ones never presented again, which knox would otherwise sweep on every request."""
    from django.utils import timezone
    from knox.models import get_token_model

    deleted, _ = get_token_model().objects.filter(expiry__lt=timezone.now()).delete()
    if deleted:
        logger.info("deleted %d expired API tokens", deleted)
    return deleted
