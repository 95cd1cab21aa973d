"""Failure handling with real Redis and real worker processes: permanent failures, transient
retries, cancellation of a running check, a worker killed mid-check, the reconciler, and time
limits.

A check that must still be running when the test acts hashes a sparse terabyte file added after
registration: no machine hashes it before the test is done, so these tests do not depend on how
fast this machine hashes. The file is not a registered one, so such a run would fail
fingerprinting; tests that need a pass remove it before the run is delivered again."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import psycopg
import pytest
from django.db import connection

from audits import actions, checkkinds
from audits.models import AuditEvent, CheckRun, Evidence
from tests.integration.workers import (
    ROOT,
    celery_worker,
    database_url_for_workers,
    stop_process_group,
    use_redis,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

HUGE = 1 << 40  # sparse: costs no disk, and hashing it outlasts any test


def _model(personas, model_store, version="f1"):
    folder = model_store / "tiny"
    model_version = actions.register_model_version(
        actor=personas.submitter,
        family="tiny",
        version=version,
        fmt="hf_dir",
        source_path=str(folder.resolve()),
    )
    wait_until(
        lambda: type(model_version).objects.get(pk=model_version.pk).digests_ready,
        120,
        lambda: "the worker never digested the model",
    )
    model_version.refresh_from_db()
    return model_version


def _endless_file(model_store):
    """A weights file added after registration that keeps weights_fingerprint busy."""
    path = model_store / "tiny" / "model-huge.safetensors"
    with path.open("wb") as handle:
        handle.truncate(HUGE)
    return path


def _run_of(release) -> CheckRun:
    return CheckRun.objects.get(release=release)


def _until(run: CheckRun, condition, timeout=120, what="the run"):
    wait_until(
        lambda: condition(CheckRun.objects.get(pk=run.pk)),
        timeout,
        lambda: f"{what}: {CheckRun.objects.filter(pk=run.pk).values()[0]}",
    )
    return CheckRun.objects.get(pk=run.pk)


def _hashing_the_endless_file(run: CheckRun) -> bool:
    # Past the small files (a few hundred bytes in all): the worker is inside the huge one.
    return run.status == "running" and run.progress * HUGE > 1 << 20


def _limits(monkeypatch, soft: int, hard: int) -> None:
    """Time limits for weights_fingerprint, as the enqueuing process sends them."""
    spec = checkkinds.get("weights_fingerprint")
    monkeypatch.setitem(
        checkkinds._registry,
        "weights_fingerprint",
        replace(spec, soft_time_limit=soft, time_limit=hard),
    )


def _open(personas, model_version, policy):
    release, _ = actions.open_release(
        actor=personas.submitter, model_version=model_version, policy=policy
    )
    return _run_of(release)


@pytest.fixture
def redis_worker(broker, tmp_path):
    env = use_redis()
    log = tmp_path / "worker.log"
    with celery_worker(env, log) as process:
        yield process, log


def test_a_permanent_error_fails_at_once_without_retry(redis_worker, personas, model_store, policy):
    model_version = _model(personas, model_store)
    for item in (model_store / "tiny").iterdir():
        item.unlink()
    run = _until(_open(personas, model_version, policy), lambda r: r.is_finished)
    assert (run.status, run.deliveries) == ("errored", 1)
    assert "holds no weight files" in run.error
    assert not run.evidence.exists()


def test_a_transient_error_retries_with_backoff_then_succeeds(
    redis_worker, personas, model_store, policy
):
    model_version = _model(personas, model_store)
    marker = model_store / "tiny" / "model.safetensors.incomplete"
    marker.write_bytes(b"")
    run = _until(
        _open(personas, model_version, policy),
        lambda r: "will retry" in r.log,
        what="first attempt",
    )
    assert run.status == "running"
    marker.unlink()  # the copy finished
    run = _until(run, lambda r: r.is_finished)
    assert (run.status, run.verdict) == ("succeeded", "pass")
    assert run.deliveries >= 2
    assert "still being written" in run.log


def test_cancelling_a_running_check_stops_it_and_records_who(
    redis_worker, personas, model_store, policy
):
    model_version = _model(personas, model_store)
    _endless_file(model_store)
    run = _until(
        _open(personas, model_version, policy),
        _hashing_the_endless_file,
        what="the run to start hashing",
    )
    actions.cancel_check_run(actor=personas.admin, run=run)
    _, log = redis_worker
    wait_until(
        lambda: "was cancelled while running" in log.read_text(),
        60,
        lambda: "the worker never noticed the cancellation",
    )
    run.refresh_from_db()
    assert (run.status, run.cancelled_by) == ("cancelled", personas.admin)
    assert run.progress < 0.95
    assert not run.evidence.exists()


def _pool_children(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(line) for line in children.stdout.split()]


def test_a_worker_killed_mid_check_is_redelivered_and_completes_once(
    redis_worker, personas, model_store, policy
):
    process, _ = redis_worker
    model_version = _model(personas, model_store)
    endless = _endless_file(model_store)
    run = _until(
        _open(personas, model_version, policy),
        _hashing_the_endless_file,
        what="the run to be mid-check",
    )
    endless.unlink()  # the dying delivery keeps its open file; the next one will not see it
    for child in _pool_children(process.pid):
        os.kill(child, signal.SIGKILL)  # the process doing the work dies without a word
    run = _until(run, lambda r: r.is_finished, timeout=180)
    assert (run.status, run.verdict) == ("succeeded", "pass"), run.error
    assert run.deliveries == 2
    assert Evidence.objects.filter(check_run=run).count() == 3  # no duplicate evidence
    starts = AuditEvent.objects.filter(verb="check_run.started", target_id=str(run.pk))
    assert [event.data["redelivered"] for event in starts] == [False, True]
    assert AuditEvent.objects.filter(verb="check_run.succeeded", target_id=str(run.pk)).count() == 1


def test_the_reconciler_re_enqueues_a_run_whose_message_was_lost(
    broker, personas, model_store, policy, tmp_path
):
    env = use_redis()
    env.update({"ASSAY_RECONCILE_INTERVAL": "2", "ASSAY_QUEUED_DEADLINE": "1"})
    with celery_worker(env, tmp_path / "digest.log"):
        model_version = _model(personas, model_store)
    run = _open(personas, model_version, policy)
    time.sleep(1.5)
    # The next worker starts with --purge: the run's message is lost, the run stays queued.
    beat = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "beat",
            "-s",
            str(tmp_path / "beat-schedule"),
            "--loglevel=INFO",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with celery_worker(env, tmp_path / "worker.log"):
            run = _until(run, lambda r: r.is_finished, timeout=120)
    finally:
        stop_process_group(beat)
    assert (run.status, run.verdict) == ("succeeded", "pass")
    event = AuditEvent.objects.filter(verb="check_run.requeued", target_id=str(run.pk)).first()
    assert event is not None
    assert "lost" in event.data["reason"]


def test_a_check_past_its_soft_time_limit_fails_with_the_reason(
    redis_worker, personas, model_store, policy, monkeypatch
):
    model_version = _model(personas, model_store)
    _endless_file(model_store)
    _limits(monkeypatch, soft=1, hard=60)
    run = _until(_open(personas, model_version, policy), lambda r: r.is_finished)
    assert run.status == "errored"
    assert "exceeded its time limit of 1 s" in run.error
    assert not run.evidence.exists()
    assert AuditEvent.objects.filter(verb="check_run.errored", target_id=str(run.pk)).exists()


@pytest.fixture
def row_lock():
    """Another database session that holds a check run's row lock (SELECT … FOR UPDATE) for as
    long as the test says, as a long transaction elsewhere in the deployment would."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks held by another session: PostgreSQL")
    url = database_url_for_workers().replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url) as other:

        def hold(run: CheckRun, seconds: float) -> None:
            with other.transaction():
                other.execute("SELECT id FROM audits_checkrun WHERE id = %s FOR UPDATE", (run.pk,))
                time.sleep(seconds)

        yield hold


