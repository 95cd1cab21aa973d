"""Bad input is a 4xx with a message: never a 500, never a half-written record."""

import pytest

from audits.models import AuditEvent, CheckPolicy, ModelVersion, Release


def _counts():
    return (
        ModelVersion.objects.count(),
        CheckPolicy.objects.count(),
        Release.objects.count(),
        AuditEvent.objects.count(),
    )


def _post_raw(client, url, body: bytes, content_type="application/json"):
    return client.generic("POST", url, body, content_type=content_type)


ENDPOINTS = [
    ("submitter", "/api/v1/model-versions/"),
    ("admin", "/api/v1/policies/"),
    ("submitter", "/api/v1/releases/"),
]


@pytest.mark.parametrize(("role", "url"), ENDPOINTS)
@pytest.mark.parametrize("body", [b"{not json", b"[1, 2", b"\xff\xfe", b"null", b"[]", b"42"])
def test_malformed_json_is_refused(role, url, body, personas, model_version, policy):
    before = _counts()
    response = _post_raw(personas.client(role), url, body)
    assert response.status_code == 400, response.content
    assert response.json()
    assert _counts() == before


@pytest.mark.parametrize(("role", "url"), ENDPOINTS)
def test_unknown_fields_are_refused_by_name(role, url, personas, model_version, policy):
    before = _counts()
    response = personas.client(role).post(url, {"surprise": 1}, format="json")
    assert response.status_code == 400
    assert "unknown field" in response.json()["surprise"]
    assert _counts() == before


def test_unknown_fields_inside_required_checks_are_refused(personas):
    response = personas.client("admin").post(
        "/api/v1/policies/",
        {"name": "p", "required_checks": [{"key": "fp", "kind": "weights_fingerprint", "x": 1}]},
        format="json",
    )
    assert response.status_code == 400
    assert "unknown field" in str(response.json())
    assert not CheckPolicy.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"name": "p", "approvals_required": "two", "required_checks": []},
        {"name": "p", "approvals_required": 0, "required_checks": []},
        {"name": "has spaces", "required_checks": []},
        {"name": "p", "required_checks": "fingerprint"},
        {"name": "p", "required_checks": [{"key": "fp", "kind": "no_such_kind"}]},
        {
            "name": "p",
            "required_checks": [
                {"key": "fp", "kind": "weights_fingerprint", "parameters": {"unexpected": True}}
            ],
        },
        {
            "name": "p",
            "required_checks": [
                {"key": "fp", "kind": "weights_fingerprint"},
                {"key": "fp", "kind": "weights_fingerprint"},
            ],
        },
    ],
)
def test_bad_policies_are_refused_and_nothing_is_written(body, personas):
    before = _counts()
    response = personas.client("admin").post("/api/v1/policies/", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()
    assert _counts() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"family": "m", "version": "1", "format": "hf_dir", "source_path": "/no/such/dir"},
            "source_path",
        ),
        (
            {"family": "m", "version": "1", "format": "hf_dir", "source_path": "relative/path"},
            "source_path",
        ),
        ({"family": "m", "version": "1", "format": "hf_dir", "source_path": "/etc"}, "source_path"),
        ({"family": "m", "version": "1", "format": "onnx", "source_path": "/tmp"}, "format"),
        ({"family": "m", "version": 1.5, "format": "hf_dir"}, "source_path"),
        ({"family": "", "version": "1", "format": "hf_dir", "source_path": "/tmp"}, "family"),
        (
            {
                "family": "m",
                "version": "1",
                "format": "hf_dir",
                "source_path": "/tmp",
                "parent": "not-a-uuid",
            },
            "parent",
        ),
    ],
)
def test_bad_model_registrations_are_refused(body, field, personas, model_store):
    before = _counts()
    response = personas.client("submitter").post("/api/v1/model-versions/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert _counts() == before


def test_paths_escaping_the_model_store_are_refused(personas, model_store):
    sneaky = f"{model_store}/tiny/../../../../etc"
    response = personas.client("submitter").post(
        "/api/v1/model-versions/",
        {"family": "m", "version": "1", "format": "hf_dir", "source_path": sneaky},
        format="json",
    )
    assert response.status_code == 400
    assert "outside the model store" in response.json()["source_path"][0]


def test_gguf_format_needs_a_gguf_file(personas, model_store):
    response = personas.client("submitter").post(
        "/api/v1/model-versions/",
        {
            "family": "m",
            "version": "1",
            "format": "gguf",
            "source_path": str(model_store / "tiny" / "config.json"),
        },
        format="json",
    )
    assert response.status_code == 400
    assert ".gguf" in response.json()["source_path"][0]


def test_registering_the_same_version_twice_is_a_conflict(personas, model_store, model_version):
    response = personas.client("submitter").post(
        "/api/v1/model-versions/",
        {
            "family": "tiny",
            "version": "1",
            "format": "hf_dir",
            "source_path": str(model_store / "tiny"),
        },
        format="json",
    )
    assert response.status_code == 409
    assert "already registered" in response.json()["detail"]


def test_oversized_bodies_are_refused_with_413(personas, settings):
    settings.ASSAY_MAX_REQUEST_BYTES = 2048
    body = b'{"name": "' + b"x" * 5000 + b'", "required_checks": []}'
    response = _post_raw(personas.client("admin"), "/api/v1/policies/", body)
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    assert not CheckPolicy.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"model_version": "00000000-0000-0000-0000-000000000000"},
        {"model_version": "nope", "policy": "nope"},
        {"model_version": 7, "policy": []},
    ],
)
def test_bad_release_requests_are_refused(body, personas, model_version, policy):
    before = _counts()
    response = personas.client("submitter").post("/api/v1/releases/", body, format="json")
    assert response.status_code == 400
    assert _counts() == before


