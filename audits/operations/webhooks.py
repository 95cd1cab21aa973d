"""Outgoing webhooks on release state changes: who is told, what they receive, how it is
signed, and how each attempt is made and recorded.

A delivery is a POST of a JSON body with these headers:

    Content-Type: application/json
    Assay-Event: release.state_changed
    Assay-Delivery: <delivery id, also the body's "id": receivers deduplicate on it>
    Assay-Webhook-Id: <webhook id>
    Assay-Timestamp: <unix seconds when this attempt was signed>
    Assay-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>

Each attempt signs anew with a fresh timestamp over the same body, so a receiver can refuse
anything older than its window (five minutes is suggested) and still accept a late retry.
Delivery is at least once: a receiver may see a delivery id twice and must ignore the second.
"""

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone

from audits import dispatch, signals
from audits.models import Release
from audits.operations import webhook_secrets
from audits.operations.models import Webhook, WebhookDelivery

logger = logging.getLogger(__name__)

EVENT = "release.state_changed"
DELIVER_TASK = "operations.deliver_webhook"
SWEEP_TASK = "operations.sweep_webhook_deliveries"
USER_AGENT = "Assay-Webhooks/1"
# Longest wait between attempts. Celery keeps a countdown task unacknowledged in the worker, and
# Redis redelivers one older than its visibility timeout (an hour): stay well under it.
MAX_BACKOFF_SECONDS = 900


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def backoff_seconds(attempts_made: int) -> int:
    """Wait before the next attempt: 10 s, 20 s, 40 s … doubling, at most 15 minutes."""
    return min(10 * 2 ** max(attempts_made - 1, 0), MAX_BACKOFF_SECONDS)


# --- who is told, and what --------------------------------------------------------------------


@receiver(signals.release_state_changed, dispatch_uid="operations.webhooks")
def on_release_state_changed(sender, *, release_id, previous, state, reasons, **kwargs) -> None:
    """Sent after the change committed, from a request or a worker: a failure here must not
    turn a committed change into an error, so it is logged, never raised."""
    try:
        queue_deliveries(release_id=release_id, previous=previous, state=state, reasons=reasons)
    except Exception:
        logger.exception("could not queue webhook deliveries for release %s", release_id)


def queue_deliveries(*, release_id, previous: str, state: str, reasons: list) -> list:
    webhooks = [hook for hook in Webhook.objects.filter(is_active=True) if hook.wants(state)]
    if not webhooks:
        return []
    release = Release.objects.select_related("model_version", "policy").get(pk=release_id)
    with transaction.atomic():
        deliveries = [
            _new_delivery(hook, release, previous=previous, state=state, reasons=reasons)
            for hook in webhooks
        ]
        for delivery in deliveries:
            _enqueue_on_commit(delivery.pk)
    return deliveries


def _new_delivery(hook, release, *, previous, state, reasons) -> WebhookDelivery:
    delivery = WebhookDelivery(webhook=hook, release=release, event=EVENT)
    delivery.body = json.dumps(
        payload(delivery, release, previous=previous, state=state, reasons=reasons),
        sort_keys=True,
        separators=(",", ":"),
    )
    delivery.next_attempt_at = timezone.now()
    delivery.save()
    return delivery


def payload(delivery, release, *, previous: str, state: str, reasons: list) -> dict:
    model_version, policy = release.model_version, release.policy
    gate_path = f"/api/v1/releases/{release.pk}/gate/"
    return {
        "id": str(delivery.pk),
        "type": EVENT,
        "created_at": timezone.now().isoformat(timespec="seconds"),
        "release": {
            "id": str(release.pk),
            "purpose": release.purpose,
            "previous_state": previous,
            "state": state,
            "reasons": reasons,
            "gate_url": settings.ASSAY_PUBLIC_URL.rstrip("/") + gate_path,
        },
        "policy": {
            "id": str(policy.pk),
            "name": policy.name,
            "version": policy.version,
            "digest": release.policy_digest,
        },
        "model_version": {
            "id": str(model_version.pk),
            "family": model_version.family,
            "version": model_version.version,
            "weights_digest": model_version.weights_digest,
        },
    }


def _enqueue_on_commit(delivery_id, countdown: int | None = None) -> None:
    transaction.on_commit(lambda: enqueue(delivery_id, countdown=countdown))


