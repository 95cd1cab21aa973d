"""Attacks by one account that wants to pass four-eyes alone: read another reviewer's API
token, register a key in their name, take over their account, or plant a sockpuppet reviewer.
Prevented: tokens are stored as digests and expire; a key is registered only with proof of
possession by the signed-in person. Detected: every account change is a ledger event, and the
gate answer and the ledger carry trust_warnings when one touched a counted approver after the
release opened. Revoking a key, deactivating a reviewer or removing their role withdraws their
approvals at once (fail closed)."""

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.contrib.auth.models import User
from django.utils import timezone
from knox.models import get_token_model
from rest_framework.test import APIClient

from audits import actions, current_actor
from audits.models import AuditEvent, Release
from audits.roles import Role, grant
from tests.audits.reviewers import decide, key_registration, register_key
from tests.security.conftest import gate


def _login(username: str, password: str) -> APIClient:
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": username, "password": password}, format="json"
    )
    assert response.status_code == 201, response.content
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    return client


def test_a_token_read_from_the_database_does_not_authenticate(personas):
    reviewer = _login("reviewer", "reviewer-pw-123456")
    assert reviewer.get("/api/v1/me/").status_code == 200
    stored = get_token_model().objects.get(user=personas.reviewer)
    for stolen in (stored.digest, stored.token_key):  # all the database holds
        thief = APIClient()
        thief.credentials(HTTP_AUTHORIZATION=f"Token {stolen}")
        assert thief.get("/api/v1/me/").status_code == 401


def test_an_expired_token_is_refused(personas):
    reviewer = _login("reviewer", "reviewer-pw-123456")
    get_token_model().objects.filter(user=personas.reviewer).update(
        expiry=timezone.now() - timedelta(seconds=1)
    )
    assert reviewer.get("/api/v1/me/").status_code == 401


def test_a_token_is_shown_once_and_its_creation_is_a_ledger_event(personas):
    _login("reviewer", "reviewer-pw-123456")
    event = AuditEvent.objects.filter(verb="user.token_created").last()
    assert (event.actor_label, event.data["user"]) == ("reviewer", "reviewer")
    listed = personas.client("admin").get("/api/v1/audit-events/?limit=500").json()["results"]
    assert all('token": "' not in str(e) for e in listed)


def test_an_admin_cannot_register_a_key_in_a_reviewers_name(personas):
    key = Ed25519PrivateKey.generate()
    # The admin makes a proof as if they were the reviewer, with their own challenge ...
    forged = key_registration(personas, "admin", key, as_user="reviewer")
    response = personas.client("admin").post("/api/v1/reviewer-keys/", forged, format="json")
    assert response.status_code == 400  # ... the proof names the registering person
    # ... or with a challenge the reviewer fetched: it is bound to the reviewer.
    borrowed = key_registration(personas, "reviewer", key, as_user="admin")
    response = personas.client("admin").post("/api/v1/reviewer-keys/", borrowed, format="json")
    assert response.status_code == 403
    assert not personas.reviewer.reviewer_keys.exists()


def test_a_key_without_proof_of_possession_is_refused(personas):
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    body = key_registration(personas, "reviewer", other)  # signed by another key
    body["public_key"] = key_registration(personas, "reviewer", key)["public_key"]
    response = personas.client("reviewer").post("/api/v1/reviewer-keys/", body, format="json")
    assert response.status_code == 400
    assert "proof of possession does not verify" in response.json()["detail"]


def test_taking_over_a_reviewers_account_to_approve_shows_a_trust_warning(
    personas, checked_release
):
    assert decide(personas, "reviewer", register_key(personas, "reviewer"), checked_release)
    # The admin resets reviewer2's password, signs in as them and approves.
    with current_actor.acting_as(personas.admin):
        personas.reviewer2.set_password("taken-over-pw-987654")
        personas.reviewer2.save()
    as_reviewer2 = _login("reviewer2", "taken-over-pw-987654")
    key = Ed25519PrivateKey.generate()
    challenge = as_reviewer2.get("/api/v1/reviewer-keys/challenge/").json()["challenge"]
    from audits import signing

    raw = signing.raw_public_key(key.public_key())
    message = signing.key_proof_message(
        username="reviewer2", key_id=signing.key_id(raw), challenge=challenge
    )
    registered = as_reviewer2.post(
        "/api/v1/reviewer-keys/",
        {
            "public_key": signing.b64(raw),
            "challenge": challenge,
            "proof": signing.b64(key.sign(message)),
        },
        format="json",
    )
    assert registered.status_code == 201
    assert decide(personas, "reviewer2", key, checked_release).status_code == 201
    answer = gate(personas, checked_release)
    assert answer["state"] == "approved"
    warned = {(w["reviewer"], w["verb"], w["by"]) for w in answer["trust_warnings"]}
    assert ("reviewer2", "user.password_changed", "admin") in warned
    recorded = AuditEvent.objects.filter(
        verb__in=("release.state_changed", "release.trust_warnings"),
        target_id=str(checked_release.pk),
    ).last()
    assert recorded.data["trust_warnings"]


