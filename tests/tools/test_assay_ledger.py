"""tools/assay_ledger.py, an auditor's own client: a saved checkpoint, later proven consistent
with the live ledger; an event's hash and inclusion recomputed from what the API returns."""

import pytest

from audits import actions, canonical, ledger, merkle
from audits.models import AuditEvent
from tests.security.tampering import rewrite_from, triggers_bypassed

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def auditor(live_server, personas, token_for):
    return ["--server", live_server.url, "--token", token_for(personas.auditor)]


def _run(tool, capsys, *argv) -> tuple[int, str]:
    code = tool.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_tools_hashing_is_the_servers(ledger_tool, personas, model_version):
    for event in AuditEvent.objects.all():
        fields = {
            "seq": event.seq,
            "at": event.at.isoformat().replace("+00:00", "Z"),
            "actor_label": event.actor_label,
            "verb": event.verb,
            "target_type": event.target_type,
            "target_id": event.target_id,
            "data": event.data,
            "prev_hash": event.prev_hash,
        }
        assert ledger_tool.event_bytes(fields) == ledger.event_bytes(event)
        assert ledger_tool.leaf_hash(event.body.encode()) == merkle.leaf_hash(event.body.encode())
    assert ledger_tool.canonical_json({"é": [1.5, 1e-7]}) == canonical.canonical_json(
        {"é": [1.5, 1e-7]}
    )


def test_a_saved_checkpoint_stays_consistent_as_the_ledger_grows(
    ledger_tool, auditor, personas, model_version, policy, tmp_path, capsys
):
    held = tmp_path / "checkpoint.json"
    code, out = _run(ledger_tool, capsys, *auditor, "save", str(held))
    assert code == 0, out
    actions.open_release(actor=personas.submitter, model_version=model_version)
    code, out = _run(ledger_tool, capsys, *auditor, "check", str(held))
    assert code == 0, out
    assert "without changing any of the first" in out


def test_a_rewritten_ledger_fails_the_check(
    ledger_tool, auditor, personas, model_version, policy, tmp_path, capsys
):
    held = tmp_path / "checkpoint.json"
    _run(ledger_tool, capsys, *auditor, "save", str(held))
    target = AuditEvent.objects.get(verb="model_version.registered")
    with triggers_bypassed():
        rewrite_from(target.seq, lambda event: {**event.data, "version": "forged"})
    code, out = _run(ledger_tool, capsys, *auditor, "check", str(held))
    assert code == 1  # the server refuses to hand out its old signature over the new tree
    assert "no longer has the root the server signed" in out
    actions.open_release(actor=personas.submitter, model_version=model_version)
    code, out = _run(ledger_tool, capsys, *auditor, "check", str(held))
    assert code == 1  # and once it grew, the new signed tree does not extend the saved one
    assert "were rewritten" in out


def test_an_event_is_recomputed_and_proven_included(
    ledger_tool, auditor, personas, model_version, policy, tmp_path, capsys
):
    held = tmp_path / "checkpoint.json"
    _run(ledger_tool, capsys, *auditor, "save", str(held))
    seq = AuditEvent.objects.get(verb="policy.published").seq
    code, out = _run(ledger_tool, capsys, *auditor, "event", str(seq), "--against", str(held))
    assert code == 0, out
    assert "is included in the signed tree" in out


def test_an_event_whose_columns_were_changed_fails(
    ledger_tool, auditor, personas, model_version, policy, capsys
):
    from tests.security.tampering import sql

    event = AuditEvent.objects.get(verb="policy.published")
    with triggers_bypassed():
        sql("UPDATE audits_auditevent SET actor_label = 'someone' WHERE seq = %s", [event.seq])
    code, out = _run(ledger_tool, capsys, *auditor, "event", str(event.seq))
    assert code == 1
    assert "are not the bytes the server hashed" in out
