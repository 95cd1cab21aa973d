"""The dossier through the API and the command line: an export is a Celery job with progress,
listed with download links that re-check the files' sha256, recorded in the ledger with both
digests; every role may export, nobody without a role may read; errors are 4xx JSON."""

import hashlib
import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from audits.dossier import actions, collect, tasks
from audits.dossier.models import DossierExport
from audits.models import AuditEvent


@pytest.fixture
def worker(monkeypatch):
    """The export task runs when the request's transaction commits, through Celery's apply()."""
    sent = []

    def send_now(task_name, object_id, **options):
        sent.append((task_name, options.get("queue")))
        tasks.export_dossier.apply(args=[object_id])

    monkeypatch.setattr(actions.dispatch, "send_now", send_now)
    return sent


def post(personas, who, release):
    return personas.client(who).post(f"/api/v1/releases/{release.pk}/dossier/")


def test_an_auditor_exports_and_downloads_a_dossier(
    approved_release, personas, dossier_settings, worker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(personas, "auditor", approved_release)
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "queued"
    assert worker == [("audits.dossier.export", "cpu")]
    listed = personas.client("reviewer").get(f"/api/v1/releases/{approved_release.pk}/dossier/")
    assert listed.status_code == 200
    [export] = listed.json()
    assert (export["status"], export["progress"], export["stage"]) == ("succeeded", 1.0, "done")
    assert export["requested_by"] == "auditor"
    pdf = personas.client("submitter").get(export["pdf_url"])
    bundle = personas.client("submitter").get(export["bundle_url"])
    assert pdf.status_code == bundle.status_code == 200
    assert hashlib.sha256(b"".join(pdf.streaming_content)).hexdigest() == export["pdf_sha256"]
    assert hashlib.sha256(b"".join(bundle.streaming_content)).hexdigest() == export["bundle_sha256"]
    assert pdf["Digest"] == f"sha-256={export['pdf_sha256']}"


def test_each_export_is_a_ledger_event_recording_both_digests(
    approved_release, personas, dossier_settings, worker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        export_id = post(personas, "admin", approved_release).json()["id"]
    export = DossierExport.objects.get(pk=export_id)
    event = AuditEvent.objects.get(verb="dossier.exported", target_id=export_id)
    assert event.seq == export.ledger_seq
    assert event.actor_label == "admin"
    assert event.data == {
        "release": str(approved_release.pk),
        "pdf_sha256": export.pdf_sha256,
        "pdf_size": export.pdf_size,
        "bundle_sha256": export.bundle_sha256,
        "bundle_size": export.bundle_size,
        "manifest_sha256": export.manifest_sha256,
        "tree_size": export.tree_size,
    }
    assert hashlib.sha256(export.bundle_path.read_bytes()).hexdigest() == export.bundle_sha256


def test_a_changed_file_is_refused_on_download(
    approved_release, personas, dossier_settings, worker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        export_id = post(personas, "auditor", approved_release).json()["id"]
    export = DossierExport.objects.get(pk=export_id)
    export.pdf_path.write_bytes(export.pdf_path.read_bytes() + b"%% appended\n")
    response = personas.client("auditor").get(f"/api/v1/dossiers/{export_id}/dossier.pdf")
    assert response.status_code == 409
    assert "no longer matches the sha256" in response.json()["detail"]
    export.bundle_path.unlink()
    response = personas.client("auditor").get(f"/api/v1/dossiers/{export_id}/bundle.zip")
    assert response.status_code == 409
    assert "no longer on the server" in response.json()["detail"]


@pytest.mark.parametrize("who", ["submitter", "reviewer", "admin", "auditor"])
def test_every_role_may_export(who, approved_release, personas, dossier_settings):
    assert post(personas, who, approved_release).status_code == 202


def test_nobody_without_a_role_reads_or_exports(approved_release, personas, dossier_settings):
    assert post(personas, "outsider", approved_release).status_code == 403
    assert post(personas, None, approved_release).status_code in (401, 403)
    listed = personas.client("outsider").get(f"/api/v1/releases/{approved_release.pk}/dossier/")
    assert listed.status_code == 403
    assert "role" in listed.json()["detail"]


def test_one_export_at_a_time_per_release(approved_release, personas, dossier_settings):
    first = post(personas, "auditor", approved_release)
    second = post(personas, "reviewer", approved_release)
    assert second.status_code == 409
    assert first.json()["id"] in second.json()["detail"]


def test_an_abandoned_export_does_not_block_a_new_one(approved_release, personas, dossier_settings):
    stuck = actions.request_export(actor=personas.auditor, release=approved_release)
    DossierExport.objects.filter(pk=stuck.pk).update(
        requested_at=timezone.now() - actions.ABANDONED_AFTER - timedelta(minutes=1)
    )
    assert post(personas, "auditor", approved_release).status_code == 202
    stuck.refresh_from_db()
    assert stuck.status == "failed"
    assert "abandoned" in stuck.error


def test_errors_are_json_with_a_message(approved_release, personas, dossier_settings):
    client = personas.client("auditor")
    missing = client.get("/api/v1/releases/00000000-0000-0000-0000-000000000000/dossier/")
    assert missing.status_code == 404
    assert "detail" in missing.json()
    assert client.get("/api/v1/releases/not-a-uuid/dossier/").status_code == 404
    queued = post(personas, "auditor", approved_release).json()
    early = client.get(f"/api/v1/dossiers/{queued['id']}/dossier.pdf")
    assert early.status_code == 409
    assert "is queued" in early.json()["detail"]
    assert queued["pdf_url"] is None


def test_a_failed_export_says_why(
    approved_release,
    personas,
    dossier_settings,
    worker,
    monkeypatch,
    django_capture_on_commit_callbacks,
):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(collect, "snapshot", broken)
    with django_capture_on_commit_callbacks(execute=True):
        export_id = post(personas, "auditor", approved_release).json()["id"]
    shown = personas.client("auditor").get(f"/api/v1/dossiers/{export_id}/").json()
    assert shown["status"] == "failed"
    assert "disk full" in shown["error"]
    assert not AuditEvent.objects.filter(verb="dossier.exported").exists()
    # a new export may be asked for once the failed one is finished
    assert post(personas, "auditor", approved_release).status_code == 202


def test_a_redelivered_task_does_not_export_twice(approved_release, personas, dossier_settings):
    export = actions.request_export(actor=personas.auditor, release=approved_release)
    tasks.export_dossier.apply(args=[str(export.pk)])
    tasks.export_dossier.apply(args=[str(export.pk)])
    assert AuditEvent.objects.filter(verb="dossier.exported", target_id=str(export.pk)).count() == 1


def test_the_command_writes_the_pdf_and_the_bundle(
    approved_release, personas, dossier_settings, tmp_path
):
    out = io.StringIO()
    call_command(
        "export_dossier",
        str(approved_release.pk),
        "--out",
        str(tmp_path / "d"),
        "--as",
        "auditor",
        stdout=out,
    )
    assert (tmp_path / "d" / "dossier.pdf").read_bytes().startswith(b"%PDF-1.7")
    assert (tmp_path / "d" / "bundle.zip").is_file()
    export = DossierExport.objects.get()
    assert export.pdf_sha256 in out.getvalue()
    assert export.bundle_sha256 in out.getvalue()
    assert AuditEvent.objects.get(verb="dossier.exported").actor_label == "auditor"


def test_the_command_names_a_bad_release(db, tmp_path):
    with pytest.raises(CommandError, match="not a release id"):
        call_command("export_dossier", "nope", "--out", str(tmp_path))
    with pytest.raises(CommandError, match="no release has the id"):
        call_command(
            "export_dossier", "00000000-0000-0000-0000-000000000000", "--out", str(tmp_path)
        )
