"""Two reviewers sign with CLI-generated keys against a live server; the gate turns approved."""

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audits import actions
from audits.models import Decision
from interp_jobs.worker.tasks import run_check

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _token(user) -> str:
    """An API token the person makes for themselves (acting as them, as a login would)."""
    from knox.models import get_token_model

    from audits import current_actor

    with current_actor.acting_as(user):
        return get_token_model().objects.create(user=user)[1]


def _sign(live_server, user, key, release, *extra):
    out = io.StringIO()
    call_command(
        "sign_decision",
        "--server",
        live_server.url,
        "--token",
        _token(user),
        "--release",
        str(release.pk),
        "--key",
        str(key),
        "--register-key",
        "--yes",
        *extra,
        stdout=out,
    )
    return out.getvalue()


def test_reviewers_sign_with_the_cli_and_the_gate_opens(
    live_server, personas, model_version, policy, tmp_path
):
    release, _ = actions.open_release(
        actor=personas.submitter, model_version=model_version, policy=policy
    )
    for run in release.check_runs.all():
        run_check.apply(args=[str(run.pk)])
    for who in ("reviewer", "reviewer2"):
        key = tmp_path / f"{who}.pem"
        call_command("keygen", str(key), stdout=io.StringIO())
        shown = _sign(
            live_server,
            getattr(personas, who),
            key,
            release,
            "--decision",
            "approve",
            "--rationale",
            "fingerprint matches",
            "--name",
            f"{who} of the safety team",
        )
        assert "You are about to sign:" in shown
        assert "weights_fingerprint" in shown
        assert "recorded decision" in shown
    release.refresh_from_db()
    assert release.state == "approved"
    assert {d.statement["predicate"]["signer"]["name"] for d in Decision.objects.all()} == {
        "reviewer of the safety team",
        "reviewer2 of the safety team",
    }


def test_the_cli_reports_the_servers_refusal(
    live_server, personas, model_version, policy, tmp_path
):
    release, _ = actions.open_release(
        actor=personas.submitter, model_version=model_version, policy=policy
    )
    key = tmp_path / "k.pem"
    call_command("keygen", str(key), stdout=io.StringIO())
    with pytest.raises(CommandError, match="checks are still running"):
        _sign(
            live_server,
            personas.reviewer,
            key,
            release,
            "--decision",
            "approve",
            "--rationale",
            "too early",
        )
