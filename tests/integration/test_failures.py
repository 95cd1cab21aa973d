"""Failure handling with real Redis and real worker processes: permanent failures, transient
retries, cancellation of a running check, a worker killed mid-check, and the reconciler."""

import os
import signal
import subprocess
import sys
import time

import pytest

from audits import actions
from audits.models import AuditEvent, CheckRun, Evidence
from tests.integration.test_workers import _use_redis
from tests.integration.workers import ROOT, celery_worker, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BIG = 3 << 30  # a sparse weights file: hashing it takes seconds, storing it takes nothing


def _model(personas, model_store, version="f1", big=False):
    folder = model_store / "tiny"
    if big:
        with (folder / "model-big.safetensors").open("wb") as handle:
            handle.truncate(BIG)
    model_version = actions.register_model_version(
        actor=personas.submitter, family="tiny", version=version, fmt="hf_dir",
        source_path=str(folder.resolve()))
    wait_until(lambda: type(model_version).objects.get(pk=model_version.pk).digests_ready, 120,
               lambda: "the worker never digested the model")
    model_version.refresh_from_db()
    return model_version


def _run_of(release) -> CheckRun:
    return CheckRun.objects.get(release=release)


def _until(run: CheckRun, condition, timeout=120, what="the run"):
    wait_until(lambda: condition(CheckRun.objects.get(pk=run.pk)), timeout,
               lambda: f"{what}: {CheckRun.objects.filter(pk=run.pk).values()[0]}")
    return CheckRun.objects.get(pk=run.pk)


@pytest.fixture
def redis_worker(broker, tmp_path):
    env = _use_redis()
    log = tmp_path / "worker.log"
    with celery_worker(env, log) as process:
        yield process, log


def test_a_permanent_error_fails_at_once_without_retry(redis_worker, personas, model_store,
                                                       policy):
    model_version = _model(personas, model_store)
    for item in (model_store / "tiny").iterdir():
        item.unlink()
    release, _ = actions.open_release(actor=personas.submitter, model_version=model_version,
                                      policy=policy)
    run = _until(_run_of(release), lambda r: r.is_finished)
    assert (run.status, run.deliveries) == ("errored", 1)
    assert "holds no weight files" in run.error
    assert not run.evidence.exists()


def test_a_transient_error_retries_with_backoff_then_succeeds(redis_worker, personas,
                                                              model_store, policy):
    model_version = _model(personas, model_store)
    marker = model_store / "tiny" / "model.safetensors.incomplete"
    marker.write_bytes(b"")
    release, _ = actions.open_release(actor=personas.submitter, model_version=model_version,
                                      policy=policy)
    run = _until(_run_of(release), lambda r: "will retry" in r.log, what="first attempt")
    assert run.status == "running"
    marker.unlink()  # the copy finished
    run = _until(run, lambda r: r.is_finished)
    assert (run.status, run.verdict) == ("succeeded", "pass")
    assert run.deliveries >= 2
    assert "still being written" in run.log


def test_cancelling_a_running_check_stops_it_and_records_who(redis_worker, personas,
                                                             model_store, policy):
    model_version = _model(personas, model_store, big=True)
    release, _ = actions.open_release(actor=personas.submitter, model_version=model_version,
                                      policy=policy)
    run = _until(_run_of(release), lambda r: r.status == "running" and r.progress > 0,
                 what="the run to start hashing")
    actions.cancel_check_run(actor=personas.admin, run=run)
    _, log = redis_worker
    wait_until(lambda: "was cancelled while running" in log.read_text(), 60,
               lambda: "the worker never noticed the cancellation")
    run.refresh_from_db()
    assert (run.status, run.cancelled_by) == ("cancelled", personas.admin)
    assert run.progress < 0.95 and not run.evidence.exists()


def _pool_children(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(line) for line in children.stdout.split()]


def test_a_worker_killed_mid_check_is_redelivered_and_completes_once(
    redis_worker, personas, model_store, policy
):
    process, _ = redis_worker
    model_version = _model(personas, model_store, big=True)
    release, _ = actions.open_release(actor=personas.submitter, model_version=model_version,
                                      policy=policy)
    run = _until(_run_of(release), lambda r: r.status == "running" and r.progress > 0.05,
                 what="the run to be mid-check")
    for child in _pool_children(process.pid):
        os.kill(child, signal.SIGKILL)  # the process doing the work dies without a word
    run = _until(run, lambda r: r.is_finished, timeout=180)
    assert (run.status, run.verdict) == ("succeeded", "pass")
    assert run.deliveries == 2
    assert Evidence.objects.filter(check_run=run).count() == 3  # no duplicate evidence
    starts = AuditEvent.objects.filter(verb="check_run.started", target_id=str(run.pk))
    assert [event.data["redelivered"] for event in starts] == [False, True]
    assert AuditEvent.objects.filter(verb="check_run.succeeded",
                                     target_id=str(run.pk)).count() == 1


def test_the_reconciler_re_enqueues_a_run_whose_message_was_lost(
    broker, personas, model_store, policy, tmp_path
):
    env = _use_redis()
    env.update({"ASSAY_RECONCILE_INTERVAL": "2", "ASSAY_QUEUED_DEADLINE": "1"})
    with celery_worker(env, tmp_path / "digest.log"):
        model_version = _model(personas, model_store)
    release, _ = actions.open_release(actor=personas.submitter, model_version=model_version,
                                      policy=policy)
    run = _run_of(release)
    time.sleep(1.5)
    # The next worker starts with --purge: the run's message is lost, the run stays queued.
    beat = subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "beat",
                             "-s", str(tmp_path / "beat-schedule"), "--loglevel=INFO"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        with celery_worker(env, tmp_path / "worker.log"):
            run = _until(run, lambda r: r.is_finished, timeout=120)
    finally:
        beat.terminate()
        beat.wait(timeout=30)
    assert (run.status, run.verdict) == ("succeeded", "pass")
    event = AuditEvent.objects.filter(verb="check_run.requeued", target_id=str(run.pk)).first()
    assert event is not None and "lost" in event.data["reason"]


def test_a_check_past_its_soft_time_limit_fails_with_the_reason(
    redis_worker, personas, model_store, policy, monkeypatch
):
    from dataclasses import replace

    from audits import checkkinds

    model_version = _model(personas, model_store, big=True)
    spec = checkkinds.get("weights_fingerprint")
    monkeypatch.setitem(checkkinds._registry, "weights_fingerprint",
                        replace(spec, soft_time_limit=1, time_limit=30))
    release, _ = actions.open_release(actor=personas.submitter, model_version=model_version,
                                      policy=policy)
    run = _until(_run_of(release), lambda r: r.is_finished)
    assert run.status == "errored"
    assert "exceeded its time limit of 1 s" in run.error
    assert not run.evidence.exists()
