"""Attacks on the edges: guessing passwords, weak passwords, a deployment that is not locked
down, and input built to crash the server (deep nesting, lone surrogates, NUL characters).
Each must get a clear 4xx (or a lockout), never a 500."""

import base64
import json
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.contrib.auth.forms import SetPasswordForm
from rest_framework.test import APIClient

from tests.security.conftest import gate


def _login(username: str, password: str):
    return APIClient().post(
        "/api/v1/auth/token/", {"username": username, "password": password}, format="json"
    )


def test_guessing_a_password_locks_the_username(personas):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login("reviewer", "wrong-guess").status_code in (401, 403)
    assert _login("reviewer", "wrong-guess").status_code == 429  # the last guess allowed
    locked = _login("reviewer", "reviewer-pw-123456")  # even the right password, now
    assert locked.status_code == 429
    assert "axes_reset_username" in locked.json()["detail"]


@pytest.mark.parametrize("weak", ["short", "password1234", "123456789012", "reviewer-1"])
def test_weak_passwords_are_refused(personas, weak):
    form = SetPasswordForm(personas.reviewer, {"new_password1": weak, "new_password2": weak})
    assert not form.is_valid()


def test_check_deploy_is_clean_under_production_settings(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSAY_", "DJANGO_"))}
    env.update(
        {
            "ASSAY_SECRET_KEY": base64.urlsafe_b64encode(os.urandom(48)).decode(),
            "ASSAY_ALLOWED_HOSTS": "assay.example",
            "ASSAY_VAR_DIR": str(tmp_path),
        }
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.fixture
def submitter(personas):
    return personas.client("submitter")


def _post_raw(client, body: bytes):
    return client.post("/api/v1/releases/", body, content_type="application/json")


def test_deeply_nested_json_is_refused(submitter):
    response = _post_raw(submitter, b"[" * 100_000 + b"]" * 100_000)
    assert response.status_code == 400
    assert "nests deeper than" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"model_version": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"title": "a\\u0000b", "model_version": "x"}', "NUL character"),
        (b'{"\\u0000": 1}', "NUL character"),
        (b"\xff\xfe not utf-8", "not valid utf-8"),
    ],
)
def test_strings_that_cannot_be_stored_or_signed_are_refused(submitter, body, reason):
    response = _post_raw(submitter, body)
    assert response.status_code == 400
    assert reason in response.json()["detail"]


def test_nul_in_a_policy_parameter_never_reaches_the_database(personas):
    response = personas.client("admin").post(
        "/api/v1/policies/",
        {
            "name": "p",
            "required_checks": [
                {"key": "fp", "kind": "weights_fingerprint", "parameters": {"x": "a\x00b"}}
            ],
        },
        format="json",
    )
    assert response.status_code == 400


@pytest.mark.parametrize("query", ["?state=\x00", "?model_version=%00", "?%00=1"])
def test_nul_in_query_parameters_is_refused(personas, query):
    response = personas.client("auditor").get(f"/api/v1/releases/{query}")
    assert response.status_code == 400
    assert "NUL" in response.json()["detail"]


@pytest.mark.parametrize(
    "statement",
    [
        b'{"_type": "' + b"[" * 500 + b'"}',  # not even JSON, and deep
        json.dumps({"_type": "x", "deep": json.loads("[" * 40 + "]" * 40)}).encode(),
        b'{"_type":"\\udfff"}',
    ],
)
def test_signed_payloads_that_nest_or_carry_surrogates_are_refused(
    personas, checked_release, statement
):
    envelope = {
        "payloadType": "application/vnd.in-toto+json",
        "payload": base64.b64encode(statement).decode(),
        "signatures": [{"keyid": "0" * 64, "sig": base64.b64encode(b"x" * 64).decode()}],
    }
    response = personas.client("reviewer").post(
        f"/api/v1/releases/{checked_release.pk}/decisions/", {"envelope": envelope}, format="json"
    )
    assert response.status_code == 400, response.content
    assert gate(personas, checked_release)["state"] == "in_review"


def test_unbounded_pages_are_refused(personas):
    assert personas.client("auditor").get("/api/v1/audit-events/?limit=100000").status_code == 400
    assert personas.client("auditor").get("/api/v1/audit-events/?offset=-1").status_code == 400
