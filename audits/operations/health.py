"""Liveness and readiness.

/healthz answers while the process can serve a request (no database, no broker): a restart is
the cure only when this fails. /readyz says whether this deployment can do its work now: the
database answers, the broker accepts a connection, every queue it needs has a worker
(Celery's remote control, with a short timeout), and the evidence store takes a write. Both are
public (probes carry no credentials), so they name what failed, never how (the error's class,
not its message; the message goes to the log).
"""

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)


@never_cache
@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


def required_queues() -> list[str]:
    """The queues this deployment sends work to: cpu always, gpu when model checks go there,
    and the operations queue (webhooks, the reconciler, checkpoints)."""
    queues = ["cpu"]
    if settings.ASSAY_GPU_QUEUE:
        queues.append("gpu")
    if settings.ASSAY_OPS_QUEUE not in queues:
        queues.append(settings.ASSAY_OPS_QUEUE)
    return queues


def check_database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {}


def check_broker() -> dict:
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
    return {}


class _WorkerCache:
    """Asking the workers is a broadcast every worker answers: a probe storm must not become a
    worker storm, so an answer is reused for ASSAY_READYZ_CACHE_SECONDS."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at = 0.0
        self.queues: dict[str, int] = {}

    def get(self) -> dict[str, int]:
        with self.lock:
            if time.monotonic() - self.at > settings.ASSAY_READYZ_CACHE_SECONDS:
                self.queues = _workers_per_queue()
                self.at = time.monotonic()
            return dict(self.queues)


def _workers_per_queue() -> dict[str, int]:
    from config.celery import app

    replies = app.control.inspect(timeout=settings.ASSAY_READYZ_WORKER_TIMEOUT).active_queues()
    counts: dict[str, int] = {}
    for queues in (replies or {}).values():
        for name in {queue["name"] for queue in queues}:
            counts[name] = counts.get(name, 0) + 1
    return counts


_workers = _WorkerCache()


def check_workers() -> dict:
    counts = _workers.get()
    queues = {name: counts.get(name, 0) for name in required_queues()}
    missing = [name for name, count in queues.items() if count == 0]
    result: dict = {"queues": queues}
    if missing:
        result["ok"] = False
        result["detail"] = f"no worker consumes: {', '.join(missing)}"
    return result


def check_evidence_store() -> dict:
    root = Path(settings.ASSAY_EVIDENCE_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    # A dot-name never collides with a content address (64 hex characters).
    with tempfile.NamedTemporaryFile(dir=root, prefix=".readyz-", delete=True) as probe:
        probe.write(b"ok")
        probe.flush()
    return {}


CHECKS: dict[str, Callable[[], dict]] = {
    "database": check_database,
    "broker": check_broker,
    "workers": check_workers,
    "evidence_store": check_evidence_store,
}


def _run(name: str, check: Callable[[], dict]) -> dict:
    started = time.monotonic()
    try:
        result = {"ok": True, **check()}
    except Exception as exc:
        logger.warning("readiness check %s failed: %s", name, exc, exc_info=True)
        result = {"ok": False, "error": type(exc).__name__}
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


@never_cache
@require_GET
def readyz(request):
    results = {name: _run(name, check) for name, check in CHECKS.items()}
    ready = all(result["ok"] for result in results.values())
    return JsonResponse(
        {"status": "ready" if ready else "not_ready", "checks": results},
        status=200 if ready else 503,
    )
