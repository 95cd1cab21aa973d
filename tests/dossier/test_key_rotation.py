"""A dossier exported after the checkpoint key was rotated verifies offline: the bundle carries
the retired keys with their rotation statements, and verify.py believes an earlier checkpoint
signed by a retired key only through the chain of rotations from the current (pinnable) key,
and only for the trees that key held."""

import io
import json
import zipfile

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command

from audits import actions, ledger, signing
from audits.canonical import canonical_json
from audits.dossier.actions import export_dossier
from interp_jobs.worker.tasks import run_check
from tests.audits.reviewers import decide, register_key
from tests.dossier.test_verifier import edit_json, failed, rewrite, run_verifier

pytestmark = pytest.mark.django_db(transaction=True)


def _key_id(key) -> str:
    return signing.key_id(signing.raw_public_key(key.public_key()))


def _rotate() -> None:
    call_command("rotate_ledger_key", stdout=io.StringIO())


@pytest.fixture
def rotated(personas, model_version, policy, settings, dossier_settings, tmp_path):
    """A signed release whose checkpoints span two rotations (three keys), exported."""
    settings.ASSAY_LEDGER_KEY_FILE = tmp_path / "keys" / "ledger-ed25519.pem"
    settings.ASSAY_LEDGER_RETIRED_KEYS_FILE = tmp_path / "keys" / "ledger-retired-keys.json"
    release, _ = actions.open_release(
        actor=personas.submitter, model_version=model_version, policy=policy
    )
    ledger.checkpoint()
    keys = [ledger.server_key()]
    for run in release.check_runs.all():
        run_check.apply(args=[str(run.pk)])
    _rotate()
    keys.append(ledger.server_key())
    decide(personas, "reviewer", register_key(personas, "reviewer"), release)
    ledger.checkpoint()
    _rotate()
    keys.append(ledger.server_key())
    decide(personas, "reviewer2", register_key(personas, "reviewer2"), release)
    export_dossier(actor=personas.auditor, release=release, out_dir=tmp_path / "out")
    return tmp_path / "out" / "bundle.zip", keys


def test_a_dossier_exported_after_rotations_verifies_offline(rotated):
    bundle, keys = rotated
    result = run_verifier(bundle)
    assert result.returncode == 0, result.stdout
    assert "2 retired server key(s), each handed over to the next" in result.stdout
    with zipfile.ZipFile(bundle) as archive:
        server = json.loads(archive.read("ledger/server-key.json"))
        earlier = json.loads(archive.read("ledger/earlier-checkpoints.json"))
    assert server["key_id"] == _key_id(keys[2])
    assert [e["key_id"] for e in server["retired"]] == [_key_id(k) for k in keys[:2]]
    # Earlier checkpoints by every key, the retired ones included, are carried and checked.
    assert {e["checkpoint"]["key_id"] for e in earlier} == {_key_id(k) for k in keys}

    pinned = run_verifier(bundle, "--server-key-id", _key_id(keys[2]))
    assert pinned.returncode == 0, pinned.stdout
    failed(
        run_verifier(bundle, "--server-key-id", _key_id(keys[0])),
        f"is not the one you pinned ({_key_id(keys[0])})",
    )


def test_a_checkpoint_by_a_stolen_retired_key_past_its_rotation(rotated, tmp_path):
    bundle, keys = rotated
    with zipfile.ZipFile(bundle) as archive:
        head = json.loads(json.loads(archive.read("ledger/checkpoint.json"))["body"])
        retired = json.loads(archive.read("ledger/server-key.json"))["retired"]
    body = canonical_json({**head, "timestamp": "2030-01-01T00:00:00.000000+00:00"})
    forged = {
        "body": body.decode(),
        "signature": signing.b64(keys[0].sign(body)),
        "key_id": _key_id(keys[0]),
    }
    held = tmp_path / "forged.json"
    held.write_text(json.dumps(forged))
    size = retired[0]["statement"]["tree_size"]
    failed(
        run_verifier(bundle, "--checkpoint", str(held)),
        f"for a tree of {head['tree_size']} events, but that key was retired at {size}",
    )


@pytest.mark.parametrize("attack", ["signature", "widened", "slipped", "dropped"])
def test_a_changed_chain_of_keys_in_the_bundle(rotated, tmp_path, attack):
    bundle, keys = rotated

    def change(server):
        entry = server["retired"][0]
        if attack == "signature":
            sig = bytearray(signing.b64decode(entry["signatures"]["new"], "sig"))
            sig[3] ^= 1
            entry["signatures"]["new"] = signing.b64(bytes(sig))
        elif attack == "widened":
            entry["statement"]["tree_size"] += 1
        elif attack == "slipped":
            # A key of the forger's, handed over to the stolen first key and signed by both:
            # every signature holds, but no rotation event in the signed tree retired it.
            theirs = Ed25519PrivateKey.generate()
            statement = {
                **entry["statement"],
                "old_key_id": _key_id(theirs),
                "old_public_key": signing.b64(signing.raw_public_key(theirs.public_key())),
                "new_key_id": entry["statement"]["old_key_id"],
                "new_public_key": entry["statement"]["old_public_key"],
                "tree_size": 1,
            }
            message = ledger.rotation_message(statement)
            server["retired"].insert(
                0,
                {
                    **entry,
                    "key_id": statement["old_key_id"],
                    "public_key": statement["old_public_key"],
                    "statement": statement,
                    "signatures": {
                        "old": signing.b64(theirs.sign(message)),
                        "new": signing.b64(keys[0].sign(message)),
                    },
                },
            )
        else:
            del server["retired"][1]

    rewrite(bundle, lambda files: edit_json(files, "ledger/server-key.json", change))
    result = run_verifier(bundle)
    expected = {
        "signature": "the new key's signature on the rotation statement does not verify",
        "widened": "the old key's signature on the rotation statement does not verify",
        "slipped": "the bundle does not show the ledger.key_rotated event #2",
        "dropped": "the chain of rotations is broken",
    }[attack]
    if attack == "slipped":
        failed(result, expected)
    else:  # the earlier checkpoints of the keys the chain no longer vouches for fall with it
        failed(result, expected, "an earlier checkpoint in the bundle does not verify: it names")
