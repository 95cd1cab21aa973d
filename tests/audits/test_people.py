"""First use: an Assay admin manages people and roles in the admin (each change a ledger
event), the command line grants roles and issues pipeline tokens, a pipeline account reads the
gate and nothing else, and the errors a newcomer meets say what to do."""

import io
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from audits import actions
from audits.models import AuditEvent
from audits.roles import Role, grant


@pytest.fixture
def admin_browser(client, personas):
    personas.admin.is_staff = True
    personas.admin.save()
    client.force_login(personas.admin)
    return client


def test_an_assay_admin_adds_a_reviewer_in_the_admin_and_the_ledger_says_who(
    admin_browser, personas
):
    response = admin_browser.post(
        "/admin/auth/user/add/",
        {
            "username": "newreviewer",
            "password1": "a-long-enough-pw-1",
            "password2": "a-long-enough-pw-1",
            "usable_password": "true",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    person = User.objects.get(username="newreviewer")
    reviewers = Group.objects.get(name="reviewer")
    response = admin_browser.post(
        f"/admin/auth/user/{person.pk}/change/",
        {
            "username": "newreviewer",
            "is_active": "on",
            "groups": [reviewers.pk],
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
        },
    )
    assert response.status_code == 302, response.content[:3000]
    events = list(
        AuditEvent.objects.filter(target_type="user", target_id=str(person.pk)).values_list(
            "verb", "actor_label"
        )
    )
    assert ("user.created", "admin") in events
    assert ("user.role_granted", "admin") in events


def test_people_without_the_admin_role_cannot_manage_people(client, personas):
    personas.reviewer.is_staff = True
    personas.reviewer.save()
    client.force_login(personas.reviewer)
    assert client.get("/admin/auth/user/").status_code in (302, 403)


def test_an_assay_admin_cannot_take_over_a_superusers_account(admin_browser):
    root = User.objects.create_superuser("root", password="root-pw-1234567")
    assert admin_browser.get(f"/admin/auth/user/{root.pk}/password/").status_code == 403


def test_every_record_type_is_listed_read_only_with_the_gate_in_words(
    admin_browser, personas, model_version, policy
):
    release, _ = actions.open_release(actor=personas.submitter, model_version=model_version)
    for model in (
        "decision",
        "reviewerkey",
        "lens",
        "catalogfeature",
        "ledgercheckpoint",
        "policyassignment",
        "release",
        "checkrun",
        "auditevent",
    ):
        assert admin_browser.get(f"/admin/audits/{model}/").status_code == 200, model
    page = admin_browser.get(f"/admin/audits/release/{release.pk}/change/")
    assert b"check &#x27;fingerprint&#x27; is queued" in page.content
    assert admin_browser.get("/admin/audits/release/add/").status_code == 403


def test_grant_role_on_the_command_line_is_a_ledger_event(personas):
    out = io.StringIO()
    call_command("grant_role", "outsider", "auditor", stdout=out)
    assert "granted" in out.getvalue()
    event = AuditEvent.objects.filter(verb="user.role_granted").last()
    assert (event.data["user"], event.data["role"]) == ("outsider", "auditor")
    with pytest.raises(CommandError, match="already has the role"):
        call_command("grant_role", "outsider", "auditor")
    with pytest.raises(CommandError, match="no user 'ghost'"):
        call_command("grant_role", "ghost", "auditor")


def test_a_pipeline_account_reads_the_gate_and_nothing_else(personas, model_version, policy):
    bot = User.objects.create_user("ci-bot")
    grant(bot, Role.PIPELINE)
    out = io.StringIO()
    call_command("issue_token", "ci-bot", "--hours", "24", stdout=out)
    token = out.getvalue().strip().splitlines()[-1]
    release, _ = actions.open_release(actor=personas.submitter, model_version=model_version)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get(f"/api/v1/releases/{release.pk}/gate/").status_code == 200
    for url in ("/api/v1/releases/", f"/api/v1/releases/{release.pk}/", "/api/v1/audit-events/"):
        refused = client.get(url)
        assert refused.status_code == 403
        assert "only read gate answers" in refused.json()["detail"]


def test_a_policy_typo_names_the_check_suggests_the_key_and_lists_every_problem(personas):
    response = personas.client("admin").post(
        "/api/v1/policies/",
        {
            "name": "p",
            "required_checks": [
                {
                    "key": "discover",
                    "kind": "feature_discovery",
                    "parameters": {"axis": "weapons"},
                    "thresholds": {"min_aroc": 0.8},
                },
                {"key": "fp", "kind": "weights_fingerprnt"},
            ],
        },
        format="json",
    )
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "check 'discover': thresholds.min_aroc: unknown key; did you mean 'min_auroc'?" in detail
    assert "check 'fp': check kind 'weights_fingerprnt' is not available; did you mean" in detail


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?relase=x", "did you mean 'release'?"),
        ("?status=runing", "did you mean 'running'?"),
        ("?release=not-a-uuid", "is not a UUID"),
    ],
)
def test_unknown_filters_and_values_are_refused_not_ignored(personas, query, expected):
    response = personas.client("auditor").get(f"/api/v1/check-runs/{query}")
    assert response.status_code == 400
    assert expected in str(response.json())


def test_a_policy_can_be_named_as_name_at_version(personas, model_version, policy):
    response = personas.client("submitter").post(
        "/api/v1/releases/",
        {"model_version": str(model_version.pk), "policy": "integrity@1"},
        format="json",
    )
    assert response.status_code == 201, response.content
    unknown = personas.client("submitter").post(
        "/api/v1/releases/",
        {"model_version": str(model_version.pk), "policy": "integrity@9"},
        format="json",
    )
    assert unknown.status_code == 400
    assert "name@version" in str(unknown.json())


def test_a_rerun_of_an_unknown_check_lists_the_checks(personas, model_version, policy):
    release, _ = actions.open_release(actor=personas.submitter, model_version=model_version)
    response = personas.client("submitter").post(
        f"/api/v1/releases/{release.pk}/rerun/", {"check": "fingerprnt"}, format="json"
    )
    assert response.status_code == 400
    assert "its checks are: fingerprint" in response.json()["detail"]


def test_a_bearer_token_is_told_what_to_send(personas):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer abc")
    response = client.get("/api/v1/releases/")
    assert response.status_code == 401
    assert "use `Authorization: Token <token>`" in response.json()["detail"]


def test_a_missing_secret_key_says_where_the_demo_keeps_one():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSAY_", "DJANGO_"))}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "var/secret_key" in result.stderr


def test_the_landing_page_points_the_way(client):
    page = client.get("/")
    assert page.status_code == 200
    assert b"/api/docs/" in page.content
    assert b"/admin/" in page.content
