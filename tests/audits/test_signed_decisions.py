"""Signed decisions: what is signed, who may sign, and when a signature counts."""

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audits import actions, signing, signing_client
from audits.models import AuditEvent, CheckRun, Decision
from audits.roles import Role, grant
from interp_jobs.tasks import run_check


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _register(personas, who: str) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    response = personas.client(who).post("/api/v1/reviewer-keys/",
                                         {"public_key": base64.b64encode(_raw(key)).decode()},
                                         format="json")
    assert response.status_code == 201, response.content
    return key


def _statement(personas, who, release, decision="approve", check=None, rationale="looks right"):
    query = f"decision={decision}" + (f"&check={check}" if check else "")
    answer = personas.client(who).get(f"/api/v1/releases/{release.pk}/statement/?{query}")
    assert answer.status_code == 200, answer.content
    key_id = answer.json()["statement"]["predicate"]["signer"]["key_id"]
    return signing_client.complete(answer.json()["statement"], key_id=key_id,
                                   rationale=rationale, conditions=["monitor refusals"],
                                   name=f"{who.title()} Person")


def _submit(personas, who, release, envelope):
    return personas.client(who).post(f"/api/v1/releases/{release.pk}/decisions/",
                                     {"envelope": envelope}, format="json")


def _decide(personas, who, key, release, decision="approve", check=None):
    statement = _statement(personas, who, release, decision, check)
    return _submit(personas, who, release, signing.sign_envelope(statement, key))


def _gate(personas, release):
    return personas.client("auditor").get(f"/api/v1/releases/{release.pk}/gate/").json()


@pytest.fixture
def checked_release(personas, model_version, policy):
    release, _ = actions.open_release(actor=personas.submitter, model_version=model_version,
                                      policy=policy)
    for run in release.check_runs.all():
        run_check.apply(args=[str(run.pk)])
    release.refresh_from_db()
    assert release.state == "in_review"
    return release


@pytest.fixture
def keys(personas):
    return {who: _register(personas, who) for who in ("reviewer", "reviewer2")}


def test_two_reviewers_approving_turns_the_gate_approved(personas, keys, checked_release):
    assert _decide(personas, "reviewer", keys["reviewer"], checked_release).status_code == 201
    assert _gate(personas, checked_release)["state"] == "in_review"
    assert _decide(personas, "reviewer2", keys["reviewer2"], checked_release).status_code == 201
    gate = _gate(personas, checked_release)
    assert gate == {"release": str(checked_release.pk), "state": "approved", "may_ship": True,
                    "reasons": []}
    assert AuditEvent.objects.filter(verb="release.state_changed",
                                     data__to="approved").count() == 1


def test_the_stored_envelope_verifies_with_an_independent_pae(personas, keys, checked_release):
    _decide(personas, "reviewer", keys["reviewer"], checked_release)
    envelope = Decision.objects.get().envelope
    payload = base64.b64decode(envelope["payload"])
    payload_type = envelope["payloadType"].encode()
    # PAE rebuilt from the DSSE specification, independent of audits.signing.
    pae = b"DSSEv1 " + str(len(payload_type)).encode() + b" " + payload_type + b" " + str(
        len(payload)).encode() + b" " + payload
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    Ed25519PublicKey.from_public_bytes(_raw(keys["reviewer"])).verify(signature, pae)
    statement = json.loads(payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"][0]["digest"]["sha256"] == (
        checked_release.model_version.weights_digest)
    predicate = statement["predicate"]
    assert predicate["policy"]["digest"] == checked_release.policy.digest
    run = checked_release.check_runs.get()
    assert predicate["checks"] == [{
        "key": "fingerprint", "kind": "weights_fingerprint", "blocking": True,
        "run_id": str(run.pk), "attempt": 1, "status": "succeeded", "verdict": "pass",
        "manifest_digest": run.manifest_digest}]
    assert predicate["decision"]["meaning"].startswith("approval for release")
    assert predicate["signer"]["name"] == "Reviewer Person"
    assert predicate["conditions"] == ["monitor refusals"]
    assert envelope["signatures"][0]["keyid"] == signing.key_id(_raw(keys["reviewer"]))


def test_key_ids_are_the_sha256_of_the_raw_key_and_pem_is_accepted(personas):
    import hashlib

    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    response = personas.client("reviewer").post("/api/v1/reviewer-keys/",
                                                {"public_key": pem.decode()}, format="json")
    assert response.status_code == 201
    assert response.json()["key_id"] == hashlib.sha256(_raw(key)).hexdigest()


@pytest.mark.parametrize("text", ["not base64!", base64.b64encode(b"short").decode(),
                                  "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"])
def test_bad_public_keys_are_refused(personas, text):
    response = personas.client("reviewer").post("/api/v1/reviewer-keys/", {"public_key": text},
                                                format="json")
    assert response.status_code == 400
    assert response.json()["detail"]


def test_the_submitter_cannot_approve_their_own_release(personas, checked_release):
    grant(personas.submitter, Role.REVIEWER)
    key = _register(personas, "submitter")
    response = _decide(personas, "submitter", key, checked_release)
    assert response.status_code == 403
    assert "four-eyes" in response.json()["detail"]
    assert not Decision.objects.exists()


def test_one_reviewer_signing_twice_counts_once(personas, keys, checked_release):
    for _ in range(2):
        assert _decide(personas, "reviewer", keys["reviewer"], checked_release).status_code == 201
    gate = _gate(personas, checked_release)
    assert gate["state"] == "in_review"
    assert gate["reasons"][0]["have"] == 1


