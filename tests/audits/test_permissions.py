"""Every role against every write endpoint, and reads for everyone with a role."""

import pytest

from audits import actions
from audits.models import AuditEvent, CheckPolicy, ModelVersion, Release
from tests.conftest import register_digested_model

# "submitter" registered the model version and opened the release; "submitter2" is another
# submitter, who may register and open their own but never manage someone else's.
ROLES = ["submitter", "submitter2", "reviewer", "admin", "auditor", "outsider", None]
ALLOWED = {
    "register_model": {"submitter", "submitter2", "admin"},
    "describe_model": {"submitter", "admin"},
    "create_policy": {"admin"},
    "edit_policy": {"admin"},
    "publish_policy": {"admin"},
    "assign_policy": {"admin"},
    "open_release": {"submitter", "submitter2", "admin"},
    "withdraw_release": {"submitter", "admin"},
    "cancel_check_run": {"submitter", "admin"},
    "rerun_check": {"submitter", "admin"},
    "register_key": {"reviewer", "admin"},
}


def _draft(personas, name="draft-policy"):
    return actions.create_policy(
        actor=personas.admin, name=name, checks=[{"key": "fp", "kind": "weights_fingerprint"}]
    )


def _write_request(endpoint, personas, model_store, model_version, policy, role):
    """(method, url, body) for one write endpoint, with the records it needs."""
    if endpoint == "register_model":
        (model_store / "tiny2").mkdir()
        (model_store / "tiny2" / "config.json").write_text("{}")
        return (
            "post",
            "/api/v1/model-versions/",
            {
                "family": "tiny",
                "version": "2",
                "format": "hf_dir",
                "source_path": str((model_store / "tiny2").resolve()),
            },
        )
    if endpoint == "describe_model":
        return "patch", f"/api/v1/model-versions/{model_version.pk}/", {"description": "d"}
    if endpoint == "create_policy":
        return (
            "post",
            "/api/v1/policies/",
            {"name": "p", "required_checks": [{"key": "fp", "kind": "weights_fingerprint"}]},
        )
    if endpoint == "edit_policy":
        return "patch", f"/api/v1/policies/{_draft(personas).pk}/", {"description": "x"}
    if endpoint == "publish_policy":
        return "post", f"/api/v1/policies/{_draft(personas).pk}/publish/", {}
    if endpoint == "open_release":
        return (
            "post",
            "/api/v1/releases/",
            {"model_version": str(model_version.pk), "policy": str(policy.pk)},
        )
    if endpoint == "assign_policy":
        return "post", "/api/v1/policy-assignments/", {"family": "tiny", "policy_name": "integrity"}
    if endpoint == "register_key":
        return "post", "/api/v1/reviewer-keys/", _key_body(personas, role)
    release, _ = actions.open_release(
        actor=personas.submitter, model_version=model_version, policy=policy
    )
    if endpoint == "rerun_check":
        from interp_jobs.worker.tasks import run_check

        run_check.apply(args=[str(release.check_runs.get().pk)])
        return "post", f"/api/v1/releases/{release.pk}/rerun/", {"check": "fingerprint"}
    if endpoint == "withdraw_release":
        return "post", f"/api/v1/releases/{release.pk}/withdraw/", {"reason": "not ready"}
    run = release.check_runs.get()
    return "post", f"/api/v1/check-runs/{run.pk}/cancel/", {}


def _key_body(personas, role) -> dict:
    """A key registration with a valid proof of possession where the role can fetch a
    challenge at all (everyone with a role can), so only the role decides the answer."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tests.audits.reviewers import key_registration

    key = Ed25519PrivateKey.generate()
    if role in (None, "outsider"):
        return {"public_key": "x", "challenge": "x", "proof": "x"}
    return key_registration(personas, role, key)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", sorted(ALLOWED))
def test_write_endpoints_follow_the_role_matrix(
    endpoint, role, personas, model_store, model_version, policy
):
    method, url, body = _write_request(endpoint, personas, model_store, model_version, policy, role)
    events_before = AuditEvent.objects.count()
    response = getattr(personas.client(role), method)(url, body, format="json")
    if role in ALLOWED[endpoint]:
        assert response.status_code in (200, 201), response.content
        assert AuditEvent.objects.count() > events_before
    else:
        expected = 401 if role is None else 403
        assert response.status_code == expected, response.content
        assert "detail" in response.json()
        assert AuditEvent.objects.count() == events_before


@pytest.mark.parametrize("role", ["submitter", "reviewer", "admin", "auditor"])
def test_every_role_can_read_every_collection(role, personas, model_version, policy):
    actions.open_release(actor=personas.submitter, model_version=model_version, policy=policy)
    client = personas.client(role)
    for collection in (
        "model-versions",
        "policies",
        "releases",
        "check-runs",
        "evidence",
        "audit-events",
    ):
        response = client.get(f"/api/v1/{collection}/")
        assert response.status_code == 200, (collection, response.content)
        assert response.json()["count"] >= (0 if collection == "evidence" else 1)


@pytest.mark.parametrize("role", ["outsider", None])
def test_people_without_a_role_read_nothing(role, personas, model_version):
    response = personas.client(role).get("/api/v1/model-versions/")
    assert response.status_code in (401, 403)
    assert "results" not in response.json()


def test_auditor_cannot_change_anything_even_by_put(personas, model_version):
    response = personas.client("auditor").put(
        f"/api/v1/model-versions/{model_version.pk}/", {"description": "x"}, format="json"
    )
    assert response.status_code in (403, 405)
    model_version.refresh_from_db()
    assert model_version.description == ""


def test_token_authentication_works_for_the_release_pipeline(personas, model_version, policy):
    response = personas.client(None).post(
        "/api/v1/auth/token/",
        {"username": "auditor", "password": "auditor-pw-123456"},
        format="json",
    )
    assert response.status_code == 201
    token = response.json()["token"]
    release, _ = actions.open_release(
        actor=personas.submitter, model_version=model_version, policy=policy
    )
    client = personas.client(None)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    gate = client.get(f"/api/v1/releases/{release.pk}/gate/")
    assert gate.status_code == 200
    assert gate.json()["state"] == "checking"


def test_counts_are_unchanged_by_refused_writes(personas, model_store, model_version, policy):
    before = (ModelVersion.objects.count(), CheckPolicy.objects.count(), Release.objects.count())
    register_digested_model(personas, model_store, version="3")
    client = personas.client("reviewer")
    client.post("/api/v1/policies/", {"name": "x", "required_checks": []}, format="json")
    client.post(
        "/api/v1/releases/",
        {"model_version": str(model_version.pk), "policy": str(policy.pk)},
        format="json",
    )
    after = (ModelVersion.objects.count(), CheckPolicy.objects.count(), Release.objects.count())
    assert after == (before[0] + 1, before[1], before[2])
