"""Attack: a submitter ships under a policy of their own choosing (a lenient one, one
approval), or hands the pipeline a release of something else. Prevented: releases take the
policy an admin assigned to the family; the gate names policy and weights and takes pins."""

from audits import actions
from audits.models import Release
from tests.audits.reviewers import decide, register_key
from tests.security.conftest import checked, gate


def _lenient(personas):
    draft = actions.create_policy(
        actor=personas.admin,
        name="lenient",
        approvals_required=1,
        checks=[{"key": "fingerprint", "kind": "weights_fingerprint", "blocking": False}],
    )
    return actions.publish_policy(actor=personas.admin, policy=draft)


def test_a_submitter_cannot_open_a_release_under_a_lenient_policy(personas, model_version, policy):
    lenient = _lenient(personas)
    response = personas.client("submitter").post(
        "/api/v1/releases/",
        {"model_version": str(model_version.pk), "policy": str(lenient.pk)},
        format="json",
    )
    assert response.status_code == 403
    assert "must be opened under policy integrity v1" in response.json()["detail"]
    assert not Release.objects.exists()


def test_an_evaluation_under_a_lenient_policy_can_never_ship(personas, model_version, policy):
    release, _ = actions.open_release(
        actor=personas.submitter,
        model_version=model_version,
        policy=_lenient(personas),
        purpose="evaluation",
    )
    checked(release)
    assert (
        decide(personas, "reviewer", register_key(personas, "reviewer"), release).status_code == 201
    )
    answer = gate(personas, release)
    assert answer["state"] == "approved"  # its own policy is satisfied ...
    assert answer["may_ship"] is False  # ... and still it never ships
    assert answer["blockers"][0]["code"] == "evaluation"


def test_a_newer_published_version_binds_new_releases_only(personas, model_version, policy):
    old, _ = actions.open_release(actor=personas.submitter, model_version=model_version)
    draft = actions.create_policy(
        actor=personas.admin,
        name="integrity",
        approvals_required=3,
        checks=[{"key": "fingerprint", "kind": "weights_fingerprint"}],
    )
    newer = actions.publish_policy(actor=personas.admin, policy=draft)
    new, _ = actions.open_release(actor=personas.submitter, model_version=model_version)
    assert (old.policy_id, new.policy_id) == (policy.pk, newer.pk)
    refused = personas.client("submitter").post(
        "/api/v1/releases/",
        {"model_version": str(model_version.pk), "policy": str(policy.pk)},
        format="json",
    )
    assert refused.status_code == 403  # the superseded version cannot be chosen either


def test_a_family_without_an_assigned_policy_cannot_open_releases(personas, model_version):
    response = personas.client("submitter").post(
        "/api/v1/releases/", {"model_version": str(model_version.pk)}, format="json"
    )
    assert response.status_code == 409
    assert "no published policy is assigned" in response.json()["detail"]


def test_a_pipeline_pinning_another_policy_or_weights_is_told_no(personas, approved_release):
    answer = gate(personas, approved_release)
    assert answer["policy"]["digest"] == approved_release.policy_digest
    weights = approved_release.model_version.weights_digest
    assert answer["model_version"]["weights_digest"] == weights
    pinned = gate(
        personas,
        approved_release,
        f"?policy_digest={answer['policy']['digest']}&weights_digest={weights}",
    )
    assert pinned["may_ship"] is True
    wrong = gate(personas, approved_release, f"?weights_digest={'0' * 64}")
    assert wrong["may_ship"] is False
    assert wrong["state"] == "approved"
    assert [b["code"] for b in wrong["blockers"]] == ["weights_digest_mismatch"]
    bad = personas.client("auditor").get(
        f"/api/v1/releases/{approved_release.pk}/gate/?policy_digest=nope"
    )
    assert bad.status_code == 400


def test_only_an_admin_assigns_policies_and_each_assignment_is_a_ledger_event(personas, policy):
    from audits.models import AuditEvent

    body = {"family": "tiny", "policy_name": "integrity"}
    assert (
        personas.client("submitter")
        .post("/api/v1/policy-assignments/", body, format="json")
        .status_code
        == 403
    )
    assert (
        personas.client("admin")
        .post("/api/v1/policy-assignments/", body, format="json")
        .status_code
        == 201
    )
    event = AuditEvent.objects.filter(verb="policy.assigned").last()
    assert (event.actor_label, event.data["family"]) == ("admin", "tiny")