def test_a_revoked_key_is_refused(personas, keys, checked_release):
    key_id = signing.key_id(_raw(keys["reviewer"]))
    revoked = personas.client("reviewer").post(f"/api/v1/reviewer-keys/{key_id}/revoke/")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    response = _decide(personas, "reviewer", keys["reviewer"], checked_release)
    assert response.status_code == 403
    assert "revoked" in response.json()["detail"]


def test_someone_elses_key_is_refused(personas, keys, checked_release):
    statement = _statement(personas, "reviewer2", checked_release)
    response = _submit(personas, "reviewer2", checked_release,
                       signing.sign_envelope(statement, keys["reviewer"]))
    assert response.status_code == 403


def test_approvals_made_before_new_evidence_do_not_count(personas, keys, checked_release):
    _decide(personas, "reviewer", keys["reviewer"], checked_release)
    _decide(personas, "reviewer2", keys["reviewer2"], checked_release)
    assert _gate(personas, checked_release)["state"] == "approved"
    run = actions.rerun_check(actor=personas.submitter, release=checked_release,
                              check_key="fingerprint")
    run_check.apply(args=[str(run.pk)])
    gate = _gate(personas, checked_release)
    assert gate["state"] == "in_review"
    assert "2 approval(s) do not count" in gate["reasons"][0]["message"]
    assert CheckRun.objects.filter(release=checked_release).count() == 2  # old evidence kept


def test_a_statement_fetched_before_new_evidence_is_refused(personas, keys, checked_release):
    stale = _statement(personas, "reviewer", checked_release)
    run = actions.rerun_check(actor=personas.submitter, release=checked_release,
                              check_key="fingerprint")
    run_check.apply(args=[str(run.pk)])
    response = _submit(personas, "reviewer", checked_release,
                       signing.sign_envelope(stale, keys["reviewer"]))
    assert response.status_code == 409
    assert "current evidence" in response.json()["detail"]


def test_an_envelope_replayed_for_another_release_is_refused(
    personas, keys, checked_release, model_version, policy
):
    other, _ = actions.open_release(actor=personas.submitter, model_version=model_version,
                                    policy=policy)
    for run in other.check_runs.all():
        run_check.apply(args=[str(run.pk)])
    statement = _statement(personas, "reviewer", checked_release)
    envelope = signing.sign_envelope(statement, keys["reviewer"])
    response = _submit(personas, "reviewer", other, envelope)
    assert response.status_code == 400
    assert "another release" in response.json()["detail"]
    assert _submit(personas, "reviewer", checked_release, envelope).status_code == 201
    assert _submit(personas, "reviewer", checked_release, envelope).status_code == 409


def test_a_forged_signature_is_refused_with_a_clear_error(personas, keys, checked_release):
    statement = _statement(personas, "reviewer", checked_release)
    envelope = signing.sign_envelope(statement, keys["reviewer"])
    statement["predicate"]["rationale"] = "changed after signing"
    envelope["payload"] = base64.b64encode(signing.canonical_json(statement)).decode()
    response = _submit(personas, "reviewer", checked_release, envelope)
    assert response.status_code == 400
    assert "does not verify" in response.json()["detail"]
    assert not Decision.objects.exists()


@pytest.mark.parametrize("envelope", [
    {}, {"payloadType": "x", "payload": "", "signatures": []}, "just a string",
    {"payloadType": "application/vnd.in-toto+json", "payload": "!!", "signatures": [
        {"keyid": "k", "sig": "AA=="}]},
])
def test_malformed_envelopes_are_400(personas, keys, checked_release, envelope):
    response = _submit(personas, "reviewer", checked_release, envelope)
    assert response.status_code == 400
    assert response.json()


def test_a_blocking_failure_needs_a_signed_waiver(personas, keys, checked_release,
                                                  model_store):
    (model_store / "tiny" / "model.safetensors").write_bytes(b"swapped")
    run = actions.rerun_check(actor=personas.submitter, release=checked_release,
                              check_key="fingerprint")
    run_check.apply(args=[str(run.pk)])
    _decide(personas, "reviewer", keys["reviewer"], checked_release)
    _decide(personas, "reviewer2", keys["reviewer2"], checked_release)
    assert [r["code"] for r in _gate(personas, checked_release)["reasons"]] == [
        "blocking_check_not_passed"]
    response = _decide(personas, "reviewer", keys["reviewer"], checked_release, "waive",
                       "fingerprint")
    assert response.status_code == 201, response.content
    assert _gate(personas, checked_release)["state"] == "approved"


def test_a_rejection_stands_over_approvals(personas, keys, checked_release):
    auditor_key = _register(personas, "admin")
    grant(personas.admin, Role.REVIEWER)
    _decide(personas, "reviewer", keys["reviewer"], checked_release)
    _decide(personas, "reviewer2", keys["reviewer2"], checked_release)
    _decide(personas, "admin", auditor_key, checked_release, "reject")
    assert _gate(personas, checked_release)["state"] == "rejected"


def test_auditors_and_outsiders_cannot_sign(personas, checked_release):
    assert personas.client("auditor").post(
        f"/api/v1/releases/{checked_release.pk}/decisions/", {"envelope": {}},
        format="json").status_code == 403
    assert personas.client("outsider").post(
        "/api/v1/reviewer-keys/", {"public_key": "x"}, format="json").status_code == 403
