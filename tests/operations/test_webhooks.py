"""Outgoing webhooks: who is told, what is signed, retries, the delivery log, and who may see
what. Deliveries go to a real HTTP receiver on loopback."""

import hashlib
import hmac
import json
from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from audits import actions, signals
from audits.models import Release
from audits.operations import webhook_secrets, webhooks
from audits.operations.models import Webhook, WebhookDelivery
from tests.operations.conftest import create_webhook
from tests.operations.test_operations_doc import receiver_snippet

pytestmark = pytest.mark.django_db


def _state_change(release, previous="checking", state="in_review"):
    signals.release_state_changed.send(
        sender=Release, release_id=release.pk, previous=previous, state=state, reasons=[]
    )


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    body = b'{"id":"x"}'
    expected = hmac.new(b"whsec_k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert webhooks.signature("whsec_k", 1700000000, body) == f"sha256={expected}"


def test_backoff_doubles_from_ten_seconds_and_stops_at_fifteen_minutes():
    assert [webhooks.backoff_seconds(n) for n in range(1, 9)] == [
        10,
        20,
        40,
        80,
        160,
        320,
        640,
        900,
    ]
    assert webhooks.backoff_seconds(30) == 900


def test_a_state_change_queues_one_delivery_per_interested_webhook(
    personas, checked_release, receiver, webhook_settings
):
    everything = create_webhook(personas, receiver.url)
    approvals_only = create_webhook(personas, receiver.url, states=["approved"])
    with mock.patch.object(webhooks, "enqueue") as enqueue:
        deliveries = webhooks.queue_deliveries(
            release_id=checked_release.pk, previous="checking", state="in_review", reasons=[]
        )
    assert [str(d.webhook_id) for d in deliveries] == [everything["id"]]
    assert approvals_only["id"] not in {str(d.webhook_id) for d in deliveries}
    body = json.loads(deliveries[0].body)
    assert body["type"] == "release.state_changed"
    assert body["id"] == str(deliveries[0].pk)
    assert body["release"]["state"] == "in_review"
    assert body["release"]["previous_state"] == "checking"
    assert body["release"]["gate_url"] == (
        f"https://assay.example.com/api/v1/releases/{checked_release.pk}/gate/"
    )
    assert body["policy"]["digest"] == checked_release.policy_digest
    assert body["model_version"]["weights_digest"] == checked_release.model_version.weights_digest
    enqueue.assert_not_called()  # after commit only; this test's transaction never commits


def test_the_receiver_verifies_a_delivery_with_the_documented_code(
    personas, checked_release, receiver, webhook_settings
):
    created = create_webhook(personas, receiver.url)
    [delivery] = webhooks.queue_deliveries(
        release_id=checked_release.pk, previous="checking", state="in_review", reasons=[]
    )
    delivered = webhooks.attempt(delivery.pk)
    assert delivered.status == WebhookDelivery.Status.SUCCEEDED
    assert delivered.attempts[0]["status_code"] == 204
    [request] = receiver.requests
    assert request.headers["Assay-Event"] == "release.state_changed"
    assert request.headers["Assay-Delivery"] == str(delivery.pk)
    assert request.headers["Assay-Webhook-Id"] == created["id"]
    assert request.body == delivery.body.encode()

    verify = receiver_snippet()
    seen: set[str] = set()
    assert verify(created["secret"], request.headers, request.body, seen)["id"] == str(delivery.pk)
    with pytest.raises(ValueError, match="already"):
        verify(created["secret"], request.headers, request.body, seen)  # a replay
    with pytest.raises(ValueError, match="signature"):
        verify("whsec_wrong", request.headers, request.body, set())
    with pytest.raises(ValueError, match="signature"):
        verify(created["secret"], request.headers, request.body.replace(b"in_", b"xx_"), set())


def test_a_replayed_delivery_outside_the_window_is_refused_by_the_documented_code(
    personas, checked_release, receiver, webhook_settings
):
    created = create_webhook(personas, receiver.url)
    [delivery] = webhooks.queue_deliveries(
        release_id=checked_release.pk, previous="checking", state="in_review", reasons=[]
    )
    webhooks.attempt(delivery.pk)
    [request] = receiver.requests
    later = int(request.headers["Assay-Timestamp"]) + 301
    with mock.patch("time.time", return_value=later), pytest.raises(ValueError, match="window"):
        receiver_snippet()(created["secret"], request.headers, request.body, set())


def test_a_failed_attempt_is_retried_with_backoff_then_given_up(
    personas, checked_release, receiver, webhook_settings
):
    webhook_settings.ASSAY_WEBHOOK_MAX_ATTEMPTS = 3
    create_webhook(personas, receiver.url)
    receiver.statuses = [500, 503, 500]
    [delivery] = webhooks.queue_deliveries(
        release_id=checked_release.pk, previous="checking", state="in_review", reasons=[]
    )
    before = timezone.now()
    first = webhooks.attempt(delivery.pk)
    assert first.status == WebhookDelivery.Status.PENDING
    assert first.attempt_count == 1
    assert first.last_status_code == 500
    assert before + timedelta(seconds=9) < first.next_attempt_at < before + timedelta(seconds=30)
    assert webhooks.attempt(delivery.pk) is None  # not due yet: nothing is sent
    for expected in (2, 3):
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
        delivery = webhooks.attempt(delivery.pk)
        assert delivery.attempt_count == expected
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert [a["status_code"] for a in delivery.attempts] == [500, 503, 500]
    assert len(receiver.requests) == 3
    # Every attempt was signed anew over the same body.
    assert len({r.body for r in receiver.requests}) == 1


def test_redirects_are_not_followed(personas, checked_release, receiver, webhook_settings):
    create_webhook(personas, receiver.url)
    receiver.redirect_to = "http://127.0.0.1:9/elsewhere"
    [delivery] = webhooks.queue_deliveries(
        release_id=checked_release.pk, previous="checking", state="in_review", reasons=[]
    )
    attempted = webhooks.attempt(delivery.pk)
    assert attempted.status == WebhookDelivery.Status.PENDING
    assert attempted.last_status_code == 307
    assert len(receiver.requests) == 1


def test_an_unreachable_receiver_is_an_attempt_with_the_reason(
    personas, checked_release, webhook_settings
):
    create_webhook(personas, "http://127.0.0.1:9/nothing-listens")
    [delivery] = webhooks.queue_deliveries(
        release_id=checked_release.pk, previous="checking", state="in_review", reasons=[]
    )
    attempted = webhooks.attempt(delivery.pk)
    assert attempted.last_status_code is None
    assert "refused" in attempted.last_error.lower() or "URLError" in attempted.last_error


def test_the_sweep_finds_deliveries_whose_message_was_lost(
    personas, checked_release, receiver, webhook_settings
):
    create_webhook(personas, receiver.url)
    [delivery] = webhooks.queue_deliveries(
        release_id=checked_release.pk, previous="checking", state="in_review", reasons=[]
    )
    assert webhooks.overdue() == []  # due now, but its message may still be on its way
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(minutes=5)
    )
    assert webhooks.overdue() == [delivery.pk]


