"""Celery tasks of the dossier export. They take ids, re-read the rows and return quietly when
there is nothing to do; audits.dossier.actions owns the export's lifecycle."""

import logging

from celery import shared_task

from audits.dossier import actions

logger = logging.getLogger(__name__)


@shared_task(
    name=actions.EXPORT_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=1800,
    time_limit=1900,
)
def export_dossier(export_id: str) -> None:
    """Build one export; a failure is recorded on the export with its reason (not retried:
    the records and the ledger do not change by waiting, and a new export is one POST away)."""
    try:
        actions.run_export(export_id=export_id)
    except Exception:
        logger.exception("dossier export %s failed", export_id)
