"""Celery tasks of operations: webhook deliveries and the sweep that finds lost ones. They take
ids, re-read the rows, and return quietly when there is nothing to do."""

import logging

from celery import shared_task

from audits.operations import webhooks

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
