"""Finds check runs stuck in queued or running and puts them right, with a ledger event.

A run can get stuck when its message is lost (a broker restarted without persistence) or when
the worker died in a way the broker did not notice. Queued runs older than
ASSAY_QUEUED_DEADLINE are enqueued again; running runs past their hard time limit plus a grace
period are enqueued again while deliveries remain, and failed with a reason after that.
"""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from audits import checkkinds
from audits.actions import fail_check_run, requeue_stuck_run
from audits.models import CheckRun

GRACE = timedelta(minutes=5)
LOST_MESSAGE = "queued past the deadline; the message was lost"
LOST_WORKER = "running past its hard time limit; the worker was lost"


def _stuck_running(now) -> list[CheckRun]:
    stuck = []
    for run in CheckRun.objects.filter(status=CheckRun.Status.RUNNING):
        limit = timedelta(seconds=checkkinds.get(run.kind).time_limit) + GRACE
        if run.started_at and now - run.started_at > limit:
            stuck.append(run)
    return stuck


def reconcile() -> dict:
    now = timezone.now()
    counts = {"requeued": 0, "failed": 0}
    deadline = now - timedelta(seconds=settings.ASSAY_QUEUED_DEADLINE)
    for run in CheckRun.objects.filter(status=CheckRun.Status.QUEUED, queued_at__lt=deadline):
        counts["requeued"] += requeue_stuck_run(run=run, reason=LOST_MESSAGE)
    for run in _stuck_running(now):
        if run.deliveries <= settings.ASSAY_CHECK_MAX_RETRIES:
            counts["requeued"] += requeue_stuck_run(run=run, reason=LOST_WORKER)
        else:
            counts["failed"] += fail_check_run(
                run_id=run.pk,
                delivery=run.deliveries,
                reason=f"the run was delivered {run.deliveries} times and never finished; "
                "its worker keeps dying (out of memory?)",
            )
    return counts
