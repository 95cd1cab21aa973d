"""Outgoing webhooks for release pipelines, and the log of every delivery.

A webhook's secret signs its deliveries (HMAC-SHA256, audits.operations.webhooks). The server
must hold the secret to sign, so it cannot keep only a digest as it does for API tokens: it is
stored encrypted (audits.operations.webhook_secrets) under a key that is not in the database,
and shown once, when it is created or rotated.
"""

import uuid

from django.conf import settings
from django.db import models

from audits.models import Release


class Webhook(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    url = models.URLField(max_length=500)
    # Release states that trigger a delivery when a release enters them; empty: every change.
    states = models.JSONField(default=list, blank=True)
    secret_encrypted = models.TextField(editable=False)
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    secret_rotated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("name", "created_at")

    def __str__(self) -> str:
        return f"webhook {self.name} -> {self.url}"

    def wants(self, state: str) -> bool:
        return self.is_active and (not self.states or state in self.states)


class WebhookDelivery(models.Model):
    """One event for one webhook: the exact body sent, and every attempt to send it."""

    class Status(models.TextChoices):
        PENDING = "pending"  # waiting for its next attempt
        SUCCEEDED = "succeeded"  # the receiver answered 2xx
        FAILED = "failed"  # gave up after the last attempt

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    webhook = models.ForeignKey(Webhook, on_delete=models.PROTECT, related_name="deliveries")
    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="+")
    event = models.CharField(max_length=60)
    body = models.TextField()  # the JSON bytes sent, signed anew (fresh timestamp) per attempt
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempt_count = models.PositiveSmallIntegerField(default=0)
    # [{at, status_code, error, duration_ms}], one per attempt, oldest first.
    attempts = models.JSONField(default=list, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = (
            models.Index(fields=("status", "next_attempt_at")),
            models.Index(fields=("webhook", "created_at")),
        )

    def __str__(self) -> str:
        return f"{self.event} for {self.release_id} to {self.webhook_id} ({self.status})"
