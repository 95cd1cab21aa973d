"""The gate's cost per request: a fixed number of queries, whatever the number of checks and
signed decisions (issue 14, item 5). Every fact is still read fresh on each request, or, on
PostgreSQL, kept facts are used only after one query shows every row they came from unchanged
(audits/gate_cache.py; its attacks: test_gate_cache.py)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audits import actions
from audits.models import Decision
from audits.roles import Role
from interp_jobs.worker.tasks import run_check
from tests.audits.reviewers import decide, register_key
from tests.security.tampering import db_id, sql, triggers_bypassed

# An auditor's gate request (authentication forced, so no token lookup): the auditor's roles,
# the release with its model version and policy, its check runs, its decisions with their keys
# and reviewers, the reviewers' roles, and the release's ledger events.
GATE_QUERIES = 6
# On PostgreSQL the facts are kept per process with a fingerprint of the rows they came from
# (audits/gate_cache.py). A release's first request reads the fingerprint and the facts in one
# snapshot (BEGIN, SET TRANSACTION, the fingerprint, the facts, COMMIT); a request that finds
# the fingerprint unchanged makes only the roles' query and the fingerprint's; one that finds
# it changed reads it, then all of the first request's. Inside a caller's transaction (as in
# most tests) nothing is kept: the fingerprint, then the facts.
FINGERPRINT_QUERIES = 1
SNAPSHOT_QUERIES = 3
KEPT_FACTS_QUERIES = 2


def cold_gate_queries() -> int:
    """The queries of a release's first gate request in this process."""
    if connection.vendor != "postgresql":
        return GATE_QUERIES
    if connection.in_atomic_block:
        return GATE_QUERIES + FINGERPRINT_QUERIES
    return GATE_QUERIES + SNAPSHOT_QUERIES + FINGERPRINT_QUERIES


def changed_gate_queries() -> int:
    """The queries of a gate request after a row the kept facts came from changed."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return cold_gate_queries()
    return FINGERPRINT_QUERIES + cold_gate_queries()


def _release_with_checks(personas, model_version, count: int):
    """A release of a default policy with `count` fingerprint checks, all of them run."""
    draft = actions.create_policy(
        actor=personas.admin,
        name=f"checks-{count}",
        approvals_required=2,
        checks=[{"key": f"fingerprint-{i}", "kind": "weights_fingerprint"} for i in range(count)],
    )
    actions.publish_policy(actor=personas.admin, policy=draft)
    actions.assign_policy(actor=personas.admin, family="", policy_name=f"checks-{count}")
    release, _ = actions.open_release(actor=personas.submitter, model_version=model_version)
    _run_all(release)
    return release


def _run_all(release):
    for run in release.check_runs.filter(status="queued"):
        run_check.apply(args=[str(run.pk)])


def _one_decision(personas, release):
    key = register_key(personas, "reviewer")
    assert decide(personas, "reviewer", key, release).status_code == 201


def _four_decisions(personas, release):
    """Two approvals and a waiver, one check re-run (so those three are stale and the gate
    explains each), then a current approval."""
    keys = {who: register_key(personas, who) for who in ("reviewer", "reviewer2")}
    for who in ("reviewer", "reviewer2"):
        assert decide(personas, who, keys[who], release).status_code == 201
    waiver = decide(personas, "reviewer", keys["reviewer"], release, "waive", "fingerprint-1")
    assert waiver.status_code == 201
    actions.rerun_check(actor=personas.submitter, release=release, check_key="fingerprint-2")
    _run_all(release)
    assert decide(personas, "reviewer2", keys["reviewer2"], release).status_code == 201


def _gate_queries(personas, release) -> tuple[int, dict]:
    client = personas.client("auditor")
    with CaptureQueriesContext(connection) as captured:
        response = client.get(f"/api/v1/releases/{release.pk}/gate/")
    assert response.status_code == 200, response.content
    return len(captured.captured_queries), response.json()


@pytest.mark.django_db
def test_the_gate_makes_the_same_few_queries_for_more_checks_and_decisions(personas, model_version):
    small = _release_with_checks(personas, model_version, 2)
    large = _release_with_checks(personas, model_version, 6)
    # Approvers' accounts changed by someone else after the releases opened: trust warnings.
    for who in (personas.reviewer, personas.reviewer2):
        actions.grant_role(actor=personas.admin, user=who, role=Role.AUDITOR)
    _one_decision(personas, small)
    _four_decisions(personas, large)
    assert large.decisions.count() == 4
    assert large.check_runs.count() == 7

    small_queries, small_answer = _gate_queries(personas, small)
    large_queries, large_answer = _gate_queries(personas, large)

    # Both answers read every kind of fact: approvals, stale decisions explained against the
    # current runs, and a trust warning from the ledger's account events.
    assert small_answer["trust_warnings"]
    assert large_answer["trust_warnings"]
    not_counted = [
        entry for reason in large_answer["reasons"] for entry in reason.get("not_counted", [])
    ]
    assert any(entry["why"].startswith("stale: ") for entry in not_counted), large_answer
    assert (small_queries, large_queries) == (cold_gate_queries(), cold_gate_queries())


@pytest.mark.django_db(transaction=True)  # autocommit, as the gate endpoint runs
def test_a_repeated_gate_request_on_postgresql_reads_one_fingerprint_instead_of_the_facts(
    personas, model_version
):
    if connection.vendor != "postgresql":
        pytest.skip("facts are kept only on PostgreSQL: run with DATABASE_URL=postgres://…")
    release = _release_with_checks(personas, model_version, 6)
    _four_decisions(personas, release)
    first_queries, first = _gate_queries(personas, release)
    again_queries, again = _gate_queries(personas, release)
    assert (first_queries, again_queries) == (cold_gate_queries(), KEPT_FACTS_QUERIES)
    assert again == first


@pytest.mark.django_db
def test_the_gate_reads_a_changed_fact_at_the_next_request(personas, model_version):
    """No answer is kept between requests: a decision row deleted behind the application's
    back is named missing at the very next request."""
    release = _release_with_checks(personas, model_version, 2)
    _one_decision(personas, release)
    _, before = _gate_queries(personas, release)
    assert before["reasons"][0]["code"] == "approvals_missing"
    decision = Decision.objects.get(release=release)
    with triggers_bypassed():
        sql("DELETE FROM audits_decision WHERE id = %s", [db_id(decision.pk)])
    _, after = _gate_queries(personas, release)
    assert after["reasons"][0]["code"] == "ledger_mismatch"
    assert after["reasons"][0]["decisions"] == [str(decision.pk)]
