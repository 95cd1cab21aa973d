"""verify.py carries its own copies of RFC 8785, DSSE PAE and RFC 6962 (an auditor runs it
without Assay); they must agree with audits.canonical, audits.signing and audits.merkle, and its
gate must agree with audits.gate on every state a release can be in."""

import hashlib
import random

from audits import actions, canonical, gate, merkle, queries, signing
from audits.dossier import actions as dossier_actions
from audits.dossier import verify
from audits.models import ReviewerKey
from tests.audits.reviewers import decide, register_key
from tests.security.conftest import checked


def _values(rng: random.Random, depth: int = 0):
    choices = [
        lambda: rng.randint(-(2**53), 2**53),
        lambda: rng.uniform(-1e6, 1e6),
        lambda: rng.choice(
            [0.0, -0.0, 1e-7, 1e21, 1e-6, 123456789.0, 5e-324, 1.7976931348623157e308]
        ),
        lambda: rng.random() * 10 ** rng.randint(-30, 30),
        lambda: "".join(
            chr(
                rng.choice(
                    [rng.randint(32, 126), rng.randint(0xA0, 0x2FFF), 0x1F600, 0x10, 0x22, 0x5C]
                )
            )
            for _ in range(rng.randint(0, 8))
        ),
        lambda: rng.choice([True, False, None]),
    ]
    if depth < 3:
        choices.append(lambda: [_values(rng, depth + 1) for _ in range(rng.randint(0, 4))])
        choices.append(
            lambda: {_key(rng): _values(rng, depth + 1) for _ in range(rng.randint(0, 4))}
        )
    return rng.choice(choices)()


def _key(rng: random.Random) -> str:
    return "".join(chr(rng.choice([rng.randint(97, 122), 0xE9, 0x1F600, 0x20AC])) for _ in range(3))


def test_canonical_json_agrees_with_audits_canonical():
    rng = random.Random(8785)
    for _ in range(3000):
        value = _values(rng)
        assert verify.canonical_json(value) == canonical.canonical_json(value), value


def test_dsse_pae_and_signatures_agree_with_audits_signing():
    key = signing.generate_private_key()
    statement = {
        "_type": signing.STATEMENT_TYPE,
        "predicateType": signing.PREDICATE_TYPE,
        "predicate": {"x": "é"},
    }
    envelope = signing.sign_envelope(statement, key)
    payload = verify.b64decode(envelope["payload"])
    assert verify.pae(verify.PAYLOAD_TYPE, payload) == signing.pae(signing.PAYLOAD_TYPE, payload)
    raw = signing.raw_public_key(key.public_key())
    signature = verify.b64decode(envelope["signatures"][0]["sig"])
    assert verify.ed25519_verifies(raw, signature, verify.pae(verify.PAYLOAD_TYPE, payload))
    assert not verify.ed25519_verifies(
        raw, signature, verify.pae(verify.PAYLOAD_TYPE, payload + b" ")
    )


def test_merkle_hashes_and_proofs_agree_with_audits_merkle():
    for size in (1, 2, 3, 5, 8, 13, 31, 64, 100):
        entries = [hashlib.sha256(str(i).encode()).digest() for i in range(size)]
        leaves = [merkle.leaf_hash(e) for e in entries]
        assert [verify.leaf_hash(e) for e in entries] == leaves
        root = merkle.root(leaves)
        for index in range(size):
            proof = merkle.inclusion_proof(index, leaves)
            assert verify.verify_inclusion(index, size, leaves[index], proof, root)
            assert not verify.verify_inclusion(index, size, verify.leaf_hash(b"x"), proof, root)
        for first in range(1, size + 1):
            proof = merkle.consistency_proof(first, leaves)
            first_root = merkle.root(leaves[:first])
            assert verify.verify_consistency(first, size, first_root, root, proof)
            assert merkle.verify_consistency(first, size, first_root, root, proof)
            if first < size:
                assert not verify.verify_consistency(first, size, root, root, proof)


# --- the gate ---------------------------------------------------------------------------


def _states(personas, release):
    """Walk the release through the states the gate can answer, yielding after each step."""
    yield "checking"
    release = checked(release)
    yield "in_review (no approvals)"
    keys = {who: register_key(personas, who) for who in ("reviewer", "reviewer2")}
    assert decide(personas, "reviewer", keys["reviewer"], release).status_code == 201
    yield "in_review (one approval)"
    assert decide(personas, "reviewer2", keys["reviewer2"], release).status_code == 201
    yield "approved"
    actions.rerun_check(actor=personas.submitter, release=release, check_key="fingerprint")
    yield "checking again (approvals now stale)"
    checked(release)
    yield "in_review (stale approvals)"
    assert decide(personas, "reviewer", keys["reviewer"], release).status_code == 201
    assert decide(personas, "reviewer2", keys["reviewer2"], release).status_code == 201
    yield "approved again"
    key = ReviewerKey.objects.get(user=personas.reviewer)
    actions.revoke_reviewer_key(actor=personas.reviewer, key=key)
    yield "in_review (an approval's key revoked)"
    new_key = register_key(personas, "reviewer2")
    assert decide(personas, "reviewer2", new_key, release, "reject").status_code == 201
    yield "rejected"
    actions.withdraw_release(actor=personas.submitter, release=release, reason="done")
    yield "withdrawn"


def test_the_verifiers_gate_agrees_with_audits_gate_in_every_state(
    personas, model_version, policy, dossier_settings, tmp_path
):
    release, _ = actions.open_release(actor=personas.submitter, model_version=model_version)
    seen = []
    for step, label in enumerate(_states(personas, release)):
        release.refresh_from_db()
        expected = gate.evaluate(queries.gate_facts(release))
        out = tmp_path / f"step-{step}"
        dossier_actions.export_dossier(actor=personas.auditor, release=release, out_dir=out)
        report = verify.verify(out / "bundle.zip")
        assert not report.failures, (label, report.failures)
        records, ledger = verify.load_records(verify.Bundle(out / "bundle.zip")), verify.Ledger()
        bundle = verify.Bundle(out / "bundle.zip")
        assert verify.check_checkpoint(bundle, verify.Report(), ledger, None)
        verify.check_events(bundle, verify.Report(), ledger)
        ours = verify.recompute_gate(records, ledger)
        assert (ours["state"], ours["may_ship"]) == (expected.state, expected.may_ship), label
        assert sorted(ours["reasons"]) == sorted(
            (r["code"], r.get("check", "")) for r in expected.reasons
        ), label
        seen.append(expected.state)
    assert set(seen) == {"checking", "in_review", "approved", "rejected", "withdrawn"}


def test_an_evaluation_never_ships_in_the_verifiers_gate_either(
    personas, model_version, policy, dossier_settings, tmp_path
):
    release, _ = actions.open_release(
        actor=personas.submitter, model_version=model_version, policy=policy, purpose="evaluation"
    )
    checked(release)
    dossier_actions.export_dossier(actor=personas.auditor, release=release, out_dir=tmp_path)
    bundle = verify.Bundle(tmp_path / "bundle.zip")
    ledger = verify.Ledger()
    verify.check_checkpoint(bundle, verify.Report(), ledger, None)
    verify.check_events(bundle, verify.Report(), ledger)
    answer = verify.recompute_gate(verify.load_records(bundle), ledger)
    assert answer["blockers"] == ["evaluation"]
    assert answer["may_ship"] is False
    assert not verify.verify(tmp_path / "bundle.zip").failures