def test_release_under_a_draft_policy_is_refused(personas, model_version):
    draft = (
        personas.client("admin")
        .post(
            "/api/v1/policies/",
            {"name": "d", "required_checks": [{"key": "fp", "kind": "weights_fingerprint"}]},
            format="json",
        )
        .json()
    )
    response = personas.client("submitter").post(
        "/api/v1/releases/",
        {"model_version": str(model_version.pk), "policy": draft["id"], "purpose": "evaluation"},
        format="json",
    )
    assert response.status_code == 409
    assert "draft" in response.json()["detail"]
    assert not Release.objects.exists()


def test_release_before_digests_are_computed_is_refused(personas, model_store, policy):
    client = personas.client("submitter")
    registered = client.post(
        "/api/v1/model-versions/",
        {
            "family": "fresh",
            "version": "1",
            "format": "hf_dir",
            "source_path": str(model_store / "tiny"),
        },
        format="json",
    ).json()
    response = client.post(
        "/api/v1/releases/",
        {"model_version": registered["id"], "policy": str(policy.pk)},
        format="json",
    )
    assert response.status_code == 409
    assert "still being computed" in response.json()["detail"]


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/releases/?state=flying",
        "/api/v1/releases/?model_version=zzz",
        "/api/v1/check-runs/?release=1",
        "/api/v1/evidence/?check_run=x",
        "/api/v1/policies/?status=maybe",
    ],
)
def test_bad_filters_are_400(url, personas):
    response = personas.client("auditor").get(url)
    assert response.status_code == 400
    assert response.json()


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/releases/not-a-uuid/",
        "/api/v1/releases/00000000-0000-0000-0000-000000000000/",
        "/api/v1/nothing-here/",
        "/api/v1/evidence/00000000-0000-0000-0000-000000000000/download/",
    ],
)
def test_unknown_records_are_json_404(url, personas):
    response = personas.client("auditor").get(url)
    assert response.status_code == 404
    assert response.json()


def test_bad_idempotency_key_is_refused(personas, model_version, policy):
    response = personas.client("submitter").post(
        "/api/v1/releases/",
        {"model_version": str(model_version.pk), "policy": str(policy.pk)},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k" * 300,
    )
    assert response.status_code == 400
    assert not Release.objects.exists()
