"""Attacks on the gate's kept facts (audits/gate_cache.py): a database insider changes, deletes
or forges a row behind the application's back, committed in its own transaction as a separate
database session would, and the very next gate request must answer from the changed rows.

On PostgreSQL each attack first asks twice, so that the second answer is served from kept facts
(two queries), and then proves the kept facts were not used after the change. On SQLite nothing
is kept and the same attacks check the fresh reads.
"""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audits import actions, gate_cache, queries
from audits.models import CheckPolicy, CheckRun, Decision, Release
from audits.roles import Role
from interp_jobs.worker.tasks import run_check
from tests.audits.reviewers import decide, register_key
from tests.audits.test_gate_queries import (
    KEPT_FACTS_QUERIES,
    changed_gate_queries,
    cold_gate_queries,
)
from tests.security.tampering import db_id, sql, triggers_bypassed

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _nothing_kept():
    gate_cache.forget_all()
    yield
    gate_cache.forget_all()


@pytest.fixture
def approved(personas, model_version, policy):
    """A release whose fingerprint check passed and that both reviewers approved."""
    release, _ = actions.open_release(actor=personas.submitter, model_version=model_version)
    for run in release.check_runs.all():
        run_check.apply(args=[str(run.pk)])
    for who in ("reviewer", "reviewer2"):
        assert decide(personas, who, register_key(personas, who), release).status_code == 201
    return release


def _ask(personas, release) -> tuple[int, dict]:
    with CaptureQueriesContext(connection) as captured:
        response = personas.client("auditor").get(f"/api/v1/releases/{release.pk}/gate/")
    assert response.status_code == 200, response.content
    return len(captured.captured_queries), response.json()


def _kept_answer(personas, release) -> dict:
    """The approved answer, asked twice: on PostgreSQL the second comes from kept facts."""
    _, first = _ask(personas, release)
    made, again = _ask(personas, release)
    assert again == first
    assert first["state"] == "approved", first
    assert first["may_ship"]
    if connection.vendor == "postgresql":
        assert made == KEPT_FACTS_QUERIES
    return first


def _answer_after_attack(personas, release) -> dict:
    """The next answer, which must have read the facts again."""
    made, answer = _ask(personas, release)
    assert made == changed_gate_queries()
    return answer


def _insider(statement: str, params=()) -> None:
    """One statement, committed on its own, with the append-only triggers lifted as a database
    superuser can."""
    with triggers_bypassed():
        sql(statement, params)


def _forged_copy(model, source_pk, new_pk, **columns) -> None:
    """INSERT a row copied from `source_pk` under `new_pk`, with `columns` changed."""
    _insider(*_forged_copy_sql(model, source_pk, new_pk, **columns))


def _forged_copy_sql(model, source_pk, new_pk, **columns) -> tuple[str, list]:
    columns = {"id": db_id(new_pk), **columns}
    names = [field.column for field in model._meta.concrete_fields]
    values = ["%s" if name in columns else name for name in names]
    params = [columns[name] for name in names if name in columns]
    table = model._meta.db_table
    return (
        f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(values)} FROM {table} "
        "WHERE id = %s",
        [*params, db_id(source_pk)],
    )


def _in_another_session(statement: str, params=()) -> None:
    """A statement committed by another database session (an insider's psql), at once."""
    import psycopg

    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
        other.execute("SET session_replication_role = replica")
        other.execute(statement, params)


def _approval(release) -> Decision:
    return Decision.objects.filter(release=release).earliest("recorded_at")


def _not_counted(answer: dict) -> list[dict]:
    return [entry for reason in answer["reasons"] for entry in reason.get("not_counted", [])]


def test_a_decision_rewritten_in_the_database_changes_the_next_gate_answer(personas, approved):
    _kept_answer(personas, approved)
    decision = _approval(approved)
    _insider("UPDATE audits_decision SET decision = 'reject' WHERE id = %s", [db_id(decision.pk)])
    assert _answer_after_attack(personas, approved)["state"] == "rejected"


def test_a_decision_deleted_from_the_database_is_named_missing_at_the_next_request(
    personas, approved
):
    _kept_answer(personas, approved)
    decision = _approval(approved)
    _insider("DELETE FROM audits_decision WHERE id = %s", [db_id(decision.pk)])
    answer = _answer_after_attack(personas, approved)
    assert answer["state"] == "in_review"
    assert answer["reasons"][0]["code"] == "ledger_mismatch"
    assert answer["reasons"][0]["decisions"] == [str(decision.pk)]