def test_a_soft_time_limit_inside_a_database_call_still_fails_the_run(
    redis_worker, personas, model_store, policy, monkeypatch, row_lock
):
    """The soft limit interrupts the worker while it waits on a lock inside a progress UPDATE:
    its connection is left mid-query, and the failure must be recorded on a fresh one."""
    model_version = _model(personas, model_store)
    _endless_file(model_store)
    _limits(monkeypatch, soft=2, hard=60)
    run = _until(_open(personas, model_version, policy), _hashing_the_endless_file)
    row_lock(run, seconds=5)  # the worker's next progress report waits here past its limit
    run = _until(run, lambda r: r.is_finished, timeout=60)
    assert run.status == "errored"
    assert "exceeded its time limit of 2 s" in run.error


def test_a_check_past_its_hard_time_limit_is_failed_by_the_worker(
    redis_worker, personas, model_store, policy, monkeypatch, row_lock
):
    """Held on a lock past the hard limit, the check cannot record its own soft-limit failure;
    the worker kills it and its parent process records the failure."""
    model_version = _model(personas, model_store)
    _endless_file(model_store)
    _limits(monkeypatch, soft=2, hard=5)
    run = _until(_open(personas, model_version, policy), _hashing_the_endless_file)
    row_lock(run, seconds=10)
    run = _until(run, lambda r: r.is_finished, timeout=60)
    assert run.status == "errored"
    assert "exceeded its hard time limit of 5 s" in run.error
    _, log = redis_worker
    assert "Hard time limit (5" in log.read_text()
