"""The OpenAPI schema and Swagger UI are served, offline, to signed-in people, and describe
every endpoint."""

import pytest


@pytest.fixture
def signed_in(client, personas):
    client.force_login(personas.auditor)
    return client


def test_openapi_schema_describes_the_api(signed_in):
    response = signed_in.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    for path in (
        "/api/v1/model-versions/",
        "/api/v1/policies/{id}/publish/",
        "/api/v1/releases/{id}/gate/",
        "/api/v1/check-runs/{id}/cancel/",
        "/api/v1/evidence/{id}/download/",
        "/api/v1/policy-assignments/",
        "/api/v1/reviewer-keys/challenge/",
    ):
        assert path in schema["paths"], path


def test_swagger_ui_loads_its_assets_locally_without_inline_script(signed_in):
    response = signed_in.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger-ui" in response.content
    assert b"cdn." not in response.content
    assert b"https://" not in response.content.split(b"<body")[0]
    assert "script-src 'self'" in response["Content-Security-Policy"]
    scripts = [part.split(b">", 1)[0] for part in response.content.split(b"<script")[1:]]
    assert all(b"src=" in tag for tag in scripts), "an inline script would need unsafe-inline"


def test_an_outsider_gets_neither_the_schema_nor_the_docs(client, db):
    assert client.get("/api/schema/").status_code in (401, 403)
    docs = client.get("/api/docs/")
    assert docs.status_code == 302
    assert docs["Location"].startswith("/admin/login/")


def test_static_files_are_served_without_collectstatic_or_insecure(client):
    for path in (
        "/static/admin/css/base.css",
        "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