def test_a_forged_rejection_inserted_into_the_database_shows_at_the_next_request(
    personas, approved
):
    _kept_answer(personas, approved)
    _forged_copy(Decision, _approval(approved).pk, uuid.uuid4(), decision="reject")
    assert _answer_after_attack(personas, approved)["state"] == "rejected"


def test_a_check_verdict_rewritten_in_the_database_blocks_at_the_next_request(personas, approved):
    _kept_answer(personas, approved)
    run = CheckRun.objects.get(release=approved)
    _insider("UPDATE audits_checkrun SET verdict = 'fail' WHERE id = %s", [db_id(run.pk)])
    answer = _answer_after_attack(personas, approved)
    assert answer["state"] == "in_review"
    assert answer["reasons"][0]["code"] == "blocking_check_not_passed"


def test_a_forged_check_run_inserted_into_the_database_shows_at_the_next_request(
    personas, approved
):
    """A later attempt counts instead of the one the reviewers signed over."""
    _kept_answer(personas, approved)
    run = CheckRun.objects.get(release=approved)
    _forged_copy(CheckRun, run.pk, uuid.uuid4(), attempt=run.attempt + 1, status="running")
    answer = _answer_after_attack(personas, approved)
    assert answer["state"] == "checking"
    assert answer["reasons"][0]["code"] == "check_pending"


def test_evidence_swapped_under_a_signed_run_makes_its_approvals_stale_at_the_next_request(
    personas, approved
):
    """The gate reads a run's evidence through its manifest digest, which every signature
    covers: a different manifest is different evidence, and no approval covers it."""
    _kept_answer(personas, approved)
    run = CheckRun.objects.get(release=approved)
    _insider(
        "UPDATE audits_checkrun SET manifest_digest = %s WHERE id = %s", ["f" * 64, db_id(run.pk)]
    )
    answer = _answer_after_attack(personas, approved)
    assert answer["state"] == "in_review"
    assert [entry["why"][:7] for entry in _not_counted(answer)] == ["stale: ", "stale: "]


def test_a_reviewer_key_revoked_in_the_database_stops_its_approval_at_the_next_request(
    personas, approved
):
    _kept_answer(personas, approved)
    _insider(
        "UPDATE audits_reviewerkey SET revoked_at = %s WHERE key_id = %s",
        [timezone.now(), _approval(approved).key_id],
    )
    answer = _answer_after_attack(personas, approved)
    assert answer["state"] == "in_review"
    assert "revoked since" in _not_counted(answer)[0]["why"]


def test_a_policy_rewritten_in_the_database_changes_the_next_gate_answer(personas, approved):
    _kept_answer(personas, approved)
    _insider(
        "UPDATE audits_checkpolicy SET approvals_required = 3 WHERE id = %s",
        [db_id(approved.policy_id)],
    )
    assert CheckPolicy.objects.get(pk=approved.policy_id).approvals_required == 3
    answer = _answer_after_attack(personas, approved)
    assert answer["state"] == "in_review"
    assert (answer["reasons"][0]["have"], answer["reasons"][0]["need"]) == (2, 3)


def test_an_approvers_role_removed_in_the_database_stops_their_approval_at_the_next_request(
    personas, approved
):
    _kept_answer(personas, approved)
    _insider("DELETE FROM auth_user_groups WHERE user_id = %s", [personas.reviewer.pk])
    answer = _answer_after_attack(personas, approved)
    assert answer["state"] == "in_review"
    assert _not_counted(answer)[0]["why"] == "the reviewer no longer has the role 'reviewer'"


def test_an_approver_deactivated_in_the_database_stops_their_approval_at_the_next_request(
    personas, approved
):
    _kept_answer(personas, approved)
    _insider("UPDATE auth_user SET is_active = %s WHERE id = %s", [False, personas.reviewer.pk])
    answer = _answer_after_attack(personas, approved)
    assert answer["state"] == "in_review"
    assert _not_counted(answer)[0]["why"] == "the reviewer's account is deactivated"


def test_the_reviewer_group_renamed_in_the_database_stops_approvals_at_the_next_request(
    personas, approved
):
    _kept_answer(personas, approved)
    _insider("UPDATE auth_group SET name = 'former-reviewer' WHERE name = 'reviewer'")
    answer = _answer_after_attack(personas, approved)
    assert answer["state"] == "in_review"
    assert answer["reasons"][0]["have"] == 0


def test_a_required_check_renamed_in_the_database_makes_approvals_stale_at_the_next_request(
    personas, approved
):
    _kept_answer(personas, approved)
    run = CheckRun.objects.get(release=approved)
    _insider(
        "UPDATE audits_requiredcheck SET key = 'renamed' WHERE id = %s", [run.required_check_id]
    )
    answer = _answer_after_attack(personas, approved)
    assert answer["state"] == "in_review"
    assert "check 'renamed' was added" in _not_counted(answer)[0]["why"]


