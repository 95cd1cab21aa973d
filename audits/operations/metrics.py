"""Prometheus metrics: the web process's own (django-prometheus: requests, latencies by view,
responses by status), and Assay's, collected when scraped.

Assay's figures are read from the records at scrape time, not counted in memory, so they are the
same whichever process (of several gunicorn workers, or none of the workers that ran the
checks) answers the scrape:

- assay_queue_depth{queue}: messages waiting in each Celery queue (Redis list lengths, or files
  of the embedded broker);
- assay_check_runs{kind,status}: runs per kind and status now (queued and running included);
- assay_check_runs_finished_total{kind,status,verdict}: finished runs (a finished run never
  changes, so these only grow): failures are status="errored" or verdict="fail";
- assay_check_run_duration_seconds{kind} and assay_check_queue_wait_seconds{kind}: histograms
  of finished runs' run time (started to finished) and wait (queued to started);
- assay_ledger_events, assay_ledger_checkpoint_tree_size, assay_ledger_last_checkpoint_age_seconds;
- assay_releases{state,purpose}, assay_evidence_files, assay_evidence_bytes;
- assay_webhook_deliveries{status}; assay_metrics_collect_errors (parts that failed this scrape).

/metrics answers only with `Authorization: Bearer <ASSAY_METRICS_TOKEN>`; without a configured
token it answers 404. The figures carry no names or ids, but the size and pace of a company's
model releases is not for the public.
"""

import hmac
import logging
import os
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from audits.models import CheckRun, Evidence, LedgerCheckpoint, LedgerHead, Release
from audits.operations.health import required_queues
from audits.operations.models import WebhookDelivery

logger = logging.getLogger(__name__)

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
# kombu's Redis transport keeps a queue's messages of priority p > 0 in "<queue>\x06\x16<p>".
REDIS_PRIORITY_STEPS = (0, 3, 6, 9)


# --- queue depth ------------------------------------------------------------------------------


def queue_depths(queues: list[str]) -> dict[str, int]:
    from config.celery import app

    url = app.conf.broker_url or ""
    if url.startswith(("redis://", "rediss://")):
        return _redis_depths(url, queues)
    if url.startswith("filesystem://"):
        return _filesystem_depths(queues)
    return {}


def _redis_depths(url: str, queues: list[str]) -> dict[str, int]:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        pipe = client.pipeline()
        for queue in queues:
            for step in REDIS_PRIORITY_STEPS:
                pipe.llen(queue if step == 0 else f"{queue}\x06\x16{step}")
        lengths = pipe.execute()
    finally:
        client.close()
    steps = len(REDIS_PRIORITY_STEPS)
    return {queue: sum(lengths[i * steps : (i + 1) * steps]) for i, queue in enumerate(queues)}


def _filesystem_depths(queues: list[str]) -> dict[str, int]:
    from config.celery import app

    folder = Path((app.conf.broker_transport_options or {}).get("data_folder_in", ""))
    if not folder.is_dir():
        return {}
    names = os.listdir(folder)
    return {queue: sum(name.endswith(f".{queue}.msg") for name in names) for queue in queues}


# --- the collector ----------------------------------------------------------------------------


