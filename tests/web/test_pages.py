"""The UI's pages and forms through Django's test client (CSRF enforced): who sees what, who
may do what, what every refusal says, and that nothing a person typed is ever run as markup."""

import subprocess
import sys

import pytest
from django.conf import settings

from audits import actions, queries
from audits.gate import evaluate
from audits.models import AuditEvent, CatalogFeature, CheckPolicy, CheckRun, Decision, Release
from audits.roles import Role, grant
from tests.web import samples

pytestmark = pytest.mark.django_db


def post(client, url: str, data: dict | None = None, **extra):
    """A form POST with the CSRF token a page handed out."""
    client.get("/")
    token = client.cookies["csrftoken"].value
    return client.post(url, {**(data or {}), "csrfmiddlewaretoken": token}, **extra)


def post_json(client, url: str, body: dict):
    client.get("/")
    return client.post(
        url,
        body,
        content_type="application/json",
        HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value,
        HTTP_ACCEPT="application/json",
    )


def pages_of(release) -> list[str]:
    run = release.check_runs.first()
    return [
        "/",
        "/models/",
        f"/models/{release.model_version_id}/",
        f"/releases/{release.pk}/",
        f"/releases/{release.pk}/live/",
        f"/check-runs/{run.pk}/",
        "/catalog/",
        "/policies/",
        f"/policies/{release.policy_id}/",
        "/keys/",
        "/ledger/",
    ]


# --- who may see ----------------------------------------------------------------------------


def test_signed_out_visitors_get_the_welcome_page_and_the_login_for_everything_else(
    client, checked_release
):
    home = client.get("/")
    assert home.status_code == 200
    assert b"Sign in" in home.content
    for url in pages_of(checked_release)[1:]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize("persona", ["submitter", "reviewer", "admin", "auditor"])
def test_every_role_reads_every_page(as_user, persona, evidence_release):
    client = as_user(persona)
    for url in pages_of(evidence_release) + [
        f"/check-runs/{r.pk}/" for r in evidence_release.check_runs.all()
    ]:
        response = client.get(url)
        assert response.status_code == 200, (persona, url)
        assert b"Traceback" not in response.content


def test_an_account_without_a_role_is_told_to_ask_an_admin(as_user, checked_release):
    response = as_user("outsider").get(f"/releases/{checked_release.pk}/")
    assert response.status_code == 403
    assert b"ask an admin" in response.content
    assert response["Content-Type"].startswith("text/html")


def test_a_pipeline_account_reads_gate_answers_through_the_api_only(
    as_user, personas, checked_release
):
    grant(personas.outsider, Role.PIPELINE)
    assert as_user("outsider").get("/").status_code == 200  # the welcome page, nothing more
    assert b"no Assay role yet" in as_user("outsider").get("/").content
    assert as_user("outsider").get(f"/releases/{checked_release.pk}/").status_code == 403


def test_errors_are_pages_for_people_and_json_for_the_api(as_user, client):
    page = as_user("reviewer").get("/releases/00000000-0000-0000-0000-000000000000/")
    assert page.status_code == 404
    assert page["Content-Type"].startswith("text/html")
    assert b"Nothing here" in page.content
    api = client.get("/api/v1/no-such-thing/")
    assert api.status_code == 404
    assert api.json() == {"detail": "not found"}


def test_the_login_page_signs_in_and_refuses_a_wrong_password_in_words(client, personas):
    page = client.get("/login/")
    assert b'<label for="id_username">Username</label>' in page.content
    wrong = client.post("/login/", {"username": "reviewer", "password": "nope"})
    assert wrong.status_code == 200
    assert b"correct username and password" in wrong.content
    right = client.post("/login/", {"username": "reviewer", "password": "reviewer-pw-123456"})
    assert right.status_code == 302
    assert right["Location"] == "/"


def test_a_locked_out_person_gets_a_page_not_json(client, personas, settings):
    settings.AXES_LOCKOUT_CALLABLE = "audits.web.errors.locked_out"
    for _ in range(settings.AXES_FAILURE_LIMIT):
        response = client.post("/login/", {"username": "reviewer", "password": "nope"})
    assert response.status_code == 429
    assert response["Content-Type"].startswith("text/html")
    assert b"Too many failed sign-ins" in response.content
    api = client.post(
        "/api/v1/auth/token/",
        {"username": "reviewer", "password": "nope"},
        content_type="application/json",
    )
    assert api.status_code == 429
    assert "locked" in api.json()["detail"]


