"""Opening releases, running their checks, the gate, cancellation, and evidence integrity."""

import pytest

from audits import actions
from audits.models import AuditEvent, CheckRun, Evidence, Release
from interp_jobs.worker.tasks import run_check


def _open(personas, model_version, policy, key=None, title=""):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return personas.client("submitter").post(
        "/api/v1/releases/",
        {"model_version": str(model_version.pk), "policy": str(policy.pk), "title": title},
        format="json",
        **headers,
    )


def _run_all(release_id):
    for run in CheckRun.objects.filter(release_id=release_id):
        run_check.apply(args=[str(run.pk)])


def test_opening_a_release_queues_one_run_per_required_check(personas, model_version, policy):
    response = _open(personas, model_version, policy)
    assert response.status_code == 201
    body = response.json()
    assert body["state"] == "checking"
    assert body["policy_digest"] == policy.digest
    assert [run["check_key"] for run in body["check_runs"]] == ["fingerprint"]
    assert body["check_runs"][0]["status"] == "queued"
    verbs = list(AuditEvent.objects.values_list("verb", flat=True))
    assert "release.opened" in verbs
    assert "check_run.queued" in verbs


def test_same_idempotency_key_returns_the_same_release(personas, model_version, policy):
    first = _open(personas, model_version, policy, key="ci-build-42")
    second = _open(personas, model_version, policy, key="ci-build-42")
    assert first.status_code == 201
    assert second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert Release.objects.count() == 1
    assert CheckRun.objects.count() == 1


def test_idempotency_key_reused_for_another_request_is_a_conflict(personas, model_version, policy):
    _open(personas, model_version, policy, key="k", title="a")
    response = _open(personas, model_version, policy, key="k", title="b")
    assert response.status_code == 409
    assert Release.objects.count() == 1


def test_without_a_key_each_request_opens_a_new_release(personas, model_version, policy):
    _open(personas, model_version, policy)
    _open(personas, model_version, policy)
    assert Release.objects.count() == 2


def test_fingerprint_passes_and_the_gate_still_wants_approvals(personas, model_version, policy):
    release_id = _open(personas, model_version, policy).json()["id"]
    _run_all(release_id)
    run = CheckRun.objects.get(release_id=release_id)
    assert (run.status, run.verdict) == ("succeeded", "pass")
    assert run.started_at <= run.finished_at
    assert run.manifest_digest
    titles = set(run.evidence.values_list("title", flat=True))
    assert titles == {"fingerprint.json", "fingerprint.svg", "manifest.json"}
    gate = personas.client("auditor").get(f"/api/v1/releases/{release_id}/gate/").json()
    assert gate["state"] == "in_review"
    assert gate["may_ship"] is False
    assert [reason["code"] for reason in gate["reasons"]] == ["approvals_missing"]


def test_a_changed_weight_file_fails_the_check_and_is_named(
    personas, model_store, model_version, policy
):
    release_id = _open(personas, model_version, policy).json()["id"]
    (model_store / "tiny" / "model.safetensors").write_bytes(b"tampered")
    (model_store / "tiny" / "extra.bin").write_bytes(b"smuggled")
    _run_all(release_id)
    run = CheckRun.objects.get(release_id=release_id)
    assert run.verdict == "fail"
    assert run.metrics["mismatched_files"] == ["extra.bin", "model.safetensors"]
    assert "model.safetensors (changed)" in run.summary
    gate = personas.client("auditor").get(f"/api/v1/releases/{release_id}/gate/").json()
    codes = [reason["code"] for reason in gate["reasons"]]
    assert "blocking_check_not_passed" in codes


def test_a_missing_model_directory_errors_the_run_with_a_reason(
    personas, model_store, model_version, policy
):
    release_id = _open(personas, model_version, policy).json()["id"]
    for item in (model_store / "tiny").iterdir():
        item.unlink()
    (model_store / "tiny").rmdir()
    _run_all(release_id)
    run = CheckRun.objects.get(release_id=release_id)
    assert run.status == "errored"
    assert "does not exist" in run.error
    assert not run.evidence.exists()


def test_running_a_finished_check_again_does_nothing(personas, model_version, policy):
    release_id = _open(personas, model_version, policy).json()["id"]
    _run_all(release_id)
    events = AuditEvent.objects.count()
    _run_all(release_id)
    assert AuditEvent.objects.count() == events
    assert Evidence.objects.count() == 3