class AssayCollector:
    """Reads the figures from the records (and the broker) at every scrape."""

    def collect(self):
        errors = GaugeMetricFamily(
            "assay_metrics_collect_errors", "parts of this scrape that could not be read"
        )
        failed = 0
        for part in (self._queues, self._check_runs, self._ledger, self._records):
            try:
                yield from part()
            except (DatabaseError, OSError, ConnectionError, TimeoutError) as exc:
                failed += 1
                logger.warning("metrics: %s failed: %s", part.__name__, exc)
            except Exception as exc:  # a broker client's own error classes
                failed += 1
                logger.warning("metrics: %s failed: %s", part.__name__, exc, exc_info=True)
        errors.add_metric([], failed)
        yield errors

    def _queues(self):
        depth = GaugeMetricFamily(
            "assay_queue_depth", "messages waiting in the queue", labels=["queue"]
        )
        for queue, count in sorted(queue_depths(required_queues()).items()):
            depth.add_metric([queue], count)
        yield depth

    def _check_runs(self):
        now_ = GaugeMetricFamily(
            "assay_check_runs", "check runs by kind and status", labels=["kind", "status"]
        )
        for row in CheckRun.objects.values("kind", "status").annotate(n=Count("pk")):
            now_.add_metric([row["kind"], row["status"]], row["n"])
        yield now_
        finished = CounterMetricFamily(
            "assay_check_runs_finished",
            "finished check runs (errored: the check could not run; verdict fail: the model "
            "failed it)",
            labels=["kind", "status", "verdict"],
        )
        rows = (
            CheckRun.objects.filter(status__in=CheckRun.FINISHED)
            .values("kind", "status", "verdict")
            .annotate(n=Count("pk"))
        )
        for row in rows:
            finished.add_metric([row["kind"], row["status"], row["verdict"] or "none"], row["n"])
        yield finished
        yield _histogram(
            "assay_check_run_duration_seconds",
            "run time of finished check runs, started to finished",
            "started_at",
            "finished_at",
        )
        yield _histogram(
            "assay_check_queue_wait_seconds",
            "wait of started check runs, queued to started",
            "queued_at",
            "started_at",
        )

    def _ledger(self):
        head = LedgerHead.objects.filter(pk=1).values_list("seq", flat=True).first() or 0
        yield _gauge("assay_ledger_events", "events in the ledger", head)
        latest = LedgerCheckpoint.objects.order_by("-tree_size").first()
        yield _gauge(
            "assay_ledger_checkpoint_tree_size",
            "ledger size at the latest signed checkpoint",
            latest.tree_size if latest else 0,
        )
        if latest is not None:
            age = (timezone.now() - latest.timestamp).total_seconds()
            yield _gauge(
                "assay_ledger_last_checkpoint_age_seconds",
                "seconds since the latest signed checkpoint",
                round(age, 3),
            )

    def _records(self):
        releases = GaugeMetricFamily(
            "assay_releases", "releases by state and purpose", labels=["state", "purpose"]
        )
        rows = Release.objects.values_list("state", "purpose").annotate(n=Count("pk"))
        for state, purpose, n in rows:
            releases.add_metric([state, purpose], n)
        yield releases
        evidence = Evidence.objects.aggregate(n=Count("pk"), size=Sum("size"))
        yield _gauge("assay_evidence_files", "evidence artifacts recorded", evidence["n"])
        yield _gauge("assay_evidence_bytes", "bytes of evidence recorded", evidence["size"] or 0)
        deliveries = GaugeMetricFamily(
            "assay_webhook_deliveries", "webhook deliveries by status", labels=["status"]
        )
        for status, n in WebhookDelivery.objects.values_list("status").annotate(n=Count("pk")):
            deliveries.add_metric([status], n)
        yield deliveries


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation)
    gauge.add_metric([], value)
    return gauge


def _histogram(name: str, documentation: str, start: str, end: str) -> HistogramMetricFamily:
    """A histogram over every finished run, computed by the database in one grouped query."""
    duration = ExpressionWrapper(F(end) - F(start), output_field=DurationField())
    buckets = {
        f"le_{bound}": Count("pk", filter=Q(duration__lte=timedelta(seconds=bound)))
        for bound in DURATION_BUCKETS
    }
    rows = (
        CheckRun.objects.filter(**{f"{start}__isnull": False, f"{end}__isnull": False})
        .annotate(duration=duration)
        .values("kind")
        .annotate(count=Count("pk"), total=Sum("duration"), **buckets)
        .order_by("kind")
    )
    family = HistogramMetricFamily(name, documentation, labels=["kind"])
    for row in rows:
        counts: dict = dict(row)
        cumulative = [(str(float(bound)), counts[f"le_{bound}"]) for bound in DURATION_BUCKETS]
        cumulative.append(("+Inf", row["count"]))
        total = row["total"].total_seconds() if row["total"] else 0.0
        family.add_metric([row["kind"]], cumulative, total)
    return family


_assay_registry = CollectorRegistry(auto_describe=False)
_assay_registry.register(AssayCollector())


def exposition() -> bytes:
    """This process's (or, under gunicorn, every worker's) django-prometheus metrics, then
    Assay's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        web = CollectorRegistry()
        multiprocess.MultiProcessCollector(web)
    else:
        web = REGISTRY
    return generate_latest(web) + generate_latest(_assay_registry)


def _authorized(request) -> bool:
    expected = settings.ASSAY_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8"), expected.encode("utf-8")
    )


@never_cache
@require_GET
def metrics(request):
    if not settings.ASSAY_METRICS_TOKEN:
        return JsonResponse(
            {"detail": "metrics are off: set ASSAY_METRICS_TOKEN (docs/operations.md)"},
            status=404,
        )
    if not _authorized(request):
        response = JsonResponse(
            {"detail": "send Authorization: Bearer <ASSAY_METRICS_TOKEN>"}, status=401
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
