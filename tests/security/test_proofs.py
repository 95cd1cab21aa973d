"""Proofs are cheap and honest: inclusion and consistency proofs and checkpoints are built from
stored Merkle nodes with a bounded number of queries whatever the ledger's size, verify against
the signed root, and agree with a tree recomputed from the events."""

import pytest
from django.db import transaction

from audits import ledger, merkle
from audits.ledger import Verb
from audits.models import AuditEvent, CheckPolicy


@pytest.fixture
def long_ledger(policy):
    """A few hundred more events, recorded the way actions record them."""
    with transaction.atomic():
        for i in range(300):
            ledger.record(Verb.POLICY_EDITED, actor=None, target=policy, data={"i": i})
    return AuditEvent.objects.count()


def test_an_inclusion_proof_costs_a_bounded_number_of_queries(
    long_ledger, django_assert_max_num_queries
):
    with django_assert_max_num_queries(4):
        proof = ledger.inclusion(37, long_ledger)
    leaf = merkle.leaf_hash(AuditEvent.objects.get(seq=37).body.encode())
    root = merkle.root(ledger.leaf_hashes(long_ledger))  # recomputed from every event
    assert bytes.fromhex(proof["root_hash"]) == root
    assert merkle.verify_inclusion(
        36, long_ledger, leaf, [bytes.fromhex(p) for p in proof["audit_path"]], root
    )


def test_a_consistency_proof_links_an_old_checkpoint_to_the_current_one(
    long_ledger, django_assert_max_num_queries
):
    with django_assert_max_num_queries(4):
        proof = ledger.consistency(100, long_ledger)
    leaves = ledger.leaf_hashes(long_ledger)
    assert merkle.verify_consistency(
        100,
        long_ledger,
        merkle.root(leaves[:100]),
        merkle.root(leaves),
        [bytes.fromhex(p) for p in proof["proof"]],
    )


def test_proof_requests_outside_the_ledger_are_400(personas, long_ledger):
    client = personas.client("auditor")
    for query in (
        f"inclusion/?seq=1&tree_size={long_ledger + 1}",
        "inclusion/?seq=0&tree_size=5",
        f"consistency/?first=5&second={10**18}",
        "consistency/?first=x&second=2",
    ):
        assert client.get(f"/api/v1/ledger/{query}").status_code == 400, query
    assert CheckPolicy.objects.count() == 1