def test_cancelling_a_queued_run_records_who_and_the_worker_skips_it(
    personas, model_version, policy
):
    release_id = _open(personas, model_version, policy).json()["id"]
    run = CheckRun.objects.get(release_id=release_id)
    response = personas.client("submitter").post(f"/api/v1/check-runs/{run.pk}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["cancelled_by"] == "submitter"
    _run_all(release_id)
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert not run.evidence.exists()
    again = personas.client("submitter").post(f"/api/v1/check-runs/{run.pk}/cancel/")
    assert again.status_code == 409


def test_withdrawn_release_cancels_its_runs_and_never_ships(personas, model_version, policy):
    release_id = _open(personas, model_version, policy).json()["id"]
    response = personas.client("submitter").post(
        f"/api/v1/releases/{release_id}/withdraw/", {"reason": "wrong checkpoint"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["state"] == "withdrawn"
    assert CheckRun.objects.get(release_id=release_id).status == "cancelled"
    gate = personas.client("auditor").get(f"/api/v1/releases/{release_id}/gate/").json()
    assert gate["state"] == "withdrawn"
    assert gate["may_ship"] is False


def test_release_list_filters_by_state_and_model(personas, model_version, policy):
    first = _open(personas, model_version, policy).json()["id"]
    _open(personas, model_version, policy)
    _run_all(first)
    client = personas.client("auditor")
    in_review = client.get("/api/v1/releases/?state=in_review").json()
    assert [item["id"] for item in in_review["results"]] == [first]
    by_model = client.get(f"/api/v1/releases/?model_version={model_version.pk}").json()
    assert by_model["count"] == 2


def test_evidence_downloads_match_their_hash(personas, model_version, policy):
    release_id = _open(personas, model_version, policy).json()["id"]
    _run_all(release_id)
    evidence = Evidence.objects.get(title="fingerprint.json")
    listing = (
        personas.client("auditor")
        .get(f"/api/v1/evidence/?check_run={evidence.check_run_id}")
        .json()
    )
    assert listing["count"] == 3
    response = personas.client("auditor").get(f"/api/v1/evidence/{evidence.pk}/download/")
    assert response.status_code == 200
    assert response["Digest"] == f"sha-256={evidence.sha256}"
    assert b"model.safetensors" in response.content


def test_tampered_evidence_is_refused_on_download_and_logged(personas, model_version, policy):
    release_id = _open(personas, model_version, policy).json()["id"]
    _run_all(release_id)
    evidence = Evidence.objects.get(title="fingerprint.json")
    data = bytearray(evidence.path.read_bytes())
    data[10] ^= 1
    evidence.path.write_bytes(bytes(data))
    response = personas.client("auditor").get(f"/api/v1/evidence/{evidence.pk}/download/")
    assert response.status_code == 409
    assert "no longer matches" in response.json()["detail"]
    assert AuditEvent.objects.filter(
        verb="evidence.integrity_failed", target_id=str(evidence.pk)
    ).exists()


def test_manifest_lists_every_artifact_hash(personas, model_version, policy):
    import json

    release_id = _open(personas, model_version, policy).json()["id"]
    _run_all(release_id)
    run = CheckRun.objects.get(release_id=release_id)
    manifest = Evidence.objects.get(check_run=run, title="manifest.json")
    assert manifest.sha256 == run.manifest_digest
    body = json.loads(manifest.read_bytes())
    listed = {item["title"]: item["sha256"] for item in body["artifacts"]}
    stored = dict(run.evidence.exclude(title="manifest.json").values_list("title", "sha256"))
    assert listed == stored
    assert body["provenance"]["model"]["weights_digest"] == model_version.weights_digest


def test_check_run_shows_progress_timings_and_log(personas, model_version, policy):
    release_id = _open(personas, model_version, policy).json()["id"]
    _run_all(release_id)
    run = CheckRun.objects.get(release_id=release_id)
    body = personas.client("auditor").get(f"/api/v1/check-runs/{run.pk}/").json()
    assert body["progress"] == 1.0
    assert body["duration_seconds"] >= 0
    assert body["provenance"]["libraries"]["torch"].startswith("2.13")
    numerics = body["provenance"]["numerical_environment"]
    assert numerics["threads"]["intra_op"] >= 1
    assert isinstance(numerics["deterministic_algorithms"], bool)
    log = personas.client("auditor").get(f"/api/v1/check-runs/{run.pk}/log/").json()
    assert "hashing 3 file(s)" in log["log"]


@pytest.mark.parametrize("role", ["auditor", "reviewer"])
def test_the_ledger_is_readable_in_order(role, personas, model_version, policy):
    _open(personas, model_version, policy)
    events = personas.client(role).get("/api/v1/audit-events/?limit=100").json()["results"]
    seqs = [event["seq"] for event in events]
    assert seqs == sorted(seqs)
    verbs = [event["verb"] for event in events]
    assert verbs.index("model_version.registered") < verbs.index("release.opened")
    assert all(event["entry_hash"] and event["prev_hash"] for event in events)


def test_digest_job_records_sha256sum_compatible_digests(model_version, model_store):
    import hashlib

    weights = (model_store / "tiny" / "model.safetensors").read_bytes()
    line = f"{hashlib.sha256(weights).hexdigest()}  model.safetensors\n"
    assert model_version.weights_digest == hashlib.sha256(line.encode()).hexdigest()
    assert set(model_version.file_digests) == {"config.json", "model.safetensors", "tokenizer.json"}
    assert model_version.digest_status == "computed"


def test_digest_job_marks_a_vanished_model_failed(personas, model_store):
    from interp_jobs.worker.tasks import compute_model_digests

    registered = actions.register_model_version(
        actor=personas.submitter,
        family="gone",
        version="1",
        fmt="hf_dir",
        source_path=str(model_store / "missing"),
    )
    compute_model_digests(str(registered.pk))
    registered.refresh_from_db()
    assert registered.digest_status == "failed"
    assert "does not exist" in registered.digest_error
