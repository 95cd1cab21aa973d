"""Attack: delete the ledger's newest events (a decision, a failed check) together with the
checkpoint rows that signed them and the Merkle nodes, and repair the head, so that what is
left is a consistent, shorter ledger. Detected: every signed checkpoint is also written to a log
outside the database, and auditors keep their own; verify_ledger checks the ledger against
both (`--checkpoint FILE`)."""

import json

import pytest

from audits import ledger
from audits.models import AuditEvent, LedgerCheckpoint
from tests.security.tampering import rewrite_from, sql, triggers_bypassed, verify


def _cut_tail(keep: int) -> None:
    """Leave events 1..keep, a rebuilt tree, no checkpoints: a consistent shorter ledger."""
    with triggers_bypassed():
        sql("DELETE FROM audits_auditevent WHERE seq > %s", [keep])
        sql("DELETE FROM audits_ledgercheckpoint")
        sql("UPDATE audits_ledgerhead SET seq = %s", [keep])
        rewrite_from(keep + 1, lambda event: event.data)  # rebuilds nodes, head and frontier


@pytest.fixture
def checkpoint_log(settings, tmp_path):
    settings.ASSAY_CHECKPOINT_LOG = tmp_path / "deployment" / "checkpoints.jsonl"
    return settings.ASSAY_CHECKPOINT_LOG


def test_the_checkpoint_log_outside_the_database_catches_a_cut_tail(
    approved_release, checkpoint_log, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        point = ledger.checkpoint()
    assert json.loads(checkpoint_log.read_text().splitlines()[-1])["body"] == point.body
    size = point.tree_size
    _cut_tail(size - 4)
    assert not LedgerCheckpoint.objects.exists()
    message = verify()
    assert f"it signs a tree of {size} events but the ledger has {size - 4}" in message
    assert f"events #{size - 3} to #{size} were deleted" in message


def test_an_auditors_saved_checkpoint_catches_it_too(
    personas, approved_release, checkpoint_log, tmp_path
):
    saved = personas.client("auditor").get("/api/v1/ledger/checkpoint/").json()
    held = tmp_path / "auditor" / "checkpoint.json"
    held.parent.mkdir()
    held.write_text(json.dumps(saved))
    assert verify("--checkpoint", str(held)) == "ok"
    _cut_tail(saved["tree_size"] - 2)
    checkpoint_log.unlink(missing_ok=True)  # the deployment's log is gone too
    message = verify("--checkpoint", str(held))
    assert f"checkpoint 1 in {held}" in message
    assert "were deleted" in message


def test_a_forged_checkpoint_in_a_held_file_is_refused(approved_release, tmp_path):
    point = ledger.signed_checkpoint(ledger.checkpoint())
    body = json.loads(point["body"])
    forged = {**point, "body": json.dumps({**body, "tree_size": body["tree_size"] - 1})}
    held = tmp_path / "forged.json"
    held.write_text(json.dumps(forged))
    assert "its signature does not verify" in verify("--checkpoint", str(held))


def test_a_rewritten_ledger_is_caught_by_an_earlier_checkpoint(approved_release):
    ledger.checkpoint()
    target = AuditEvent.objects.filter(verb="decision.recorded").first()
    with triggers_bypassed():
        rewrite_from(target.seq, lambda event: {**event.data, "forged": True})
    assert "no longer has the root signed at tree size" in verify()
