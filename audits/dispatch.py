"""Hands work to the workers by task name, after the transaction that created it commits.

The record system never imports the microscope: it only knows the task names, so the web
process starts without torch and a worker on another machine can serve the queue.
"""

from django.conf import settings
from django.db import transaction

from audits import checkkinds

RUN_CHECK_TASK = "interp_jobs.run_check"
COMPUTE_DIGESTS_TASK = "interp_jobs.compute_model_digests"
VALIDATE_LENS_TASK = "interp_jobs.validate_lens"
TRAIN_LENS_TASK = "interp_jobs.train_lens"


def send_now(task_name: str, object_id: str, *, extra_args: list | None = None, **options) -> None:
    """Send a task at once, outside any transaction (the worker's own follow-ups)."""
    from config.celery import app  # late: only needed at enqueue time

    # A fresh connection per enqueue reads the broker settings as they are now; enqueues are
    # rare (one per check run), so the pool would save nothing worth its staleness.
    with app.connection_for_write() as connection:
        app.send_task(
            task_name,
            args=[object_id, *(extra_args or [])],
            connection=connection,
            **{name: value for name, value in options.items() if value is not None},
        )


def check_run_options(kind: str) -> dict:
    """Queue and time limits of a check kind's task."""
    spec = checkkinds.get(kind)
    return {
        "queue": "gpu" if spec.heavy and settings.ASSAY_GPU_QUEUE else "cpu",
        "soft_time_limit": spec.soft_time_limit,
        "time_limit": spec.time_limit,
    }


def enqueue_check_run(run_id, kind: str) -> None:
    options = check_run_options(kind)
    transaction.on_commit(lambda: send_now(RUN_CHECK_TASK, str(run_id), **options))


def enqueue_model_digests(model_version_id) -> None:
    transaction.on_commit(lambda: send_now(COMPUTE_DIGESTS_TASK, str(model_version_id)))


def enqueue_lens_validation(lens_id) -> None:
    transaction.on_commit(lambda: send_now(VALIDATE_LENS_TASK, str(lens_id)))


def enqueue_lens_training(lens_id) -> None:
    queue = "gpu" if settings.ASSAY_GPU_QUEUE else "cpu"
    transaction.on_commit(lambda: send_now(TRAIN_LENS_TASK, str(lens_id), queue=queue))
