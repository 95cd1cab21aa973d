"""Signed decisions: what is signed, who may sign, and when a signature counts."""

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audits import actions, signing
from audits.models import AuditEvent, CheckRun, Decision
from audits.roles import Role, grant
from interp_jobs.worker.tasks import run_check
from tests.audits.reviewers import (
    decide,
    fetch_statement,
    key_registration,
    raw_public_key,
    register_key,
    submit,
)


def _gate(personas, release):
    return personas.client("auditor").get(f"/api/v1/releases/{release.pk}/gate/").json()


@pytest.fixture
def checked_release(personas, model_version, policy):
    release, _ = actions.open_release(
        actor=personas.submitter, model_version=model_version, policy=policy
    )
    for run in release.check_runs.all():
        run_check.apply(args=[str(run.pk)])
    release.refresh_from_db()
    assert release.state == "in_review"
    return release


@pytest.fixture
def keys(personas):
    return {who: register_key(personas, who) for who in ("reviewer", "reviewer2")}


def test_two_reviewers_approving_turns_the_gate_approved(personas, keys, checked_release):
    assert decide(personas, "reviewer", keys["reviewer"], checked_release).status_code == 201
    assert _gate(personas, checked_release)["state"] == "in_review"
    assert decide(personas, "reviewer2", keys["reviewer2"], checked_release).status_code == 201
    gate = _gate(personas, checked_release)
    assert (gate["release"], gate["state"], gate["may_ship"]) == (
        str(checked_release.pk),
        "approved",
        True,
    )
    assert gate["reasons"] == gate["blockers"] == gate["trust_warnings"] == []
    assert gate["policy"]["digest"] == checked_release.policy_digest
    assert gate["model_version"]["weights_digest"] == checked_release.model_version.weights_digest
    assert AuditEvent.objects.filter(verb="release.state_changed", data__to="approved").count() == 1


def test_the_stored_envelope_verifies_with_an_independent_pae(personas, keys, checked_release):
    decide(personas, "reviewer", keys["reviewer"], checked_release)
    envelope = Decision.objects.get().envelope
    payload = base64.b64decode(envelope["payload"])
    payload_type = envelope["payloadType"].encode()
    # PAE rebuilt from the DSSE specification, independent of audits.signing.
    pae = (
        b"DSSEv1 "
        + str(len(payload_type)).encode()
        + b" "
        + payload_type
        + b" "
        + str(len(payload)).encode()
        + b" "
        + payload
    )
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    Ed25519PublicKey.from_public_bytes(raw_public_key(keys["reviewer"])).verify(signature, pae)
    statement = json.loads(payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"][0]["digest"]["sha256"] == (
        checked_release.model_version.weights_digest
    )
    predicate = statement["predicate"]
    assert predicate["policy"]["digest"] == checked_release.policy.digest
    run = checked_release.check_runs.get()
    assert predicate["checks"] == [
        {
            "key": "fingerprint",
            "kind": "weights_fingerprint",
            "blocking": True,
            "run_id": str(run.pk),
            "attempt": 1,
            "status": "succeeded",
            "verdict": "pass",
            "manifest_digest": run.manifest_digest,
        }
    ]
    assert predicate["decision"]["meaning"].startswith("approval for release")
    assert predicate["signer"]["name"] == "Reviewer Person"
    assert predicate["conditions"] == ["monitor refusals"]
    assert envelope["signatures"][0]["keyid"] == signing.key_id(raw_public_key(keys["reviewer"]))


def test_key_ids_are_the_sha256_of_the_raw_key_and_pem_is_accepted(personas):
    import hashlib

    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    body = {**key_registration(personas, "reviewer", key), "public_key": pem.decode()}
    response = personas.client("reviewer").post("/api/v1/reviewer-keys/", body, format="json")
    assert response.status_code == 201
    assert response.json()["key_id"] == hashlib.sha256(raw_public_key(key)).hexdigest()