def test_signing_out_takes_a_post(as_user):
    client = as_user("reviewer")
    assert b"Sign out" in client.get("/logout/").content
    response = post(client, "/logout/")
    assert response.status_code == 302
    assert client.get("/keys/").status_code == 302


# --- forms: shown only to those who may use them, refused to everyone else ------------------


def test_the_submitter_manages_their_release_and_cannot_sign_it(as_user, checked_release):
    page = as_user("submitter").get(f"/releases/{checked_release.pk}/").content.decode()
    assert "Withdraw this release" in page
    assert "Run again" in page
    assert "Sign a decision" not in page
    refused = as_user("submitter").get(f"/releases/{checked_release.pk}/sign/")
    assert refused.status_code == 403
    assert b"four-eyes" in refused.content


def test_a_reviewer_may_sign_but_not_manage(as_user, checked_release):
    page = as_user("reviewer").get(f"/releases/{checked_release.pk}/").content.decode()
    assert "Sign a decision" in page
    assert "Withdraw this release" not in page
    assert "Run again" not in page
    assert (
        post(
            as_user("reviewer"), f"/releases/{checked_release.pk}/rerun/", {"check": "fingerprint"}
        ).status_code
        == 403
    )


def test_another_submitter_may_not_manage_someone_elses_release(as_user, checked_release):
    page = as_user("submitter2").get(f"/releases/{checked_release.pk}/").content.decode()
    assert "Withdraw this release" not in page
    response = post(
        as_user("submitter2"), f"/releases/{checked_release.pk}/withdraw/", {"reason": "mine now"}
    )
    assert response.status_code == 302  # back to the page, with the action's refusal
    follow = as_user("submitter2").get(f"/releases/{checked_release.pk}/")
    assert Release.objects.get(pk=checked_release.pk).withdrawn_at is None
    assert follow.status_code == 200


def test_the_auditor_gets_no_form_that_changes_anything(as_user, evidence_release):
    client = as_user("auditor")
    for url in pages_of(evidence_release):
        html = client.get(url).content.decode()
        for action in (
            "/withdraw/",
            "/rerun/",
            "/cancel/",
            "/review/",
            "/publish/",
            "/edit/",
            "/revoke/",
            "/assign/",
            "/sign/",
        ):
            assert f'action="/releases/{evidence_release.pk}{action}' not in html
            assert 'method="post" action="/policies/' not in html
            assert 'action="/catalog/' not in html
            assert 'action="/keys/' not in html
    before = AuditEvent.objects.count()
    run = evidence_release.check_runs.first()
    feature = CatalogFeature.objects.first()
    for url, data in [
        (f"/releases/{evidence_release.pk}/withdraw/", {"reason": "x"}),
        (f"/releases/{evidence_release.pk}/rerun/", {"check": "fingerprint"}),
        (f"/check-runs/{run.pk}/cancel/", {}),
        (f"/catalog/{feature.pk}/review/", {"status": "confirmed"}),
        ("/policies/new/", {"name": "sneaky"}),
        ("/policies/assign/", {"family": "", "policy_name": "ui-review"}),
        (f"/policies/{evidence_release.policy_id}/publish/", {}),
    ]:
        assert post(client, url, data).status_code == 403, url
    assert AuditEvent.objects.count() == before


def test_forms_without_the_csrf_token_are_refused(as_user, checked_release):
    client = as_user("submitter")
    response = client.post(f"/releases/{checked_release.pk}/withdraw/", {"reason": "no token"})
    assert response.status_code == 403
    assert Release.objects.get(pk=checked_release.pk).withdrawn_at is None


def test_withdrawing_from_the_page_records_the_reason(as_user, checked_release):
    response = post(
        as_user("submitter"),
        f"/releases/{checked_release.pk}/withdraw/",
        {"reason": "wrong weights"},
    )
    assert response.status_code == 302
    event = AuditEvent.objects.get(verb="release.withdrawn")
    assert event.data == {"reason": "wrong weights"}
    assert event.actor_label == "submitter"
    page = as_user("submitter").get(response["Location"]).content.decode()
    assert "was withdrawn" in page


