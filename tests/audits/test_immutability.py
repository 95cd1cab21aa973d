"""Identity fields and published policies cannot change, through the API or the ORM."""

import pytest

from audits import actions
from audits.models import (
    AppendOnlyError,
    AuditEvent,
    CheckPolicy,
    ImmutableFieldError,
    ModelVersion,
    RequiredCheck,
)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("family", "other"),
        ("version", "9"),
        ("source_path", "/tmp"),
        ("format", "gguf"),
        ("weights_digest", "0" * 64),
        ("registered_by", 1),
    ],
)
def test_model_version_identity_fields_refuse_changes_through_the_api(
    field, value, personas, model_version
):
    response = personas.client("submitter").patch(
        f"/api/v1/model-versions/{model_version.pk}/", {field: value}, format="json"
    )
    assert response.status_code == 400
    assert "immutable" in response.json()[field]
    stored = ModelVersion.objects.get(pk=model_version.pk)
    assert getattr(stored, field if field != "registered_by" else "registered_by_id") == getattr(
        model_version, field if field != "registered_by" else "registered_by_id"
    )


def test_model_version_identity_fields_refuse_changes_through_the_orm(model_version):
    model_version.family = "renamed"
    with pytest.raises(ImmutableFieldError):
        model_version.save()


def test_recorded_digests_are_write_once(model_version):
    model_version.weights_digest = "f" * 64
    with pytest.raises(ImmutableFieldError):
        model_version.save()


def test_description_of_a_model_version_may_change(personas, model_version):
    response = personas.client("submitter").patch(
        f"/api/v1/model-versions/{model_version.pk}/", {"description": "first SFT"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["description"] == "first SFT"


def test_published_policy_refuses_edits_with_409(personas, policy):
    client = personas.client("admin")
    response = client.patch(
        f"/api/v1/policies/{policy.pk}/", {"approvals_required": 1}, format="json"
    )
    assert response.status_code == 409
    assert "published" in response.json()["detail"]
    response = client.patch(
        f"/api/v1/policies/{policy.pk}/", {"required_checks": []}, format="json"
    )
    assert response.status_code == 409
    policy.refresh_from_db()
    assert policy.approvals_required == 2
    assert policy.required_checks.count() == 1
    assert policy.compute_digest() == policy.digest


def test_published_policy_cannot_be_published_again(personas, policy):
    response = personas.client("admin").post(f"/api/v1/policies/{policy.pk}/publish/")
    assert response.status_code == 409


def test_published_policy_refuses_orm_changes_to_it_and_its_checks(policy):
    policy.approvals_required = 1
    with pytest.raises(ImmutableFieldError):
        policy.save()
    check = RequiredCheck.objects.get(policy=policy)
    check.blocking = False
    with pytest.raises(ImmutableFieldError):
        check.save()
    with pytest.raises(ImmutableFieldError):
        check.delete()


def test_draft_policy_is_editable_and_a_new_name_version_increments(personas, policy):
    client = personas.client("admin")
    created = client.post(
        "/api/v1/policies/",
        {
            "name": policy.name,
            "approvals_required": 3,
            "required_checks": [{"key": "fp", "kind": "weights_fingerprint"}],
        },
        format="json",
    )
    assert created.status_code == 201
    assert created.json()["version"] == policy.version + 1
    edited = client.patch(
        f"/api/v1/policies/{created.json()['id']}/", {"description": "stricter"}, format="json"
    )
    assert edited.status_code == 200
    assert edited.json()["description"] == "stricter"
    assert CheckPolicy.objects.get(pk=policy.pk).approvals_required == 2


def test_policy_names_cannot_be_changed_even_in_a_draft(personas):
    draft = actions.create_policy(
        actor=personas.admin, name="d", checks=[{"key": "fp", "kind": "weights_fingerprint"}]
    )
    response = personas.client("admin").patch(
        f"/api/v1/policies/{draft.pk}/", {"name": "e"}, format="json"
    )
    assert response.status_code == 400


def test_audit_events_are_append_only(model_version):
    event = AuditEvent.objects.first()
    event.verb = "forged"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().update(verb="forged")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
