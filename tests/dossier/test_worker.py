"""A real Celery worker exports a dossier asked for over the API: the job is sent when the
request commits, the worker claims it, reports progress, writes the PDF and the bundle, and
records the ledger event; the bundle verifies offline."""

import pytest

from audits import actions
from audits.dossier import verify
from audits.dossier.models import DossierExport
from tests.audits.reviewers import decide, register_key
from tests.integration.workers import celery_worker, use_filesystem, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_worker_exports_the_dossier_the_api_asked_for(
    broker, personas, model_version, policy, settings, tmp_path
):
    worker_var = settings.ASSAY_EVIDENCE_ROOT.parent / "worker-var"  # as worker_env sets it
    settings.ASSAY_DOSSIER_ROOT = worker_var / "dossiers"
    env = use_filesystem(tmp_path / "broker")
    env["ASSAY_LEDGER_KEY_FILE"] = str(settings.ASSAY_LEDGER_KEY_FILE)  # one server key
    with celery_worker(env, tmp_path / "worker.log"):
        release, _ = actions.open_release(actor=personas.submitter, model_version=model_version)
        wait_until(
            lambda: all(r.is_finished for r in release.check_runs.all()),
            90,
            lambda: "the check did not finish",
        )
        key = register_key(personas, "reviewer")
        assert decide(personas, "reviewer", key, release).status_code == 201
        response = personas.client("auditor").post(f"/api/v1/releases/{release.pk}/dossier/")
        assert response.status_code == 202, response.content
        export_id = response.json()["id"]
        wait_until(
            lambda: DossierExport.objects.get(pk=export_id).is_finished,
            120,
            lambda: f"the export did not finish: {(tmp_path / 'worker.log').read_text()[-3000:]}",
        )
    export = DossierExport.objects.get(pk=export_id)
    assert export.status == "succeeded", export.error
    assert (export.progress, export.stage, export.deliveries) == (1.0, "done", 1)
    report = verify.verify(export.bundle_path, export.pdf_path)
    assert not report.failures, report.failures