def test_a_failing_receiver_of_the_signal_never_undoes_the_change(personas, checked_release):
    with mock.patch.object(webhooks, "queue_deliveries", side_effect=RuntimeError("boom")):
        _state_change(checked_release)  # logged, not raised


def test_secrets_are_shown_once_and_stored_encrypted(personas, receiver, webhook_settings):
    created = create_webhook(personas, receiver.url)
    assert created["secret"].startswith("whsec_")
    stored = Webhook.objects.get(pk=created["id"])
    assert created["secret"] not in stored.secret_encrypted
    assert webhook_secrets.decrypt(stored.secret_encrypted) == created["secret"]
    for who in ("admin", "auditor"):
        listing = personas.client(who).get("/api/v1/webhooks/").json()
        detail = personas.client(who).get(f"/api/v1/webhooks/{created['id']}/").json()
        assert "secret" not in listing["results"][0]
        assert "secret" not in detail
        assert created["secret"] not in json.dumps([listing, detail])


def test_rotating_a_secret_signs_later_deliveries_with_the_new_one(
    personas, checked_release, receiver, webhook_settings
):
    created = create_webhook(personas, receiver.url)
    rotated = personas.client("admin").post(f"/api/v1/webhooks/{created['id']}/rotate-secret/")
    assert rotated.status_code == 200
    new_secret = rotated.json()["secret"]
    assert new_secret != created["secret"]
    assert rotated.json()["secret_rotated_at"]
    [delivery] = webhooks.queue_deliveries(
        release_id=checked_release.pk, previous="checking", state="in_review", reasons=[]
    )
    webhooks.attempt(delivery.pk)
    [request] = receiver.requests
    verify = receiver_snippet()
    assert verify(new_secret, request.headers, request.body, set())
    with pytest.raises(ValueError, match="signature"):
        verify(created["secret"], request.headers, request.body, set())


def test_a_secret_that_cannot_be_decrypted_fails_the_attempt_with_the_fix(
    personas, checked_release, receiver, webhook_settings
):
    create_webhook(personas, receiver.url)
    webhook_settings.ASSAY_WEBHOOK_KEYS = [webhook_secrets.Fernet.generate_key().decode()]
    [delivery] = webhooks.queue_deliveries(
        release_id=checked_release.pk, previous="checking", state="in_review", reasons=[]
    )
    attempted = webhooks.attempt(delivery.pk)
    assert "rotate-secret" in attempted.last_error
    assert receiver.requests == []


