"""Shared steps of the attack tests: a release whose checks ran, signed by reviewers."""

import pytest

from audits import actions
from interp_jobs.worker.tasks import run_check
from tests.audits.reviewers import decide, register_key


def checked(release):
    for run in release.check_runs.all():
        run_check.apply(args=[str(run.pk)])
    release.refresh_from_db()
    return release


@pytest.fixture
def checked_release(personas, model_version, policy):
    release, _ = actions.open_release(actor=personas.submitter, model_version=model_version)
    return checked(release)


@pytest.fixture
def approved_release(personas, checked_release):
    """Approved by both reviewers; their private keys are kept as release.keys[who]."""
    checked_release.keys = {}
    for who in ("reviewer", "reviewer2"):
        checked_release.keys[who] = key = register_key(personas, who)
        assert decide(personas, who, key, checked_release).status_code == 201
    assert gate(personas, checked_release)["may_ship"] is True
    return checked_release


def gate(personas, release, query: str = "") -> dict:
    response = personas.client("auditor").get(f"/api/v1/releases/{release.pk}/gate/{query}")
    assert response.status_code == 200, response.content
    return response.json()
