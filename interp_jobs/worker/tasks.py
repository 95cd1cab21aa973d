"""Thin Celery tasks. They take ids, re-read the rows, and return quietly when there is nothing
to do; CheckRunTask owns the lifecycle of a check run."""

import logging
import time
from pathlib import Path

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.worker.request import Request
from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection

from audits import actions, dispatch
from audits.models import Lens, ModelVersion
from interp_jobs.checks.base import CheckCancelled
from interp_jobs.engine.errors import EngineError, PermanentEngineError
from interp_jobs.engine.loading.fingerprint import fingerprint_model
from interp_jobs.worker import catalog_follow_ups, lens_jobs, reconciler, runner

logger = logging.getLogger(__name__)

# Errors worth another delivery: the engine says so, or the database or broker blinked.
TRANSIENT_ERRORS = (EngineError, DatabaseError, InterfaceError, ConnectionError, TimeoutError)


# Progress is written at most this often (and whenever the stage changes): a check that reports
# per megabyte would otherwise spend its time on UPDATEs.
PROGRESS_INTERVAL = 0.5


class CheckRunRequest(Request):
    """Runs in the worker's parent process. A hard time limit kills the pool process that runs
    the check, so nobody there can record it. The parent cannot record it either: this callback
    runs before the kill, on the pool's timer thread, and a database write that waits on a lock
    would hold the kill back. It hands the recording to a task instead."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if soft or not self.args:
            return
        try:
            dispatch.send_now(
                RECORD_HARD_TIME_LIMIT_TASK,
                str(self.args[0]),
                extra_args=[timeout],
                queue=self.delivery_info.get("routing_key"),
            )
        except Exception:
            logger.exception(
                "could not hand over the hard time limit of check run %s", self.args[0]
            )


def _drop_connection() -> None:
    """Close this process's database connection so the next query opens a fresh one: the
    failure may have interrupted a query and left the connection unusable. (A task run inside
    a caller's transaction, as tests do, keeps it: closing would end that transaction.)"""
    if not connection.in_atomic_block:
        connection.close()


class CheckRunTask(Task):
    """Runs one CheckRun: claims it, runs its check, records evidence or a classified failure.

    A soft time limit arrives as an exception wherever the check happens to be, including the
    middle of a database call (progress, log). psycopg then leaves its connection mid-query, so
    every failure is recorded on a fresh connection."""

    acks_late = True
    reject_on_worker_lost = True
    Request = CheckRunRequest

    def run_check_run(self, run_id: str) -> None:
        delivery = None
        try:
            run = actions.start_check_run(run_id=run_id, worker=self.request.hostname or "local")
            if run is None:
                logger.info("check run %s has nothing to do", run_id)
                return
            delivery = run.deliveries
            outcome = runner.execute(run, self._progress(run_id, delivery), self._log(run_id))
            actions.complete_check_run(
                run_id=run_id,
                delivery=delivery,
                outcome=outcome,
                on_recorded=catalog_follow_ups.follow_up(outcome),
            )
        except CheckCancelled:
            logger.info("check run %s was cancelled while running", run_id)
        except Exception as exc:
            _drop_connection()
            self._handle_failure(run_id, delivery, exc)

    def _handle_failure(self, run_id: str, delivery: int | None, exc: Exception) -> None:
        if isinstance(exc, SoftTimeLimitExceeded):
            soft = (self.request.timelimit or (None, None))[1] or self.soft_time_limit
            reason = (
                f"the check exceeded its time limit of {soft} s; raise the limit or "
                "reduce the check's parameters"
            )
        elif isinstance(exc, PermanentEngineError):
            reason = str(exc)
        elif isinstance(exc, TRANSIENT_ERRORS) and self.request.retries < self.max_retries:
            actions.append_log(run_id=run_id, line=f"transient error, will retry: {exc}")
            raise self.retry(exc=exc, countdown=min(2**self.request.retries * 5, 300))
        else:
            logger.exception("check run %s failed", run_id, exc_info=exc)
            reason = f"internal error ({type(exc).__name__}): {exc}"
        actions.fail_check_run(run_id=run_id, delivery=delivery, reason=reason)

    @staticmethod
    def _progress(run_id: str, delivery: int):
        last_at, last_stage = [0.0], [""]

        def report(fraction: float, stage: str) -> None:
            now = time.monotonic()
            if stage == last_stage[0] and fraction < 1 and now - last_at[0] < PROGRESS_INTERVAL:
                return
            last_at[0], last_stage[0] = now, stage
            if not actions.report_progress(
                run_id=run_id, delivery=delivery, fraction=fraction, stage=stage
            ):
                raise CheckCancelled(run_id)

        return report

    @staticmethod
    def _log(run_id: str):
        return lambda line: actions.append_log(run_id=run_id, line=line)


@shared_task(
    bind=True,
    base=CheckRunTask,
    name="interp_jobs.run_check",
    max_retries=settings.ASSAY_CHECK_MAX_RETRIES,
    soft_time_limit=settings.ASSAY_CHECK_SOFT_TIME_LIMIT,
    time_limit=settings.ASSAY_CHECK_HARD_TIME_LIMIT,
)
def run_check(self, run_id: str) -> None:
    self.run_check_run(run_id)


RECORD_HARD_TIME_LIMIT_TASK = "interp_jobs.record_hard_time_limit"


@shared_task(name=RECORD_HARD_TIME_LIMIT_TASK, acks_late=True)
def record_hard_time_limit(run_id: str, limit: float) -> None:
    """The run's worker process was killed at its hard time limit: fail the run with the
    reason (a no-op when the run finished after all)."""
    actions.fail_check_run(
        run_id=run_id,
        delivery=None,
        reason=(
            f"the check exceeded its hard time limit of {limit:g} s and its worker process was "
            "stopped; raise the limit or reduce the check's parameters"
        ),
    )


@shared_task(name="interp_jobs.compute_model_digests", acks_late=True)
def compute_model_digests(model_version_id: str) -> None:
    model_version = ModelVersion.objects.filter(pk=model_version_id).first()
    if model_version is None or model_version.digest_status != ModelVersion.DigestStatus.PENDING:
        return
    try:
        fingerprint = fingerprint_model(
            Path(model_version.source_path),
            model_version.format,
            roots=settings.ASSAY_MODEL_ROOTS,  # a link out of the store is refused
        )
    except (PermanentEngineError, OSError) as exc:
        actions.record_model_digest_failure(model_version_id=model_version_id, reason=str(exc))
        return
    actions.record_model_digests(
        model_version_id=model_version_id,
        digests=actions.ModelDigests(
            weights_digest=fingerprint.weights_digest,
            tokenizer_digest=fingerprint.tokenizer_digest,
            config_digest=fingerprint.config_digest,
            file_digests=fingerprint.files,
        ),
    )


@shared_task(name="interp_jobs.validate_lens", acks_late=True)
def validate_lens(lens_id: str) -> None:
    """Load a registered lens, check it fits its model version, and record its facts."""
    lens = Lens.objects.select_related("model_version").filter(pk=lens_id).first()
    if lens is None or lens.status not in (Lens.Status.PENDING, Lens.Status.TRAINING):
        return
    try:
        facts = lens_jobs.inspect_lens(lens)
    except (EngineError, OSError) as exc:
        # This job is not retried, so even a transient error (files that moved while they
        # were checked) is recorded rather than left as a lens pending for ever.
        actions.record_lens_failed(lens_id=lens_id, reason=str(exc))
        return
    actions.record_lens_validated(lens_id=lens_id, facts=facts)


@shared_task(name="interp_jobs.reconcile_check_runs")
def reconcile_check_runs() -> dict:
    """Periodic (Celery beat): find runs stuck in queued or running and re-enqueue or fail
    them, each with a ledger event."""
    return reconciler.reconcile()


@shared_task(name="interp_jobs.sign_ledger_checkpoint")
def sign_ledger_checkpoint() -> int:
    """Periodic: sign a checkpoint of the ledger as it is now."""
    from audits import ledger

    return ledger.checkpoint().tree_size


@shared_task(
    name="interp_jobs.train_lens",
    acks_late=True,
    soft_time_limit=settings.ASSAY_CHECK_SOFT_TIME_LIMIT,
    time_limit=settings.ASSAY_CHECK_HARD_TIME_LIMIT,
)
def train_lens(lens_id: str) -> None:
    """Train a requested lens with SAELens's trainer, then validate and record it."""
    lens = Lens.objects.select_related("model_version").filter(pk=lens_id).first()
    if lens is None or lens.status != Lens.Status.TRAINING:
        return
    try:
        training = lens_jobs.train(lens)
        facts = lens_jobs.inspect_lens(lens)
    except (EngineError, OSError, SoftTimeLimitExceeded) as exc:
        actions.record_lens_failed(lens_id=lens_id, reason=f"training failed: {exc}")
        return
    actions.record_lens_validated(lens_id=lens_id, facts=facts, training=training)
