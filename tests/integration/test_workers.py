"""A real worker process runs weights_fingerprint to completion, on Redis and on the embedded
filesystem broker, with its evidence attached."""

import pytest

from audits import actions
from audits.models import CheckRun, Release
from tests.integration.workers import celery_worker, use_filesystem, use_redis, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _register_and_release(personas, model_store, policy) -> Release:
    """Register through the worker's digest job, then open a release once digests exist."""
    model_version = actions.register_model_version(
        actor=personas.submitter,
        family="tiny",
        version="w1",
        fmt="hf_dir",
        source_path=str((model_store / "tiny").resolve()),
    )
    wait_until(
        lambda: type(model_version).objects.get(pk=model_version.pk).digests_ready,
        60,
        lambda: "worker never computed the model digests",
    )
    model_version.refresh_from_db()
    release, _ = actions.open_release(
        actor=personas.submitter, model_version=model_version, policy=policy
    )
    return release


def _wait_for_checks(release: Release, timeout=90) -> list[CheckRun]:
    wait_until(
        lambda: all(run.is_finished for run in release.check_runs.all()),
        timeout,
        lambda: f"checks did not finish: {list(release.check_runs.values('status'))}",
    )
    return list(release.check_runs.all())


@pytest.mark.parametrize("transport", ["redis", "filesystem"])
def test_worker_runs_weights_fingerprint_to_completion(
    transport, broker, personas, model_store, policy, tmp_path
):
    env = use_redis() if transport == "redis" else use_filesystem(tmp_path / "broker")
    with celery_worker(env, tmp_path / "worker.log"):
        release = _register_and_release(personas, model_store, policy)
        (run,) = _wait_for_checks(release)
    assert (run.status, run.verdict) == ("succeeded", "pass"), run.error
    assert run.worker.startswith("test-")
    assert run.deliveries == 1
    assert sorted(run.evidence.values_list("title", flat=True)) == [
        "fingerprint.json",
        "fingerprint.svg",
        "manifest.json",
    ]
    for evidence in run.evidence.all():
        assert evidence.read_bytes()  # stored by the worker, hash checked on read
    release.refresh_from_db()
    assert release.state == "in_review"


def test_worker_reports_a_tampered_model_as_failed(broker, personas, model_store, policy, tmp_path):
    env = use_redis()
    with celery_worker(env, tmp_path / "worker.log"):
        release = _register_and_release(personas, model_store, policy)
        # The race is deliberate: the file may change before or after the worker starts hashing;
        # either way the weights on disk are no longer the registered ones, so wait for the run
        # first and tamper with a second release.
        _wait_for_checks(release)
        (model_store / "tiny" / "model.safetensors").write_bytes(b"swapped weights")
        second, _ = actions.open_release(
            actor=personas.submitter, model_version=release.model_version, policy=policy
        )
        (run,) = _wait_for_checks(second)
    assert run.verdict == "fail"
    assert run.metrics["mismatched_files"] == ["model.safetensors"]