def test_an_account_event_deleted_from_the_ledger_drops_its_trust_warning_at_the_next_request(
    personas, approved
):
    actions.grant_role(actor=personas.admin, user=personas.reviewer, role=Role.AUDITOR)
    assert _kept_answer(personas, approved)["trust_warnings"]
    _insider("DELETE FROM audits_auditevent WHERE verb = 'user.role_granted'")
    assert _answer_after_attack(personas, approved)["trust_warnings"] == []


def test_the_release_opened_event_deleted_from_the_ledger_changes_the_next_answer(
    personas, approved
):
    """Account events count from the release's opening: without it the gate reads none."""
    actions.grant_role(actor=personas.admin, user=personas.reviewer, role=Role.AUDITOR)
    assert _kept_answer(personas, approved)["trust_warnings"]
    _insider(
        "DELETE FROM audits_auditevent WHERE verb = 'release.opened' AND target_id = %s",
        [str(approved.pk)],
    )
    assert _answer_after_attack(personas, approved)["trust_warnings"] == []


def test_a_release_withdrawn_in_the_database_is_withdrawn_at_the_next_request(personas, approved):
    _kept_answer(personas, approved)
    _insider(
        "UPDATE audits_release SET withdrawn_at = %s WHERE id = %s",
        [timezone.now(), db_id(approved.pk)],
    )
    assert _answer_after_attack(personas, approved)["state"] == "withdrawn"


def test_weights_digest_rewritten_in_the_database_shows_at_the_next_request(personas, approved):
    _kept_answer(personas, approved)
    _insider(
        "UPDATE audits_modelversion SET weights_digest = %s WHERE id = %s",
        ["0" * 64, db_id(approved.model_version_id)],
    )
    answer = _answer_after_attack(personas, approved)
    assert answer["model_version"]["weights_digest"] == "0" * 64
    assert answer["state"] == "in_review"  # the approvals signed the old digest


def test_a_role_granted_to_an_approver_shows_a_trust_warning_at_the_next_request(
    personas, approved
):
    """A change through the application (a ledger event and a group membership inserted)."""
    _kept_answer(personas, approved)
    actions.grant_role(actor=personas.admin, user=personas.reviewer, role=Role.AUDITOR)
    answer = _answer_after_attack(personas, approved)
    assert [warning["verb"] for warning in answer["trust_warnings"]] == ["user.role_granted"]


@pytest.mark.django_db  # the whole test runs in one transaction
def test_gate_requests_inside_a_callers_transaction_read_the_facts_and_keep_nothing(
    personas, approved
):
    """Statements in a transaction at READ COMMITTED may each see a different moment, so the
    fingerprint and the facts could disagree: nothing read there is kept."""
    if connection.vendor != "postgresql":
        pytest.skip("facts are kept only on PostgreSQL: run with DATABASE_URL=postgres://…")
    first, again = _ask(personas, approved), _ask(personas, approved)
    assert first == again
    assert first[0] == cold_gate_queries()


def test_a_row_inserted_and_deleted_while_the_gate_reads_is_never_kept_as_a_fact(
    personas, approved, monkeypatch
):
    """The fingerprint and the facts are read in one snapshot. Read at two moments, a forged
    rejection committed in between and deleted again right after would be kept as a fact
    under a fingerprint that matches the rows again, and answered from then on."""
    if connection.vendor != "postgresql":
        pytest.skip("facts are kept only on PostgreSQL: run with DATABASE_URL=postgres://…")
    forged, source = uuid.uuid4(), _approval(approved).pk
    read_facts = queries.gate_facts

    def racing_insider(release):
        _in_another_session(*_forged_copy_sql(Decision, source, forged, decision="reject"))
        try:
            return read_facts(release)
        finally:
            _in_another_session("DELETE FROM audits_decision WHERE id = %s", [str(forged)])

    monkeypatch.setattr(queries, "gate_facts", racing_insider)
    _ask(personas, approved)
    monkeypatch.undo()
    assert not Decision.objects.filter(pk=forged).exists()
    queries_made, answer = _ask(personas, approved)
    assert (queries_made, answer["state"]) == (KEPT_FACTS_QUERIES, "approved")


def test_a_release_that_does_not_exist_answers_404_and_keeps_nothing(personas, approved):
    missing = uuid.uuid4()
    response = personas.client("auditor").get(f"/api/v1/releases/{missing}/gate/")
    assert response.status_code == 404
    assert not Release.objects.filter(pk=missing).exists()
    assert gate_cache.fingerprint(missing) is None
