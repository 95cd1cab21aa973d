"""API tokens: an expired token never gets in, and the housekeeping that deletes the expired
ones runs off the request path (knox swept every other token of the caller on every request:
one more query per API call, growing with the caller's tokens, measured on the gate's load)."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from knox.models import get_token_model
from rest_framework.test import APIClient

from audits.operations.tasks import PURGE_TOKENS_TASK, purge_expired_tokens

pytestmark = pytest.mark.django_db


def _client_with_token(user) -> APIClient:
    _, token = get_token_model().objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def _expired_tokens(user, count: int) -> None:
    for _ in range(count):
        stale, _ = get_token_model().objects.create(user=user)
        stale.expiry = timezone.now() - timedelta(hours=1)
        stale.save(update_fields=["expiry"])


def test_a_request_reads_only_the_presented_token_not_the_callers_other_tokens(personas):
    client = _client_with_token(personas.reviewer)
    _expired_tokens(personas.reviewer, 5)
    with CaptureQueriesContext(connection) as captured:
        assert client.get("/api/v1/me/").status_code == 200
    token_reads = [q["sql"] for q in captured if "knox_authtoken" in q["sql"]]
    assert len(token_reads) == 1, token_reads  # the lookup by token key, nothing per user


def test_an_expired_token_is_refused_and_deleted_when_presented(personas):
    client = _client_with_token(personas.reviewer)
    get_token_model().objects.filter(user=personas.reviewer).update(
        expiry=timezone.now() - timedelta(seconds=1)
    )
    assert client.get("/api/v1/me/").status_code == 401
    assert not get_token_model().objects.filter(user=personas.reviewer).exists()


def test_the_purge_deletes_expired_tokens_and_keeps_live_ones_working(personas):
    client = _client_with_token(personas.reviewer)
    _expired_tokens(personas.reviewer, 3)
    _expired_tokens(personas.admin, 2)
    assert purge_expired_tokens() == 5
    assert get_token_model().objects.filter(expiry__lt=timezone.now()).count() == 0
    assert client.get("/api/v1/me/").status_code == 200
    assert purge_expired_tokens() == 0  # idempotent


def test_beat_runs_the_purge_on_the_operations_queue():
    entry = settings.CELERY_BEAT_SCHEDULE["purge-expired-tokens"]
    assert entry["task"] == PURGE_TOKENS_TASK
    assert entry["options"]["queue"] == settings.ASSAY_OPS_QUEUE
