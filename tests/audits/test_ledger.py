"""The tamper-evident ledger: hash chain, Merkle proofs, signed checkpoints, triggers, and
verify_ledger naming what was changed behind the application's back."""

import base64
import hashlib
import io
import itertools

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from audits import actions, merkle
from audits.models import AuditEvent, Decision, Evidence
from interp_jobs.worker.tasks import run_check
from tests.audits.reviewers import decide, register_key
from tests.security.tampering import rewrite_from, triggers_bypassed, verify
from tests.security.tampering import sql as _sql


@pytest.fixture
def signed_release(personas, model_version, policy):
    release, _ = actions.open_release(
        actor=personas.submitter, model_version=model_version, policy=policy
    )
    for run in release.check_runs.all():
        run_check.apply(args=[str(run.pk)])
    for who in ("reviewer", "reviewer2"):
        assert decide(personas, who, register_key(personas, who), release).status_code == 201
    return release


def _verify() -> str:
    return verify()


def test_every_event_chains_to_the_previous_one(signed_release):
    events = list(AuditEvent.objects.order_by("seq"))
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    assert events[0].prev_hash == "0" * 64
    for previous, event in itertools.pairwise(events):
        assert event.prev_hash == previous.entry_hash
    assert _verify() == "ok"


@pytest.mark.parametrize(
    ("table", "column"),
    [("audits_auditevent", "verb"), ("audits_decision", "rationale"), ("audits_evidence", "title")],
)
def test_triggers_refuse_update_and_delete(signed_release, table, column):
    for statement in (f"UPDATE {table} SET {column} = 'changed'", f"DELETE FROM {table}"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            _sql(statement)


def test_a_changed_ledger_row_is_named_by_verify_ledger(signed_release):
    event = AuditEvent.objects.get(verb="release.opened")
    with triggers_bypassed():
        _sql(
            "UPDATE audits_auditevent SET actor_label = %s WHERE seq = %s",
            ["someone-else", event.seq],
        )
    message = _verify()
    assert f"event #{event.seq}: its columns (actor) differ from the bytes" in message


def test_a_rewritten_chain_is_caught_by_the_signed_checkpoint(signed_release):
    call_command("verify_ledger", stdout=io.StringIO())  # signs a checkpoint
    target = AuditEvent.objects.get(verb="decision.recorded", actor_label="reviewer")
    with triggers_bypassed():
        rewrite_from(target.seq, lambda event: {**event.data, "forged": True})
    message = _verify()
    assert "no longer has the root signed at tree size" in message


def test_a_changed_decision_row_is_reported(signed_release):
    decision = Decision.objects.first()
    with triggers_bypassed():
        _sql(
            "UPDATE audits_decision SET decision = 'reject' WHERE id = %s",
            [decision.pk.hex if connection.vendor == "sqlite" else str(decision.pk)],
        )
    message = _verify()
    assert f"decision {decision.pk}" in message
    assert "differs from the statement its reviewer signed" in message


def test_one_changed_byte_of_evidence_is_reported(signed_release):
    evidence = Evidence.objects.get(title="fingerprint.json")
    data = bytearray(evidence.path.read_bytes())
    data[0] ^= 0x01
    evidence.path.write_bytes(bytes(data))
    message = _verify()
    assert f"evidence {evidence.pk} (fingerprint.json) no longer matches" in message


def test_inclusion_and_consistency_proofs_verify_against_signed_checkpoints(
    personas, signed_release
):
    client = personas.client("auditor")
    first = client.get("/api/v1/ledger/checkpoint/").json()
    actions.withdraw_release(actor=personas.submitter, release=signed_release, reason="test")
    second = client.get("/api/v1/ledger/checkpoint/").json()
    public = base64.b64decode(client.get("/api/v1/ledger/public-key/").json()["public_key"])
    for point in (first, second):
        Ed25519PublicKey.from_public_bytes(public).verify(
            base64.b64decode(point["signature"]), point["body"].encode()
        )
    assert second["tree_size"] > first["tree_size"]
    for seq in (1, first["tree_size"], second["tree_size"]):
        proof = client.get(
            f"/api/v1/ledger/inclusion/?seq={seq}&tree_size={second['tree_size']}"
        ).json()
        assert merkle.verify_inclusion(
            seq - 1,
            second["tree_size"],
            bytes.fromhex(proof["leaf_hash"]),
            [bytes.fromhex(node) for node in proof["audit_path"]],
            bytes.fromhex(second["root_hash"]),
        )
    consistency = client.get(
        f"/api/v1/ledger/consistency/?first={first['tree_size']}&second={second['tree_size']}"
    ).json()
    assert merkle.verify_consistency(
        first["tree_size"],
        second["tree_size"],
        bytes.fromhex(first["root_hash"]),
        bytes.fromhex(second["root_hash"]),
        [bytes.fromhex(n) for n in consistency["proof"]],
    )


def test_leaf_hashes_follow_rfc6962_domain_separation(signed_release):
    from audits import ledger

    event = AuditEvent.objects.get(seq=1)
    assert ledger.leaf_hashes(1)[0] == hashlib.sha256(b"\x00" + ledger.event_bytes(event)).digest()


@pytest.mark.parametrize(
    "query", ["seq=0&tree_size=1", "seq=5&tree_size=2", "seq=x", "seq=1&tree_size=999999"]
)
def test_bad_proof_requests_are_400(personas, signed_release, query):
    assert personas.client("auditor").get(f"/api/v1/ledger/inclusion/?{query}").status_code == 400
