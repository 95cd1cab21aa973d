"""Attacks by an insider with database access on what the gate reads, behind the application's
back. Prevented where a trigger stands (finished check runs, published policies and their
required checks, the append-only tables); where the insider lifts the triggers (as a database
superuser can), verify_ledger finds the change and names the record."""

import hashlib
import json
from pathlib import Path

import pytest
from django.db import DatabaseError, transaction

from audits import actions
from audits.models import (
    Decision,
    Evidence,
    LedgerCheckpoint,
    ModelVersion,
    evidence_path,
)
from audits.roles import Role
from tests.audits.reviewers import decide
from tests.security.conftest import checked, gate
from tests.security.tampering import db_id, sql, triggers_bypassed, verify


def _tamper(statement: str, params) -> str:
    with triggers_bypassed():
        sql(statement, params)
    return verify()


@pytest.fixture
def failed_release(personas, model_version, policy):
    """A release whose fingerprint check failed (the weights were changed on disk)."""
    (Path(model_version.source_path) / "model.safetensors").write_bytes(b"other weights")
    release, _ = actions.open_release(actor=personas.submitter, model_version=model_version)
    run = checked(release).check_runs.get()
    assert (run.status, run.verdict) == ("succeeded", "fail")
    return release


# --- prevented by triggers ------------------------------------------------------------------


def test_triggers_refuse_changing_or_deleting_a_finished_check_run(failed_release):
    run = failed_release.check_runs.get()
    for statement in (
        "UPDATE audits_checkrun SET verdict = 'pass' WHERE id = %s",
        "DELETE FROM audits_checkrun WHERE id = %s",
    ):
        with pytest.raises(DatabaseError, match="finished check run"), transaction.atomic():
            sql(statement, [db_id(run.pk)])


def test_triggers_refuse_changing_a_published_policy_or_its_checks(policy):
    check = policy.required_checks.get()
    attempts = [
        ("UPDATE audits_checkpolicy SET approvals_required = 1 WHERE id = %s", [db_id(policy.pk)]),
        ("UPDATE audits_requiredcheck SET blocking = %s WHERE id = %s", [False, check.pk]),
        ("DELETE FROM audits_requiredcheck WHERE id = %s", [check.pk]),
        (
            "INSERT INTO audits_requiredcheck (policy_id, key, kind, parameters, thresholds, "
            "blocking) VALUES (%s, 'extra', 'weights_fingerprint', '{}', '{}', %s)",
            [db_id(policy.pk), False],
        ),
    ]
    for statement, params in attempts:
        with pytest.raises(DatabaseError, match="published"), transaction.atomic():
            sql(statement, params)


# --- detected by verify_ledger --------------------------------------------------------------


def test_a_failed_check_turned_into_a_pass_is_named(failed_release):
    run = failed_release.check_runs.get()
    message = _tamper("UPDATE audits_checkrun SET verdict = 'pass' WHERE id = %s", [db_id(run.pk)])
    assert f"check run {run.pk} (fingerprint #1): its verdict or manifest digest differs" in message


def test_an_errored_check_turned_into_a_success_is_named(personas, model_version, policy):
    for item in Path(model_version.source_path).iterdir():
        item.unlink()
    release, _ = actions.open_release(actor=personas.submitter, model_version=model_version)
    run = checked(release).check_runs.get()
    assert run.status == "errored"
    message = _tamper(
        "UPDATE audits_checkrun SET status = 'succeeded', verdict = 'pass' WHERE id = %s",
        [db_id(run.pk)],
    )
    assert f"check run {run.pk}" in message
    assert "status 'succeeded' differs from the ledger, which records check_run.errored" in message


def test_changed_metrics_are_named(failed_release):
    run = failed_release.check_runs.get()
    message = _tamper(
        "UPDATE audits_checkrun SET metrics = %s WHERE id = %s",
        [json.dumps({**run.metrics, "mismatched": 0, "mismatched_files": []}), db_id(run.pk)],
    )
    assert f"check run {run.pk} (fingerprint #1): its metrics or verdict differ" in message


def test_a_deleted_check_run_is_named(failed_release):
    run = failed_release.check_runs.get()
    with triggers_bypassed():
        sql("DELETE FROM audits_evidence WHERE check_run_id = %s", [db_id(run.pk)])
        sql("DELETE FROM audits_checkrun WHERE id = %s", [db_id(run.pk)])
    assert f"check run {run.pk} was deleted" in verify()