def test_webhook_keys_rotate_without_losing_secrets(personas, receiver, webhook_settings):
    old = webhook_secrets.Fernet.generate_key().decode()
    webhook_settings.ASSAY_WEBHOOK_KEYS = [old]
    created = create_webhook(personas, receiver.url)
    webhook_settings.ASSAY_WEBHOOK_KEYS = [webhook_secrets.Fernet.generate_key().decode(), old]
    stored = Webhook.objects.get(pk=created["id"])
    assert webhook_secrets.decrypt(stored.secret_encrypted) == created["secret"]


@pytest.mark.parametrize(
    ("url", "allow_http", "problem"),
    [
        ("http://hooks.example.com/x", False, "https"),
        ("https://user:pw@hooks.example.com/x", False, "credentials"),
        ("ftp://hooks.example.com/x", True, "https"),
    ],
)
def test_unsafe_receiver_urls_are_refused(personas, settings, url, allow_http, problem):
    settings.ASSAY_WEBHOOK_ALLOW_HTTP = allow_http
    response = personas.client("admin").post(
        "/api/v1/webhooks/", {"name": "x", "url": url}, format="json"
    )
    assert response.status_code == 400
    assert problem in json.dumps(response.json())


def test_unknown_states_are_refused(personas):
    response = personas.client("admin").post(
        "/api/v1/webhooks/",
        {"name": "x", "url": "https://hooks.example.com/x", "states": ["shipped"]},
        format="json",
    )
    assert response.status_code == 400
    assert "states" in response.json()


@pytest.mark.parametrize("who", ["submitter", "reviewer", "auditor", "outsider", None])
def test_only_admins_manage_webhooks(personas, who):
    response = personas.client(who).post(
        "/api/v1/webhooks/", {"name": "x", "url": "https://hooks.example.com/x"}, format="json"
    )
    assert response.status_code in (401, 403)


@pytest.mark.parametrize(("who", "status"), [("admin", 200), ("auditor", 200), ("submitter", 403)])
def test_the_delivery_log_is_for_admins_and_auditors(personas, who, status):
    assert personas.client(who).get("/api/v1/webhook-deliveries/").status_code == status
    assert personas.client(who).get("/api/v1/webhooks/").status_code == status


def test_the_delivery_log_shows_every_attempt_and_filters_by_release(
    personas, checked_release, receiver, webhook_settings
):
    create_webhook(personas, receiver.url)
    receiver.statuses = [502]
    [delivery] = webhooks.queue_deliveries(
        release_id=checked_release.pk, previous="checking", state="in_review", reasons=[]
    )
    webhooks.attempt(delivery.pk)
    client = personas.client("auditor")
    listed = client.get(f"/api/v1/webhook-deliveries/?release={checked_release.pk}").json()
    [row] = listed["results"]
    assert row["id"] == str(delivery.pk)
    assert row["attempts"][0]["status_code"] == 502
    assert row["status"] == "pending"
    assert client.get("/api/v1/webhook-deliveries/?relase=x").status_code == 400
    assert client.get("/api/v1/webhook-deliveries/?status=lost").status_code == 400


def test_an_admin_redelivers_a_failed_delivery(
    personas, checked_release, receiver, webhook_settings
):
    webhook_settings.ASSAY_WEBHOOK_MAX_ATTEMPTS = 1
    create_webhook(personas, receiver.url)
    receiver.statuses = [500]
    [delivery] = webhooks.queue_deliveries(
        release_id=checked_release.pk, previous="checking", state="in_review", reasons=[]
    )
    assert webhooks.attempt(delivery.pk).status == WebhookDelivery.Status.FAILED
    assert (
        personas.client("auditor")
        .post(f"/api/v1/webhook-deliveries/{delivery.pk}/redeliver/")
        .status_code
        == 403
    )
    with mock.patch.object(webhooks, "enqueue"):
        response = personas.client("admin").post(
            f"/api/v1/webhook-deliveries/{delivery.pk}/redeliver/"
        )
    assert response.status_code == 200
    assert response.json()["status"] == "pending"
    assert webhooks.attempt(delivery.pk).status == WebhookDelivery.Status.SUCCEEDED


def test_deliveries_follow_the_real_state_changes_after_commit(
    personas, model_version, policy, receiver, webhook_settings, django_capture_on_commit_callbacks
):
    create_webhook(personas, receiver.url)
    with (
        mock.patch.object(webhooks, "enqueue") as enqueue,
        django_capture_on_commit_callbacks(execute=True),
    ):
        release, _ = actions.open_release(actor=personas.submitter, model_version=model_version)
        actions.withdraw_release(actor=personas.submitter, release=release, reason="superseded")
    states = [
        json.loads(d.body)["release"]["state"]
        for d in WebhookDelivery.objects.filter(release=release).order_by("created_at")
    ]
    assert states[-1] == "withdrawn"
    assert enqueue.call_count == len(states)
