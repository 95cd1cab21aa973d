"""The offline verifier, run as an auditor runs it (a separate Python process, from a folder
without the project), passes a fresh bundle and fails, naming the cause, on each attack. An
attacker who edits a file also rewrites manifest.json (it is not signed), so each attack is
made that way: the verifier must catch it by what it means, not only by the file hash."""

import ast
import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from audits.dossier import verify

pytestmark = pytest.mark.django_db

VERIFY = Path(verify.__file__)


def run_verifier(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    """python -I verify.py bundle.zip, with the copy of verify.py inside the bundle, from a
    folder where nothing of Assay can be imported."""
    folder = bundle.parent
    with zipfile.ZipFile(bundle) as archive:
        (folder / "verify.py").write_bytes(archive.read("verify.py"))
    return subprocess.run(
        [sys.executable, "-I", str(folder / "verify.py"), str(bundle), *args],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=120,
        check=False,
    )


def rewrite(bundle: Path, edit, *, fix_manifest: bool = True) -> None:
    """Apply edit(files) to the bundle's files, then (as a careful forger) recompute the
    manifest and the PDF digest file's manifest_sha256."""
    with zipfile.ZipFile(bundle) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    edit(files)
    if fix_manifest:
        manifest = json.loads(files["manifest.json"])
        manifest["files"] = [
            {"path": p, "sha256": hashlib.sha256(d).hexdigest(), "size": len(d)}
            for p, d in sorted(files.items())
            if p not in ("manifest.json", "dossier-pdf.json")
        ]
        files["manifest.json"] = json.dumps(manifest, indent=1, sort_keys=True).encode()
        pdf = json.loads(files["dossier-pdf.json"])
        pdf["manifest_sha256"] = hashlib.sha256(files["manifest.json"]).hexdigest()
        files["dossier-pdf.json"] = json.dumps(pdf).encode()
    with zipfile.ZipFile(bundle, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def edit_json(files: dict, name: str, change) -> None:
    value = json.loads(files[name])
    change(value)
    files[name] = json.dumps(value, indent=1, sort_keys=True).encode()


def failed(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "NOT VERIFIED" in result.stdout
    for text in expected:
        assert text in result.stdout, result.stdout


def test_a_fresh_bundle_verifies_with_its_pdf(exported, tmp_path):
    result = run_verifier(exported.copy_to(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "VERIFIED: every file, signature, proof and record checks out." in result.stdout
    assert "dossier.pdf is the PDF this bundle was made with" in result.stdout
    assert "gate recomputed from the records: approved, may_ship true" in result.stdout
    assert "3 earlier" not in result.stdout or "extends each" in result.stdout


def test_one_byte_of_an_evidence_file_changed(exported, tmp_path):
    bundle = exported.copy_to(tmp_path)
    refusal = next(
        r for r in exported.records["check_runs"] if r["key"] == "refusal" and r["counting"]
    )
    svg = next(e for e in refusal["evidence"] if e["title"] == "behavior.svg")

    def flip(files):
        data = bytearray(files[svg["path"]])
        data[100] ^= 0x01
        files[svg["path"]] = bytes(data)

    rewrite(bundle, flip)
    failed(
        run_verifier(bundle),
        f"check run {refusal['id']} (refusal #1): evidence file {svg['path']} does not match "
        "the sha256 its run manifest lists",
    )


def test_one_byte_changed_without_rewriting_the_manifest_is_named_by_file(exported, tmp_path):
    bundle = exported.copy_to(tmp_path)
    path = next(p for p in exported.files() if p.endswith("behavior.svg"))

    def flip(files):
        files[path] = files[path][:-2] + b"X>"

    rewrite(bundle, flip, fix_manifest=False)
    failed(run_verifier(bundle), f"file {path}: its sha256 or size differs from the manifest's")


def test_a_decisions_rationale_changed(exported, tmp_path):
    bundle = exported.copy_to(tmp_path)
    target = exported.records["decisions"][1]

    def change(files):
        edit_json(files, "records/decisions.json", lambda ds: ds[1].update(rationale="fine by me"))

    rewrite(bundle, change)
    failed(
        run_verifier(bundle),
        f"decision {target['id']} (approve by reviewer): the record differs from the statement "
        "its reviewer signed (rationale)",
    )


def test_a_rationale_changed_inside_the_signed_statement_breaks_the_signature(exported, tmp_path):
    bundle = exported.copy_to(tmp_path)
    target = exported.records["decisions"][1]
    name = f"signatures/{target['id']}.dsse.json"

    def change(files):
        def forged(envelope):
            statement = json.loads(verify.b64decode(envelope["payload"]))
            statement["predicate"]["rationale"] = "fine by me"
            envelope["payload"] = verify.base64.b64encode(verify.canonical_json(statement)).decode()

        edit_json(files, name, forged)

    rewrite(bundle, change)
    failed(
        run_verifier(bundle),
        f"decision {target['id']} (approve by reviewer): its signature does not verify with the "
        "bundled key of reviewer",
    )


def test_a_signature_removed(exported, tmp_path):
    bundle = exported.copy_to(tmp_path)
    target = exported.records["decisions"][0]
    name = f"signatures/{target['id']}.dsse.json"
    rewrite(bundle, lambda files: edit_json(files, name, lambda e: e.update(signatures=[])))
    failed(
        run_verifier(bundle),
        f"decision {target['id']} (waive by reviewer2): its envelope carries no signature",
        # without the waiver, the failing blocking check stops the release
        "the gate recomputed from the bundled records answers in_review",
    )


def test_a_forged_checkpoint(exported, tmp_path):
    bundle = exported.copy_to(tmp_path)

    def forge(files):
        def change(held):
            body = json.loads(held["body"])
            body["root_hash"] = "00" * 32
            held["body"] = verify.canonical_json(body).decode()

        edit_json(files, "ledger/checkpoint.json", change)

    rewrite(bundle, forge)
    failed(
        run_verifier(bundle),
        "ledger/checkpoint.json: the signed checkpoint does not verify with the server's key "
        "(forged or changed)",
    )


def test_a_checkpoint_signed_by_another_key_with_that_key_bundled(exported, tmp_path):
    """A forger who re-signs the checkpoint with their own key and bundles that key is caught
    by the server key id the auditor pins (printed in the PDF, and known from the server)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from audits import signing

    bundle = exported.copy_to(tmp_path)
    real = json.loads(exported.files()["ledger/server-key.json"])["key_id"]
    forger = Ed25519PrivateKey.generate()
    raw = signing.raw_public_key(forger.public_key())

    def forge(files):
        held = json.loads(files["ledger/checkpoint.json"])
        held["signature"] = signing.b64(forger.sign(held["body"].encode()))
        held["key_id"] = signing.key_id(raw)
        files["ledger/checkpoint.json"] = json.dumps(held).encode()
        key = {
            "algorithm": "ed25519",
            "public_key": signing.b64(raw),
            "key_id": signing.key_id(raw),
        }
        files["ledger/server-key.json"] = json.dumps(key).encode()

    rewrite(bundle, forge)
    failed(run_verifier(bundle, "--server-key-id", real), f"is not the one you pinned ({real})")


def test_a_proof_for_another_tree(exported, tmp_path):
    bundle = exported.copy_to(tmp_path)
    proof = exported.other_tree_proof
    seq = str(proof["seq"])

    def swap(files):
        edit_json(files, "ledger/proofs.json", lambda p: p["proofs"].update({seq: proof}))

    rewrite(bundle, swap)
    failed(run_verifier(bundle), f"ledger event #{seq}: its inclusion proof is for another tree")

    # ... and relabelled as a proof for the signed tree size, it does not reach the signed root
    bundle = exported.copy_to(tmp_path / "relabelled")
    relabelled = {**proof, "tree_size": proof["tree_size"] + 1}
    rewrite(
        bundle,
        lambda files: edit_json(
            files, "ledger/proofs.json", lambda p: p["proofs"].update({seq: relabelled})
        ),
    )
    failed(
        run_verifier(bundle),
        f"ledger event #{seq}: its inclusion proof does not lead to the signed root",
    )


def test_the_pdf_swapped(exported, tmp_path):
    bundle = exported.copy_to(tmp_path)
    other = bytearray(exported.pdf.read_bytes())
    other[-10] ^= 0x20  # inside the trailer: still a PDF a viewer opens
    (tmp_path / "dossier.pdf").write_bytes(bytes(other))
    failed(run_verifier(bundle), "the PDF dossier.pdf: its sha256")
    failed(
        run_verifier(bundle, "--pdf", str(tmp_path / "dossier.pdf")), "(another or a changed PDF)"
    )


def test_a_check_runs_verdict_changed_in_the_bundled_records(exported, tmp_path):
    bundle = exported.copy_to(tmp_path)
    runs = exported.records["check_runs"]
    index, run = next(
        (i, r) for i, r in enumerate(runs) if r["key"] == "fingerprint" and r["counting"]
    )

    def change(files):
        edit_json(files, "records/check_runs.json", lambda rs: rs[index].update(verdict="fail"))

    rewrite(bundle, change)
    failed(
        run_verifier(bundle),
        f"check run {run['id']} (fingerprint #2): its verdict (fail) or manifest digest differs "
        "from its ledger event, which records pass",
        "the gate recomputed from the bundled records answers in_review",
    )


def test_the_servers_gate_answer_changed_in_the_bundle(exported, tmp_path):
    bundle = exported.copy_to(tmp_path)
    rewrite(
        bundle,
        lambda files: edit_json(files, "records/gate.json", lambda g: g.update(state="rejected")),
    )
    failed(run_verifier(bundle), "but the server's answer in the bundle says rejected")


def test_a_file_added_to_the_bundle_is_named(exported, tmp_path):
    bundle = exported.copy_to(tmp_path)

    def add(files):
        files["evidence/extra.json"] = b"{}"

    rewrite(bundle, add, fix_manifest=False)
    failed(run_verifier(bundle), "file evidence/extra.json: in the bundle but not listed")


def test_an_unreadable_bundle_exits_2(tmp_path):
    (tmp_path / "bundle.zip").write_bytes(b"not a zip")
    shutil.copy(VERIFY, tmp_path / "verify.py")
    result = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "verify.py"), str(tmp_path / "bundle.zip")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "is not a readable zip file" in result.stderr


def test_the_bundled_verifier_is_the_repositorys(exported):
    assert exported.files()["verify.py"] == VERIFY.read_bytes()


def test_the_verifier_imports_only_the_standard_library_and_cryptography():
    tree = ast.parse(VERIFY.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    allowed = set(sys.stdlib_module_names) | {"cryptography", "__future__"}
    assert modules <= allowed, modules - allowed