def test_rerun_from_the_page_makes_a_new_attempt(as_user, checked_release):
    post(as_user("submitter"), f"/releases/{checked_release.pk}/rerun/", {"check": "fingerprint"})
    run = CheckRun.objects.get(release=checked_release, attempt=2)
    assert run.status == CheckRun.Status.QUEUED
    page = as_user("submitter").get(f"/releases/{checked_release.pk}/").content.decode()
    assert 'hx-get="/releases/' in page  # the matrix polls while a check runs
    cancel = post(as_user("submitter"), f"/check-runs/{run.pk}/cancel/", {"next": "/"})
    assert cancel.status_code == 302
    assert CheckRun.objects.get(pk=run.pk).status == CheckRun.Status.CANCELLED


def test_an_action_refusal_is_a_message_not_an_error_page(as_user, checked_release):
    client = as_user("submitter")
    post(client, f"/releases/{checked_release.pk}/rerun/", {"check": "no-such-check"})
    page = client.get(f"/releases/{checked_release.pk}/").content.decode()
    assert "has no check &#x27;no-such-check&#x27;" in page


# --- escaping -------------------------------------------------------------------------------


def test_what_people_type_is_shown_as_text(as_user, personas, checked_release):
    personas.submitter.first_name = samples.ATTACK
    personas.submitter.save()
    post(
        as_user("submitter"),
        f"/releases/{checked_release.pk}/withdraw/",
        {"reason": samples.ATTACK},
    )
    for url in (f"/releases/{checked_release.pk}/", "/ledger/", "/"):
        html = as_user("auditor").get(url).content.decode()
        assert samples.ATTACK not in html, url
    html = as_user("auditor").get(f"/releases/{checked_release.pk}/").content.decode()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


def test_evidence_text_is_shown_as_text(as_user, evidence_release):
    for key in ("discover-weapons", "refusals"):
        run = evidence_release.check_runs.get(required_check__key=key)
        html = as_user("reviewer").get(f"/check-runs/{run.pk}/").content.decode()
        assert samples.ATTACK not in html
        assert "&lt;script&gt;" in html


def test_pages_carry_the_content_security_policy_and_no_inline_script(as_user, evidence_release):
    client = as_user("reviewer")
    for url in [*pages_of(evidence_release), f"/releases/{evidence_release.pk}/sign/"]:
        response = client.get(url)
        policy = response["Content-Security-Policy"]
        assert "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        html = response.content.decode()
        # Every script is a file, or inert JSON data (json_script).
        import re

        for tag in re.findall(r"<script\b[^>]*>", html):
            assert 'src="/static/' in tag or 'type="application/json"' in tag, (url, tag)


# --- evidence files -------------------------------------------------------------------------


def test_evidence_files_are_rehashed_and_figures_run_nothing(as_user, evidence_release):
    evidence = samples.evidence_of(evidence_release, "circuit", "attribution-graph.json")
    client = as_user("auditor")
    download = client.get(f"/evidence/{evidence.pk}/")
    assert download["Content-Disposition"].startswith("attachment")
    assert download["Digest"] == f"sha-256={evidence.sha256}"
    assert "sandbox" in download["Content-Security-Policy"]
    inline = client.get(f"/evidence/{evidence.pk}/?inline=1")
    assert inline["Content-Disposition"].startswith("inline")
    assert inline.json()["metadata"]["prompt"] == "The capital of France is"


def test_an_altered_evidence_file_is_reported_and_recorded(as_user, evidence_release):
    evidence = samples.evidence_of(evidence_release, "refusals", "behavior.json")
    evidence.path.write_bytes(b'{"tampered": true}')
    client = as_user("reviewer")
    page = client.get(f"/check-runs/{evidence.check_run_id}/")
    assert page.status_code == 200
    assert b"no longer matches its recorded sha256" in page.content
    raw = client.get(f"/evidence/{evidence.pk}/")
    assert raw.status_code == 409
    assert b"This evidence file was altered" in raw.content
    assert (
        AuditEvent.objects.filter(
            verb="evidence.integrity_failed", target_id=str(evidence.pk)
        ).count()
        == 2
    )


