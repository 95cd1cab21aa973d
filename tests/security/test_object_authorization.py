"""Attack: another submitter (a role that may open releases) withdraws, re-runs or cancels
someone else's release, or rewrites the description of someone else's model version.
Prevented: only the release's submitter or an admin manages it."""

import pytest

from audits import actions
from audits.models import AuditEvent, CheckRun


@pytest.fixture
def release(personas, model_version, policy):
    opened, _ = actions.open_release(actor=personas.submitter, model_version=model_version)
    return opened


def _refused(response, events_before):
    assert response.status_code == 403, response.content
    assert "submitter or an admin" in response.json()["detail"]
    assert AuditEvent.objects.count() == events_before


def test_another_submitter_cannot_withdraw_a_release(personas, release):
    before = AuditEvent.objects.count()
    response = personas.client("submitter2").post(
        f"/api/v1/releases/{release.pk}/withdraw/", {"reason": "mine now"}, format="json"
    )
    _refused(response, before)
    release.refresh_from_db()
    assert release.withdrawn_at is None


def test_another_submitter_cannot_cancel_or_rerun_its_checks(personas, release):
    run = release.check_runs.get()
    before = AuditEvent.objects.count()
    _refused(personas.client("submitter2").post(f"/api/v1/check-runs/{run.pk}/cancel/"), before)
    from interp_jobs.worker.tasks import run_check

    run_check.apply(args=[str(run.pk)])
    before = AuditEvent.objects.count()
    response = personas.client("submitter2").post(
        f"/api/v1/releases/{release.pk}/rerun/", {"check": "fingerprint"}, format="json"
    )
    _refused(response, before)
    assert CheckRun.objects.filter(release=release).count() == 1


def test_another_submitter_cannot_describe_a_model_version(personas, model_version):
    before = AuditEvent.objects.count()
    response = personas.client("submitter2").patch(
        f"/api/v1/model-versions/{model_version.pk}/",
        {"description": "backdoored"},
        format="json",
    )
    assert response.status_code == 403
    assert "registered" in response.json()["detail"]
    assert AuditEvent.objects.count() == before


def test_an_admin_may_manage_any_release(personas, release):
    response = personas.client("admin").post(
        f"/api/v1/releases/{release.pk}/withdraw/", {"reason": "policy breach"}, format="json"
    )
    assert response.status_code == 200
