"""Liveness, readiness and the probes' place under the production settings."""

import pytest
from django.test import Client

from audits.operations import health
from config.celery import app as celery_app
from tests.integration.workers import celery_worker, use_redis, wait_until

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_touching_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"].startswith("max-age=0")


def test_readyz_says_which_part_is_missing_and_not_how(client, settings, monkeypatch):
    monkeypatch.setattr(health, "_workers", health._WorkerCache())
    monkeypatch.setattr(health, "_workers_per_queue", lambda: {"cpu": 1})
    settings.ASSAY_GPU_QUEUE = True
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["evidence_store"]["ok"] is True
    assert body["checks"]["workers"] == {
        "ok": False,
        "queues": {"cpu": 1, "gpu": 0},
        "detail": "no worker consumes: gpu",
        "ms": body["checks"]["workers"]["ms"],
    }


def test_readyz_names_an_unreachable_broker_by_its_error_class_only(client, monkeypatch):
    def refuse():
        raise ConnectionRefusedError("redis at 10.0.0.7:6379 refused, password=hunter2")

    monkeypatch.setitem(health.CHECKS, "broker", refuse)
    monkeypatch.setattr(health, "_workers_per_queue", lambda: {"cpu": 1})
    monkeypatch.setattr(health, "_workers", health._WorkerCache())
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["error"] == "ConnectionRefusedError"
    assert "10.0.0.7" not in response.content.decode()


def test_readyz_fails_when_the_evidence_store_is_not_writable(
    client, settings, tmp_path, monkeypatch
):
    monkeypatch.setattr(health, "_workers_per_queue", lambda: {"cpu": 1})
    monkeypatch.setattr(health, "_workers", health._WorkerCache())
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the store should be")
    settings.ASSAY_EVIDENCE_ROOT = blocked
    response = client.get("/readyz")
    assert response.json()["checks"]["evidence_store"]["ok"] is False


def test_the_operations_queue_needs_a_worker_when_it_is_its_own(settings):
    settings.ASSAY_OPS_QUEUE = "ops"
    settings.ASSAY_GPU_QUEUE = False
    assert health.required_queues() == ["cpu", "ops"]
    settings.ASSAY_OPS_QUEUE = "cpu"
    assert health.required_queues() == ["cpu"]


def test_probes_are_exempt_from_the_https_redirect_and_nothing_else_is(settings):
    settings.SECURE_SSL_REDIRECT = True
    client = Client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 404  # no token configured: metrics are off
    redirected = client.get("/api/v1/me/")
    assert redirected.status_code == 301
    assert redirected["Location"].startswith("https://")


def test_operations_urls_are_mounted_at_the_site_root():
    from django.urls import resolve

    assert resolve("/healthz").func is health.healthz
    assert resolve("/readyz").func is health.readyz
    assert resolve("/api/v1/webhooks/").url_name == "webhook-list"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_readyz_is_ready_with_a_real_worker_on_redis(broker, settings, tmp_path):
    settings.ASSAY_GPU_QUEUE = False
    settings.ASSAY_OPS_QUEUE = "cpu"
    settings.ASSAY_READYZ_CACHE_SECONDS = 0
    settings.ASSAY_READYZ_WORKER_TIMEOUT = 5  # a loaded CI machine answers slowly
    settings.ASSAY_EVIDENCE_ROOT = tmp_path / "evidence"
    answers = []
    env = use_redis()
    # Remote control goes through the app's producer pool, made for the broker of its first
    # caller: drop any made for another broker earlier in this process (and this one after).
    _drop_pools()
    try:
        with celery_worker(env, tmp_path / "worker.log"):
            # As a probe does: ask again until ready (a loaded machine's worker answers late).
            wait_until(
                lambda: answers.append(Client().get("/readyz")) or answers[-1].status_code == 200,
                60,
                lambda: f"never ready: {answers[-1].json()}",
            )
    finally:
        _drop_pools()
    body = answers[-1].json()
    assert body["status"] == "ready"
    assert body["checks"]["workers"]["queues"] == {"cpu": 1}


def _drop_pools() -> None:
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