def test_a_sockpuppet_granted_the_reviewer_role_after_opening_shows_a_trust_warning(
    personas, checked_release
):
    assert decide(personas, "reviewer", register_key(personas, "reviewer"), checked_release)
    with current_actor.acting_as(personas.admin):
        sock = User.objects.create_user("sock", password="sock-pw-1234567")
        grant(sock, Role.REVIEWER)
    from tests.conftest import Personas

    extra = Personas(**{**personas.__dict__, "outsider": sock})
    assert decide(extra, "outsider", register_key(extra, "outsider"), checked_release)
    answer = gate(personas, checked_release)
    assert answer["state"] == "approved"
    assert {(w["reviewer"], w["verb"]) for w in answer["trust_warnings"]} >= {
        ("sock", "user.role_granted")
    }


def test_revoking_a_key_withdraws_the_approvals_it_signed(personas, approved_release):
    key = personas.reviewer.reviewer_keys.get()
    assert (
        personas.client("reviewer").post(f"/api/v1/reviewer-keys/{key.pk}/revoke/").status_code
        == 200
    )
    answer = gate(personas, approved_release)
    assert (answer["state"], answer["may_ship"]) == ("in_review", False)
    assert "revoked since" in answer["reasons"][0]["message"]
    listed = personas.client("auditor").get("/api/v1/releases/?state=approved").json()
    assert listed["count"] == 0  # the stored state followed too


@pytest.mark.parametrize("change", ["deactivate", "remove_role"])
def test_a_deactivated_reviewer_or_one_without_the_role_no_longer_counts(
    personas, approved_release, change
):
    with current_actor.acting_as(personas.admin):
        if change == "deactivate":
            personas.reviewer.is_active = False
            personas.reviewer.save()
        else:
            actions.remove_role(actor=personas.admin, user=personas.reviewer, role="reviewer")
    answer = gate(personas, approved_release)
    assert (answer["state"], answer["may_ship"]) == ("in_review", False)
    detail = personas.client("auditor").get(f"/api/v1/releases/{approved_release.pk}/").json()
    assert detail["state"] == "in_review"  # never a stale cached "approved"
    assert Release.objects.get(pk=approved_release.pk).state == "in_review"


def test_every_role_change_is_a_ledger_event_however_it_is_made(personas):
    from django.contrib.auth.models import Group

    user = User.objects.create_user("newcomer")
    reviewers = Group.objects.get(name="reviewer")
    reviewers.user_set.add(user)  # from the group's side, in a shell: no actor
    user.groups.clear()
    with current_actor.acting_as(personas.admin):
        user.is_superuser = True
        user.save()
    verbs = list(
        AuditEvent.objects.filter(target_type="user", target_id=str(user.pk))
        .order_by("seq")
        .values_list("verb", "actor_label")
    )
    assert verbs == [
        ("user.created", "system"),
        ("user.role_granted", "system"),
        ("user.role_removed", "system"),
        ("user.flag_changed", "admin"),
    ]


def test_a_script_in_a_signed_in_page_cannot_sign_without_the_password(
    client, personas, checked_release
):
    """The API refuses a decision made with only a browser session: the web UI's signing
    asks for the password again, and the API path must not skip that."""
    client.force_login(personas.reviewer)
    response = client.post(
        f"/api/v1/releases/{checked_release.pk}/decisions/",
        {"envelope": {}},
        content_type="application/json",
    )  # (the test client passes the CSRF check, so the refusal is this rule's)
    assert response.status_code == 403
    assert "it asks for your password again" in response.json()["detail"]