def test_an_evidence_row_and_file_swapped_together_are_named(failed_release):
    evidence = Evidence.objects.get(title="fingerprint.json")
    forged = json.dumps({"files": [], "note": "all fine"}).encode()
    digest = hashlib.sha256(forged).hexdigest()
    evidence_path(digest).parent.mkdir(parents=True, exist_ok=True)
    evidence_path(digest).write_bytes(forged)  # the file hash checks out ...
    message = _tamper(
        "UPDATE audits_evidence SET sha256 = %s, size = %s WHERE id = %s",
        [digest, len(forged), db_id(evidence.pk)],
    )
    assert "its evidence rows differ from the artifacts its manifest lists" in message


def test_a_published_policy_changed_with_its_triggers_lifted_is_named(policy):
    check = policy.required_checks.get()
    message = _tamper(
        "UPDATE audits_requiredcheck SET blocking = %s WHERE id = %s", [False, check.pk]
    )
    assert "policy integrity v1: it or its required checks changed after it was published" in (
        message
    )


def test_a_decision_moved_to_another_reviewer_is_named(personas, approved_release):
    decision = Decision.objects.get(reviewer=personas.reviewer)
    message = _tamper(
        "UPDATE audits_decision SET reviewer_id = %s WHERE id = %s",
        [personas.admin.pk, db_id(decision.pk)],
    )
    assert f"decision {decision.pk}" in message
    assert "its reviewer is not the ledger event's actor and the key's owner" in message


def test_reordering_decisions_by_their_timestamps_does_not_fool_the_gate(
    personas, approved_release
):
    rejected = decide(
        personas, "reviewer", approved_release.keys["reviewer"], approved_release, "reject"
    )
    assert rejected.status_code == 201
    assert gate(personas, approved_release)["state"] == "rejected"
    rejection = Decision.objects.get(decision="reject")
    with triggers_bypassed():  # make the rejection look older than the approval
        sql(
            "UPDATE audits_decision SET recorded_at = %s, signed_at = %s WHERE id = %s",
            ["2000-01-01T00:00:00+00:00", "2000-01-01T00:00:00+00:00", db_id(rejection.pk)],
        )
    assert gate(personas, approved_release)["state"] == "rejected"  # ledger order, not time
    assert f"decision {rejection.pk}" in verify()


def test_a_deleted_rejection_does_not_open_the_gate(personas, approved_release):
    rejected = decide(
        personas, "reviewer", approved_release.keys["reviewer"], approved_release, "reject"
    )
    assert rejected.status_code == 201
    rejection = Decision.objects.get(decision="reject")
    with triggers_bypassed():
        sql("DELETE FROM audits_decision WHERE id = %s", [db_id(rejection.pk)])
    answer = gate(personas, approved_release)
    assert answer["may_ship"] is False  # the ledger still records the rejection
    assert answer["reasons"][0]["code"] == "ledger_mismatch"
    assert f"decision {rejection.pk} was deleted" in verify()


def test_checkpoint_columns_are_not_trusted(approved_release):
    from audits import ledger

    point = ledger.checkpoint()
    message = _tamper(
        "UPDATE audits_ledgercheckpoint SET root_hash = %s WHERE id = %s", ["0" * 64, point.pk]
    )
    assert f"checkpoint at tree size {point.tree_size}: its columns differ" in message
    assert LedgerCheckpoint.objects.get(pk=point.pk).root_hash == "0" * 64


def test_a_role_membership_written_into_the_database_is_named(personas, approved_release):
    from django.contrib.auth.models import Group

    admins = Group.objects.get(name=Role.ADMIN.value)
    message = _tamper(
        "INSERT INTO auth_user_groups (user_id, group_id) VALUES (%s, %s)",
        [personas.auditor.pk, admins.pk],
    )
    assert "user auditor: roles or account flags differ from the ledger's" in message


def test_model_digests_changed_in_the_database_are_named(model_version):
    message = _tamper(
        "UPDATE audits_modelversion SET weights_digest = %s WHERE id = %s",
        ["f" * 64, db_id(model_version.pk)],
    )
    assert f"model version {ModelVersion.objects.get().family}@1: its digests differ" in message


def test_an_untouched_ledger_verifies(approved_release):
    assert verify() == "ok"
