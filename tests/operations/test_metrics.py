"""/metrics: closed to the public, and Assay's figures read from the records and the broker."""

import re

import pytest
import redis
from django.test import Client

from audits import ledger
from audits.operations import metrics
from tests.integration.workers import REDIS_URL, use_redis

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-for-tests"


@pytest.fixture
def metrics_on(settings):
    settings.ASSAY_METRICS_TOKEN = TOKEN


def scrape() -> str:
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return response.content.decode()


def sample(text: str, name: str, **labels) -> float:
    for line in text.splitlines():
        if not line.startswith(name + ("{" if labels else " ")):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == str(v) for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")


def test_metrics_are_off_without_a_token(client, settings):
    settings.ASSAY_METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Token {TOKEN}", f"Bearer {TOKEN}x"])
def test_metrics_refuse_anyone_without_the_token(client, metrics_on, header):
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.get("/metrics", **extra)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_metrics_count_check_runs_by_kind_with_their_durations(metrics_on, checked_release):
    text = scrape()
    assert sample(text, "assay_check_runs", kind="weights_fingerprint", status="succeeded") == 1
    assert (
        sample(
            text,
            "assay_check_runs_finished_total",
            kind="weights_fingerprint",
            status="succeeded",
            verdict="pass",
        )
        == 1
    )
    name = "assay_check_run_duration_seconds"
    assert sample(text, f"{name}_count", kind="weights_fingerprint") == 1
    assert sample(text, f"{name}_bucket", kind="weights_fingerprint", le="+Inf") == 1
    assert sample(text, f"{name}_bucket", kind="weights_fingerprint", le="3600.0") == 1
    assert sample(text, f"{name}_sum", kind="weights_fingerprint") >= 0
    assert sample(text, "assay_check_queue_wait_seconds_count", kind="weights_fingerprint") == 1
    assert sample(text, "assay_releases", state="in_review", purpose="release") == 1
    assert sample(text, "assay_evidence_files") >= 1
    assert sample(text, "assay_metrics_collect_errors") == 0


def test_metrics_report_the_ledger_and_its_last_checkpoint(metrics_on, checked_release):
    before = scrape()
    assert sample(before, "assay_ledger_events") == ledger.tree_size() > 0
    assert "assay_ledger_last_checkpoint_age_seconds " not in before
    point = ledger.checkpoint()
    after = scrape()
    assert sample(after, "assay_ledger_checkpoint_tree_size") == point.tree_size
    assert 0 <= sample(after, "assay_ledger_last_checkpoint_age_seconds") < 60


def test_metrics_include_the_web_process_request_counters(metrics_on, client):
    client.get("/healthz")
    assert "django_http_requests_total_by_view_transport_method_total" in scrape()


@pytest.mark.integration
def test_queue_depth_is_read_from_redis(metrics_on, broker, settings):
    settings.ASSAY_OPS_QUEUE = "ops"
    use_redis()
    client = redis.Redis.from_url(REDIS_URL)
    client.lpush("cpu", b"m1", b"m2")
    client.lpush("cpu\x06\x163", b"m3")  # a message of priority 3
    client.lpush("ops", b"m4")
    text = scrape()
    assert sample(text, "assay_queue_depth", queue="cpu") == 3
    assert sample(text, "assay_queue_depth", queue="ops") == 1
    client.flushdb()


def test_an_unreadable_part_is_counted_not_fatal(metrics_on, monkeypatch):
    def broken(queues):
        raise ConnectionError("broker down")

    monkeypatch.setattr(metrics, "queue_depths", broken)
    text = scrape()
    assert sample(text, "assay_metrics_collect_errors") == 1
    assert "assay_ledger_events" in text
