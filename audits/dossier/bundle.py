"""The verifiable bundle (bundle.zip) and the export of a whole dossier.

Layout of bundle.zip:

    manifest.json              every other file's path, sha256 and size (its own sha256 is
                               printed in the PDF and attached inside it)
    dossier-pdf.json           the PDF's sha256 and size; outside the manifest, because the
                               PDF carries the manifest and so cannot be named by it
    verify.py  README.txt      the offline verifier (Python 3.11 + cryptography) and how to run it
    records/*.json             release, model version (with lineage), policy, check runs (every
                               attempt), decisions, people, lenses, the server's gate answer
    evidence/<run>/<file>      every evidence file of the counting runs, manifest.json included
    signatures/<id>.dsse.json  the DSSE envelopes exactly as signed
    keys/<key id>.json         the reviewers' public keys (raw base64 and PEM)
    ledger/                    events.json (bytes, prev_hash, entry_hash), proofs.json (RFC 6962
                               inclusion proofs), checkpoint.json (signed), server-key.json,
                               earlier-checkpoints.json (with consistency proofs)
    graphs/README.txt          where the attribution graphs' JSON files are, and how to view them
"""

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from audits.dossier import render
from audits.dossier.collect import FORMAT, EvidenceFile, Snapshot

VERIFIER = Path(__file__).with_name("verify.py")
MANIFEST, PDF_DIGEST = "manifest.json", "dossier-pdf.json"

README = """Assay audit dossier {dossier_id}: the verifiable bundle of release {release}.

Verify it offline (Python 3.11 and the `cryptography` package; nothing else, no network):

    python verify.py bundle.zip                      # dossier.pdf beside the bundle is checked too
    python verify.py bundle.zip --pdf dossier.pdf --checkpoint my-saved-checkpoint.json

It checks every file against manifest.json, the server's signed checkpoint and every ledger
event's inclusion proof, every DSSE signature against the bundled keys, every record against the
ledger, and recomputes the release gate from the records alone. It exits 0 only when all of that
holds, and names whatever does not.

manifest.json fixes every other file; its sha256 is printed in the PDF, which also carries a
copy of it as an attachment (PDF/A-3), and in the ledger event that recorded this export.
The server's checkpoint key id: {server_key_id}.
Use a verify.py you obtained independently (Assay's repository: audits/dossier/verify.py) if you
do not want to trust the copy in this bundle.
"""

GRAPHS_README = """Attribution graphs

The circuit_trace runs' graph files are evidence files of their runs:
{listing}
Each is JSON; its "nodes", "links" and "metadata" follow the layout documented in the file. The
interactive viewer that circuit-tracer ships is not included: its licence could not be
confirmed for redistribution when this bundle format was written. The static figure of each
graph (graph.svg) is in the same folder and in the PDF.
"""


def _json(value) -> bytes:
    return json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"


@dataclass
class Written:
    pdf_sha256: str
    pdf_size: int
    bundle_sha256: str
    bundle_size: int
    manifest_sha256: str


def read_evidence(item: EvidenceFile) -> bytes:
    """The stored bytes as they are (a changed file goes into the bundle changed: the verifier,
    not the exporter, is the one to say so)."""
    try:
        return item.source.read_bytes()
    except OSError:
        return b""


def files_of(snap: Snapshot) -> dict[str, bytes | EvidenceFile]:
    """Every file of the bundle but the manifest and the PDF digest (evidence is read late)."""
    files: dict[str, bytes | EvidenceFile] = {
        f"records/{name}.json": _json(value) for name, value in snap.records().items()
    }
    for item in snap.evidence:
        if item.source.exists():
            files[item.path] = item
    for decision_id, envelope in snap.envelopes.items():
        files[f"signatures/{decision_id}.dsse.json"] = _json(envelope)
    for key in snap.keys:
        files[f"keys/{key['key_id']}.json"] = _json(key)
    files["ledger/events.json"] = _json(snap.events)
    files["ledger/proofs.json"] = _json(
        {"tree_size": json.loads(snap.checkpoint["body"])["tree_size"], "proofs": snap.proofs}
    )
    files["ledger/checkpoint.json"] = _json(snap.checkpoint)
    files["ledger/server-key.json"] = _json(snap.server_key)
    files["ledger/earlier-checkpoints.json"] = _json(snap.earlier_checkpoints)
    graphs = [f.path for f in snap.evidence if f.title == "graph.json"]
    files["graphs/README.txt"] = GRAPHS_README.format(
        listing="".join(f"    {path}\n" for path in graphs) or "    (none in this release)\n"
    ).encode()
    files["verify.py"] = VERIFIER.read_bytes()
    return files


def manifest(snap: Snapshot, files: dict[str, bytes | EvidenceFile]) -> bytes:
    listed = []
    for path, content in sorted(files.items()):
        data = read_evidence(content) if isinstance(content, EvidenceFile) else content
        listed.append({"path": path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    return _json(
        {
            "format": FORMAT,
            "dossier_id": snap.dossier_id,
            "release": snap.release["id"],
            "generated_at": snap.generated_at.isoformat(),
            "tree_size": json.loads(snap.checkpoint["body"])["tree_size"],
            "files": listed,
        }
    )


def _zip(target: Path, entries: dict[str, bytes | EvidenceFile], stamp) -> None:
    date_time = stamp.timetuple()[:6]
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(entries):
            content = entries[path]
            data = read_evidence(content) if isinstance(content, EvidenceFile) else content
            info = zipfile.ZipInfo(path, date_time=date_time)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_dossier(
    snap: Snapshot,
    out_dir: Path,
    *,
    progress: Callable[[float, str], None] = lambda fraction, stage: None,
) -> Written:
    """DIR/dossier.pdf and DIR/bundle.zip, each written atomically."""
    files = files_of(snap)
    files["README.txt"] = README.format(
        dossier_id=snap.dossier_id,
        release=snap.release["id"],
        server_key_id=snap.server_key["key_id"],
    ).encode()
    progress(0.3, "hashing the bundle's files")
    listing = manifest(snap, files)
    manifest_sha256 = hashlib.sha256(listing).hexdigest()
    progress(0.45, "rendering the PDF")
    document = render.html(snap, manifest_sha256=manifest_sha256, read=read_evidence)
    pdf_bytes = render.pdf(document, manifest=listing, dossier_id=snap.dossier_id)
    progress(0.85, "writing the bundle")
    pdf_path, bundle_path = out_dir / "dossier.pdf", out_dir / "bundle.zip"
    _atomic_write(pdf_path, lambda tmp: _write(tmp, pdf_bytes))
    pdf_sha256 = hashlib.sha256(pdf_bytes).hexdigest()
    pdf_digest = {
        "file": "dossier.pdf",
        "sha256": pdf_sha256,
        "size": len(pdf_bytes),
        "manifest_sha256": manifest_sha256,
    }
    entries = {**files, MANIFEST: listing, PDF_DIGEST: _json(pdf_digest)}
    _atomic_write(bundle_path, lambda tmp: _zip(tmp, entries, snap.generated_at))
    return Written(
        pdf_sha256=pdf_sha256,
        pdf_size=len(pdf_bytes),
        bundle_sha256=sha256_file(bundle_path),
        bundle_size=bundle_path.stat().st_size,
        manifest_sha256=manifest_sha256,
    )