def enqueue(delivery_id, countdown: int | None = None) -> None:
    dispatch.send_now(
        DELIVER_TASK, str(delivery_id), queue=settings.ASSAY_OPS_QUEUE, countdown=countdown
    )


# --- one attempt ------------------------------------------------------------------------------


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not an instruction: following it could send the signed body
    somewhere the admin never configured."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def claim(delivery_id) -> WebhookDelivery | None:
    """Compare-and-swap: the one process whose update moves next_attempt_at past the attempt
    makes it (a redelivered task or the sweeper find nothing due and return)."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.ASSAY_WEBHOOK_TIMEOUT + 60)
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=lease)
    if claimed != 1:
        return None
    return WebhookDelivery.objects.select_related("webhook").get(pk=delivery_id)


def attempt(delivery_id) -> WebhookDelivery | None:
    """Make the delivery's next attempt if it is due; record it; schedule a retry or give up."""
    delivery = claim(delivery_id)
    if delivery is None:
        return None
    started = time.monotonic()
    status_code, error = _post(delivery)
    entry = {
        "at": timezone.now().isoformat(timespec="milliseconds"),
        "status_code": status_code,
        "error": error,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
    }
    return _record(delivery, entry, succeeded=status_code is not None and 200 <= status_code < 300)


def _post(delivery: WebhookDelivery) -> tuple[int | None, str]:
    try:
        secret = webhook_secrets.decrypt(delivery.webhook.secret_encrypted)
    except webhook_secrets.SecretUnavailableError as exc:
        return None, str(exc)
    body = delivery.body.encode("utf-8")
    timestamp = int(time.time())
    request = urllib.request.Request(  # noqa: S310 - the URL's scheme is validated on create
        delivery.webhook.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Assay-Event": delivery.event,
            "Assay-Delivery": str(delivery.pk),
            "Assay-Webhook-Id": str(delivery.webhook_id),
            "Assay-Timestamp": str(timestamp),
            "Assay-Signature": signature(secret, timestamp, body),
        },
    )
    try:
        with _opener.open(request, timeout=settings.ASSAY_WEBHOOK_TIMEOUT) as response:
            response.read(1024)
            return response.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code} {exc.reason}"[:500]
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"[:500]


def _record(delivery: WebhookDelivery, entry: dict, *, succeeded: bool) -> WebhookDelivery:
    delivery.attempt_count += 1
    delivery.attempts = [*delivery.attempts, entry]
    delivery.last_status_code = entry["status_code"]
    delivery.last_error = entry["error"]
    now = timezone.now()
    retry_in = None
    if succeeded:
        delivery.status = WebhookDelivery.Status.SUCCEEDED
        delivery.finished_at, delivery.next_attempt_at = now, None
    elif delivery.attempt_count >= settings.ASSAY_WEBHOOK_MAX_ATTEMPTS:
        delivery.status = WebhookDelivery.Status.FAILED
        delivery.finished_at, delivery.next_attempt_at = now, None
        logger.warning(
            "webhook delivery %s to %s failed after %d attempts: %s",
            delivery.pk,
            delivery.webhook.url,
            delivery.attempt_count,
            entry["error"],
        )
    else:
        retry_in = backoff_seconds(delivery.attempt_count)
        delivery.next_attempt_at = now + timedelta(seconds=retry_in)
    with transaction.atomic():
        delivery.save()
        if retry_in is not None:
            _enqueue_on_commit(delivery.pk, countdown=retry_in)
    return delivery


# --- lost messages ----------------------------------------------------------------------------


def overdue(grace_seconds: int = 60, limit: int = 500) -> list:
    """Pending deliveries whose attempt is overdue (a message lost with a broker restart, a
    worker killed mid-attempt after its lease ran out)."""
    cutoff = timezone.now() - timedelta(seconds=grace_seconds)
    return list(
        WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=cutoff
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )


def redeliver(delivery: WebhookDelivery) -> WebhookDelivery:
    """An admin asks for another round of attempts (the receiver was down past the last one)."""
    with transaction.atomic():
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=WebhookDelivery.Status.PENDING,
            next_attempt_at=timezone.now(),
            finished_at=None,
        )
        _enqueue_on_commit(delivery.pk)
    delivery.refresh_from_db()
    return delivery