@pytest.mark.parametrize(
    "text",
    [
        "not base64!",
        base64.b64encode(b"short").decode(),
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
    ],
)
def test_bad_public_keys_are_refused(personas, text):
    body = {**key_registration(personas, "reviewer", Ed25519PrivateKey.generate())}
    response = personas.client("reviewer").post(
        "/api/v1/reviewer-keys/", {**body, "public_key": text}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["detail"]


def test_the_submitter_cannot_approve_their_own_release(personas, checked_release):
    grant(personas.submitter, Role.REVIEWER)
    key = register_key(personas, "submitter")
    response = decide(personas, "submitter", key, checked_release)
    assert response.status_code == 403
    assert "four-eyes" in response.json()["detail"]
    assert not Decision.objects.exists()


def test_one_reviewer_signing_twice_counts_once(personas, keys, checked_release):
    for _ in range(2):
        assert decide(personas, "reviewer", keys["reviewer"], checked_release).status_code == 201
    gate = _gate(personas, checked_release)
    assert gate["state"] == "in_review"
    assert gate["reasons"][0]["have"] == 1


def test_a_revoked_key_is_refused(personas, keys, checked_release):
    key_id = signing.key_id(raw_public_key(keys["reviewer"]))
    revoked = personas.client("reviewer").post(f"/api/v1/reviewer-keys/{key_id}/revoke/")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"]
    response = decide(personas, "reviewer", keys["reviewer"], checked_release)
    assert response.status_code == 403
    assert "revoked" in response.json()["detail"]


def test_someone_elses_key_is_refused(personas, keys, checked_release):
    statement = fetch_statement(personas, "reviewer2", checked_release)
    response = submit(
        personas, "reviewer2", checked_release, signing.sign_envelope(statement, keys["reviewer"])
    )
    assert response.status_code == 403


def test_approvals_made_before_new_evidence_do_not_count(personas, keys, checked_release):
    decide(personas, "reviewer", keys["reviewer"], checked_release)
    decide(personas, "reviewer2", keys["reviewer2"], checked_release)
    assert _gate(personas, checked_release)["state"] == "approved"
    run = actions.rerun_check(
        actor=personas.submitter, release=checked_release, check_key="fingerprint"
    )
    run_check.apply(args=[str(run.pk)])
    gate = _gate(personas, checked_release)
    assert gate["state"] == "in_review"
    assert "2 approval(s) do not count" in gate["reasons"][0]["message"]
    assert CheckRun.objects.filter(release=checked_release).count() == 2  # old evidence kept


def test_a_statement_fetched_before_new_evidence_is_refused(personas, keys, checked_release):
    stale = fetch_statement(personas, "reviewer", checked_release)
    run = actions.rerun_check(
        actor=personas.submitter, release=checked_release, check_key="fingerprint"
    )
    run_check.apply(args=[str(run.pk)])
    response = submit(
        personas, "reviewer", checked_release, signing.sign_envelope(stale, keys["reviewer"])
    )
    assert response.status_code == 409
    assert "current evidence" in response.json()["detail"]


def test_an_envelope_replayed_for_another_release_is_refused(
    personas, keys, checked_release, model_version, policy
):
    other, _ = actions.open_release(
        actor=personas.submitter, model_version=model_version, policy=policy
    )
    for run in other.check_runs.all():
        run_check.apply(args=[str(run.pk)])
    statement = fetch_statement(personas, "reviewer", checked_release)
    envelope = signing.sign_envelope(statement, keys["reviewer"])
    response = submit(personas, "reviewer", other, envelope)
    assert response.status_code == 400
    assert "another release" in response.json()["detail"]
    assert submit(personas, "reviewer", checked_release, envelope).status_code == 201
    assert submit(personas, "reviewer", checked_release, envelope).status_code == 409


def test_a_forged_signature_is_refused_with_a_clear_error(personas, keys, checked_release):
    statement = fetch_statement(personas, "reviewer", checked_release)
    envelope = signing.sign_envelope(statement, keys["reviewer"])
    statement["predicate"]["rationale"] = "changed after signing"
    envelope["payload"] = base64.b64encode(signing.canonical_json(statement)).decode()
    response = submit(personas, "reviewer", checked_release, envelope)
    assert response.status_code == 400
    assert "does not verify" in response.json()["detail"]
    assert not Decision.objects.exists()


@pytest.mark.parametrize(
    "envelope",
    [
        {},
        {"payloadType": "x", "payload": "", "signatures": []},
        "just a string",
        {
            "payloadType": "application/vnd.in-toto+json",
            "payload": "!!",
            "signatures": [{"keyid": "k", "sig": "AA=="}],
        },
    ],
)
def test_malformed_envelopes_are_400(personas, keys, checked_release, envelope):
    response = submit(personas, "reviewer", checked_release, envelope)
    assert response.status_code == 400
    assert response.json()


def test_a_blocking_failure_needs_a_signed_waiver(personas, keys, checked_release, model_store):
    (model_store / "tiny" / "model.safetensors").write_bytes(b"swapped")
    run = actions.rerun_check(
        actor=personas.submitter, release=checked_release, check_key="fingerprint"
    )
    run_check.apply(args=[str(run.pk)])
    decide(personas, "reviewer", keys["reviewer"], checked_release)
    decide(personas, "reviewer2", keys["reviewer2"], checked_release)
    assert [r["code"] for r in _gate(personas, checked_release)["reasons"]] == [
        "blocking_check_not_passed"
    ]
    response = decide(
        personas, "reviewer", keys["reviewer"], checked_release, "waive", "fingerprint"
    )
    assert response.status_code == 201, response.content
    assert _gate(personas, checked_release)["state"] == "approved"


def test_a_rejection_stands_over_approvals(personas, keys, checked_release):
    auditor_key = register_key(personas, "admin")
    grant(personas.admin, Role.REVIEWER)
    decide(personas, "reviewer", keys["reviewer"], checked_release)
    decide(personas, "reviewer2", keys["reviewer2"], checked_release)
    decide(personas, "admin", auditor_key, checked_release, "reject")
    assert _gate(personas, checked_release)["state"] == "rejected"


def test_auditors_and_outsiders_cannot_sign(personas, checked_release):
    assert (
        personas.client("auditor")
        .post(f"/api/v1/releases/{checked_release.pk}/decisions/", {"envelope": {}}, format="json")
        .status_code
        == 403
    )
    assert (
        personas.client("outsider")
        .post("/api/v1/reviewer-keys/", {"public_key": "x"}, format="json")
        .status_code
        == 403
    )
