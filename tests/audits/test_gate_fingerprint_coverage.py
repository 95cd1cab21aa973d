"""The gate's kept facts are only as fresh as its fingerprint covers them (audits/gate_cache.py):
the fingerprint's SQL lists by hand the tables queries.gate_facts reads. A later change that
made the gate read another table (a policy assignment, evidence rows) would serve answers that
miss a change to that table, so this test reads which tables a gate request actually touches
and fails when one is not fingerprinted (a hostile review's finding)."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audits import gate_cache
from tests.audits.test_gate_queries import _four_decisions, _release_with_checks

TABLE = re.compile(r'\b(?:FROM|JOIN)\s+"([a-z0-9_]+)"', re.IGNORECASE)
FINGERPRINT_TABLE = re.compile(r"\b(?:FROM|JOIN)\s+([a-z0-9_]+)\b", re.IGNORECASE)
# Read by every API request before the view, not facts of the release: the caller's session.
NOT_FACTS = {"django_session"}


def _fingerprinted_tables() -> set[str]:
    named = set(FINGERPRINT_TABLE.findall(gate_cache._fingerprint_sql()))
    return named - {"release", "runs", "decisions", "memberships", "opened", "versions"}


@pytest.mark.django_db
def test_every_table_a_gate_request_reads_is_in_the_fingerprint(personas, model_version):
    release = _release_with_checks(personas, model_version, 3)
    _four_decisions(personas, release)
    with CaptureQueriesContext(connection) as captured:
        response = personas.client("auditor").get(f"/api/v1/releases/{release.pk}/gate/")
    assert response.status_code == 200, response.content
    read = {table for query in captured for table in TABLE.findall(query["sql"] or "")}
    assert read, "no query captured"
    missing = read - _fingerprinted_tables() - NOT_FACTS
    assert not missing, f"the gate reads {sorted(missing)}, which the fingerprint does not cover"