# --- the catalog, keys, policies ------------------------------------------------------------


def test_a_reviewer_confirms_and_relabels_a_proposed_feature(as_user, evidence_release):
    feature = CatalogFeature.objects.get(index=17)
    prefix = f"f{feature.pk.hex[:8]}"
    client = as_user("reviewer")
    page = client.get("/catalog/").content.decode()
    assert "weapons candidate #1" in page
    assert "bomb" in page  # its top context
    post(
        client,
        f"/catalog/{feature.pk}/review/",
        {
            f"{prefix}-label": "explosives how-to",
            f"{prefix}-risk_axis": "weapons",
            f"{prefix}-status": "confirmed",
        },
    )
    feature.refresh_from_db()
    assert (feature.label, feature.status, feature.reviewed_by.username) == (
        "explosives how-to",
        "confirmed",
        "reviewer",
    )
    assert post(as_user("submitter"), f"/catalog/{feature.pk}/review/", {}).status_code == 403


def test_revoking_a_key_from_the_page_withdraws_its_approvals(as_user, personas, checked_release):
    from tests.audits.reviewers import decide, register_key

    key = register_key(personas, "reviewer")
    assert decide(personas, "reviewer", key, checked_release).status_code == 201
    record = personas.reviewer.reviewer_keys.get()
    assert post(as_user("reviewer2"), f"/keys/{record.key_id}/revoke/").status_code == 302
    assert personas.reviewer.reviewer_keys.get().revoked_at is None  # not theirs to revoke
    post(as_user("reviewer"), f"/keys/{record.key_id}/revoke/")
    assert personas.reviewer.reviewer_keys.get().revoked_at is not None
    page = as_user("reviewer").get(f"/releases/{checked_release.pk}/").content.decode()
    assert "revoked since" in page


def test_an_admin_writes_edits_diffs_publishes_and_assigns_a_policy(as_user, personas, policy):
    client = as_user("admin")
    created = post(
        client,
        "/policies/new/",
        {
            "name": "integrity",
            "description": "stricter",
            "approvals_required": "3",
            "checks-TOTAL_FORMS": "1",
            "checks-INITIAL_FORMS": "0",
            "checks-0-key": "fingerprint",
            "checks-0-kind": "weights_fingerprint",
            "checks-0-blocking": "on",
            "checks-0-parameters": "",
            "checks-0-thresholds": "",
        },
    )
    draft = CheckPolicy.objects.get(name="integrity", version=2)
    assert created["Location"] == f"/policies/{draft.pk}/"
    # A typo in a parameter is refused, named by check key, with the nearest valid name.
    refused = post(
        client,
        f"/policies/{draft.pk}/edit/",
        {
            "description": "stricter",
            "approvals_required": "3",
            "checks-TOTAL_FORMS": "2",
            "checks-INITIAL_FORMS": "1",
            "checks-0-key": "fingerprint",
            "checks-0-kind": "weights_fingerprint",
            "checks-0-blocking": "on",
            "checks-1-key": "discover",
            "checks-1-kind": "feature_discovery",
            "checks-1-parameters": '{"axis": "weapons", "top_m": 5}',
        },
    )
    assert refused.status_code == 400
    text = refused.content.decode()
    assert "check &#x27;discover&#x27;" in text
    assert "top_n" in text
    assert draft.required_checks.count() == 1
    saved = post(
        client,
        f"/policies/{draft.pk}/edit/",
        {
            "description": "stricter",
            "approvals_required": "3",
            "checks-TOTAL_FORMS": "2",
            "checks-INITIAL_FORMS": "1",
            "checks-0-key": "fingerprint",
            "checks-0-kind": "weights_fingerprint",
            "checks-0-blocking": "on",
            "checks-1-key": "discover",
            "checks-1-kind": "feature_discovery",
            "checks-1-parameters": '{"axis": "weapons", "top_n": 5}',
        },
    )
    assert saved.status_code == 302
    page = client.get(f"/policies/{draft.pk}/").content.decode()
    assert "check <strong>discover</strong> added" in page
    assert "approvals_required</strong>: 2 → 3" in page
    post(client, f"/policies/{draft.pk}/publish/")
    draft.refresh_from_db()
    assert draft.is_published
    assert draft.digest == draft.compute_digest()
    post(client, "/policies/assign/", {"family": "tiny", "policy_name": "integrity"})
    assert queries.assigned_policy("tiny")[1] == draft
    help_fragment = client.get("/policies/kinds/?checks-0-kind=feature_discovery").content.decode()
    assert "contexts_per_feature" in help_fragment


