"""The offline verifier agrees with verify_ledger on everything both can see: on an untouched
ledger both pass; after each change a database insider makes behind the application's back
(triggers lifted), a dossier exported afterwards fails the offline verifier where
verify_ledger fails, both naming the record."""

import json

import pytest

from audits import ledger
from audits.dossier import actions as dossier_actions
from audits.dossier import verify
from audits.models import AuditEvent, Decision, Evidence, evidence_path
from tests.audits.reviewers import register_key
from tests.security.tampering import db_id, rewrite_from, sql, triggers_bypassed
from tests.security.tampering import verify as verify_ledger


def offline(release, personas, out) -> list[str]:
    dossier_actions.export_dossier(actor=personas.auditor, release=release, out_dir=out)
    return verify.verify(out / "bundle.zip").failures


def _bypassing(attack):
    def run(release, personas):
        with triggers_bypassed():
            return attack(release, personas)

    return run


@_bypassing
def _verdict(release, personas):
    run = release.check_runs.get()
    sql("UPDATE audits_checkrun SET verdict = 'fail' WHERE id = %s", [db_id(run.pk)])
    return f"check run {run.pk}", f"check run {run.pk}"


@_bypassing
def _rationale(release, personas):
    decision = Decision.objects.filter(release=release).first()
    sql("UPDATE audits_decision SET rationale = 'changed' WHERE id = %s", [db_id(decision.pk)])
    return f"decision {decision.pk}", f"decision {decision.pk}"


@_bypassing
def _evidence_file(release, personas):
    evidence = Evidence.objects.get(check_run__release=release, title="fingerprint.svg")
    path = evidence_path(evidence.sha256)
    path.write_bytes(path.read_bytes().replace(b"match", b"matcH", 1))
    return evidence.sha256, "fingerprint.svg does not match the sha256 its run manifest lists"


@_bypassing
def _event_bytes(release, personas):
    event = AuditEvent.objects.get(verb="release.opened", target_id=str(release.pk))
    body = json.loads(event.body)
    body["data"]["purpose"] = "evaluation"
    sql("UPDATE audits_auditevent SET body = %s WHERE seq = %s", [json.dumps(body), event.seq])
    return f"event #{event.seq}", f"ledger event #{event.seq}"


@_bypassing
def _policy(release, personas):
    sql(
        "UPDATE audits_checkpolicy SET approvals_required = 1 WHERE id = %s",
        [db_id(release.policy_id)],
    )
    return (
        f"policy {release.policy}",
        "does not have the digest the release and the ledger recorded",
    )


@_bypassing
def _role(release, personas):
    from django.contrib.auth.models import Group

    group = Group.objects.get(name="admin")
    sql(
        "INSERT INTO auth_user_groups (user_id, group_id) VALUES (%s, %s)",
        [personas.reviewer.pk, group.pk],
    )
    return "user reviewer", "person reviewer: roles or account flags differ"


@_bypassing
def _deleted_decision(release, personas):
    decision = Decision.objects.filter(release=release).first()
    sql("DELETE FROM audits_decision WHERE id = %s", [db_id(decision.pk)])
    return f"decision {decision.pk} was deleted", f"decision {decision.pk} is missing"


def _rewritten_history(release, personas):
    ledger.checkpoint()  # a head signed before the forger rewrites everything after it
    register_key(personas, "reviewer")  # the ledger grows past that head
    opened = AuditEvent.objects.get(verb="release.opened", target_id=str(release.pk))
    with triggers_bypassed():
        rewrite_from(opened.seq, lambda event: {**event.data, "title": "rewritten"})
    return "were rewritten", "the dossier's ledger does not extend it (rewritten history)"


ATTACKS = {
    "a check run's verdict": _verdict,
    "a decision's rationale": _rationale,
    "an evidence file": _evidence_file,
    "an event's bytes": _event_bytes,
    "a published policy": _policy,
    "a role granted in the database": _role,
    "a decision deleted": _deleted_decision,
    "history rewritten with every hash": _rewritten_history,
}


def test_both_verifiers_pass_an_untouched_ledger(
    approved_release, personas, dossier_settings, tmp_path
):
    assert verify_ledger() == "ok"
    assert offline(approved_release, personas, tmp_path) == []


@pytest.mark.parametrize("attack", ATTACKS)
def test_both_verifiers_name_what_an_insider_changed(
    attack, approved_release, personas, dossier_settings, tmp_path
):
    online_says, offline_says = ATTACKS[attack](approved_release, personas)
    online = verify_ledger()
    assert online_says in online, online
    failures = offline(approved_release, personas, tmp_path)
    assert any(offline_says in failure for failure in failures), failures