# --- signing: the password again, once, for this release ------------------------------------


def _envelope(personas, who, release, key):
    from audits import signing
    from tests.audits.reviewers import fetch_statement

    return signing.sign_envelope(fetch_statement(personas, who, release), key)


def test_the_server_records_a_browser_signature_only_after_the_password_again(
    as_user, personas, checked_release
):
    from tests.audits.reviewers import register_key

    key = register_key(personas, "reviewer")
    client = as_user("reviewer")
    base = f"/releases/{checked_release.pk}/sign"
    envelope = _envelope(personas, "reviewer", checked_release, key)
    without = post_json(client, f"{base}/submit/", {"envelope": envelope, "nonce": "guess"})
    assert without.status_code == 403
    assert "password again" in without.json()["detail"]
    wrong = post_json(client, f"{base}/reauth/", {"password": "nope"})
    assert wrong.status_code == 403
    assert "not your password" in wrong.json()["detail"]
    nonce = post_json(client, f"{base}/reauth/", {"password": "reviewer-pw-123456"}).json()["nonce"]
    recorded = post_json(client, f"{base}/submit/", {"envelope": envelope, "nonce": nonce})
    assert recorded.status_code == 201, recorded.content
    assert "verified and recorded" in recorded.json()["message"]
    again = post_json(client, f"{base}/submit/", {"envelope": envelope, "nonce": nonce})
    assert again.status_code == 403  # the nonce is good for one signature
    assert Decision.objects.count() == 1


def test_a_nonce_is_good_for_its_release_only(as_user, personas, model_version, policy):
    from tests.audits.reviewers import register_key

    first, _ = actions.open_release(actor=personas.submitter, model_version=model_version)
    second, _ = actions.open_release(
        actor=personas.submitter, model_version=model_version, idempotency_key="second"
    )
    from tests.web.conftest import checked

    checked(first), checked(second)
    key = register_key(personas, "reviewer")
    client = as_user("reviewer")
    nonce = post_json(
        client, f"/releases/{first.pk}/sign/reauth/", {"password": "reviewer-pw-123456"}
    ).json()["nonce"]
    envelope = _envelope(personas, "reviewer", second, key)
    refused = post_json(
        client, f"/releases/{second.pk}/sign/submit/", {"envelope": envelope, "nonce": nonce}
    )
    assert refused.status_code == 403


def test_what_the_server_refuses_is_said_in_words(as_user, personas, checked_release):
    from audits import signing
    from tests.audits.reviewers import fetch_statement, register_key

    key = register_key(personas, "reviewer")
    client = as_user("reviewer")
    base = f"/releases/{checked_release.pk}/sign"
    statement = fetch_statement(personas, "reviewer", checked_release)
    statement["predicate"]["rationale"] = "changed after signing"
    envelope = signing.sign_envelope(fetch_statement(personas, "reviewer", checked_release), key)
    envelope["payload"] = signing.b64(canonical_bytes(statement))
    nonce = post_json(client, f"{base}/reauth/", {"password": "reviewer-pw-123456"}).json()["nonce"]
    refused = post_json(client, f"{base}/submit/", {"envelope": envelope, "nonce": nonce})
    assert refused.status_code == 400
    assert "does not verify" in refused.json()["detail"]
    assert not Decision.objects.exists()


def canonical_bytes(value) -> bytes:
    from audits.canonical import canonical_json

    return canonical_json(value)


def test_the_sign_page_shows_the_statement_and_what_a_signature_means(as_user, checked_release):
    html = as_user("reviewer").get(f"/releases/{checked_release.pk}/sign/").content.decode()
    assert "21 CFR 11.50" in html
    assert "printed name" in html
    assert "approval for release of this model version under this policy" in html
    assert 'id="sign-config" type="application/json"' in html
    assert "tools/assay_review.py sign" in html  # the CLI, for people without script


# --- the dashboard --------------------------------------------------------------------------


def test_the_dashboard_lists_what_waits_for_my_review_until_I_decide(
    as_user, personas, checked_release
):
    from tests.audits.reviewers import decide, register_key

    assert b"Waiting for my review" in as_user("reviewer").get("/").content
    assert (
        f"/releases/{checked_release.pk}/"
        in as_user("reviewer").get("/").content.decode().split("Checks running now")[0]
    )
    key = register_key(personas, "reviewer")
    decide(personas, "reviewer", key, checked_release)
    waiting = as_user("reviewer").get("/").content.decode().split("Checks running now")[0]
    assert f"/releases/{checked_release.pk}/" not in waiting.split("Waiting for my review")[1]
    assert evaluate(queries.gate_facts(checked_release)).state == "in_review"


# --- the web process stays light -------------------------------------------------------------


def test_importing_the_ui_imports_no_torch():
    code = (
        "import os, sys; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'tests.settings');"
        "import django; django.setup();"
        "import config.urls, audits.web.views.check_runs, audits.web.views.policies;"
        "from audits.web import kinds; kinds.describe('circuit_trace');"
        "heavy = [m for m in ('torch', 'transformers', 'sae_lens', 'circuit_tracer')"
        " if m in sys.modules];"
        "print(','.join(heavy)); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- dossiers, lineage, running checks, server errors ---------------------------------------


def test_a_dossier_export_is_queued_from_the_release_page(as_user, checked_release):
    from audits.web import dossiers

    if not dossiers.available():
        pytest.skip("the dossier app is not installed here")
    response = post(as_user("reviewer"), f"/releases/{checked_release.pk}/export/")
    assert response.status_code == 302
    page = as_user("auditor").get(f"/releases/{checked_release.pk}/").content.decode()
    assert "requested by reviewer" in page
    assert 'hx-get="/releases/' in page  # the export list polls until the export finishes


def test_the_models_page_shows_lineage(as_user, personas, model_version):
    child = actions.register_model_version(
        actor=personas.submitter,
        family="tiny",
        version="2-bf16",
        source_path=model_version.source_path,
        fmt="hf_dir",
        parent=model_version,
    )
    listing = as_user("auditor").get("/models/").content.decode()
    assert listing.index("tiny@1") < listing.index("tiny@2-bf16")
    assert 'class="child"' in listing
    detail = as_user("auditor").get(f"/models/{child.pk}/").content.decode()
    assert f'href="/models/{model_version.pk}/"' in detail
    assert "digests pending" in listing or "pending" in detail


def test_running_checks_poll_until_they_finish(as_user, personas, model_version, policy):
    release, _ = actions.open_release(actor=personas.submitter, model_version=model_version)
    page = as_user("reviewer").get("/").content.decode()
    assert 'hx-get="/running/"' in page
    partial = as_user("reviewer").get("/running/").content.decode()
    assert "fingerprint" in partial
    run = release.check_runs.get()
    progress = as_user("reviewer").get(f"/check-runs/{run.pk}/progress/").content.decode()
    assert 'hx-trigger="every 3s"' in progress


def test_a_server_error_is_a_page_for_people(rf):
    from audits.web import errors

    page = errors.handler(500)(rf.get("/releases/"))
    assert page.status_code == 500
    assert b"Something went wrong on the server" in page.content
    assert b"Traceback" not in page.content
    api = errors.handler(500)(rf.get("/api/v1/releases/"))
    assert api["Content-Type"] == "application/json"


def test_a_refused_form_says_what_to_do(as_user, checked_release, settings):
    settings.CSRF_FAILURE_VIEW = "audits.web.errors.csrf_failure"
    response = as_user("submitter").post(
        f"/releases/{checked_release.pk}/withdraw/", {"reason": "x"}
    )
    assert response.status_code == 403
    assert b"reload the page and submit it again" in response.content
