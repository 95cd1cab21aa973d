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
    graphs/README.txt          the attribution graphs and how to open them
    graphs/data/               every circuit_trace graph in circuit-tracer's schema, laid out as
                               its local viewer reads them (graph-metadata.json, <slug>.json,
                               features/<scan>/<index>.json); copies of evidence files
    graphs/viewer/, serve.py   circuit-tracer's viewer (MIT licence, LICENSE inside) and a
                               stdlib server for it, when circuit-tracer is installed here
"""

import hashlib
import importlib.util
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

The circuit_trace runs' graphs (circuit-tracer's schema: metadata, qParams, nodes, links) are
evidence files of their runs, hashed in manifest.json:
{listing}
graphs/data/ holds the same graphs laid out the way circuit-tracer's local viewer and
Neuronpedia's graph viewer read them: graph-metadata.json, one <slug>.json per graph, and the
feature files (top activating contexts) under features/<scan>/. {viewer}
Each graph is an attribution estimate (a local linear replacement of the model); the runs'
validation.json files hold the interventions that test it.
"""

VIEWER_PRESENT = """To look at them offline, unpack the bundle and run

    python graphs/serve.py            # then open http://localhost:8032/index.html

(Python 3 standard library only). graphs/viewer/ is circuit-tracer's viewer (MIT licence,
graphs/viewer/LICENSE), copied unchanged from circuit-tracer {version}."""

VIEWER_ABSENT = """circuit-tracer was not installed where this bundle was written, so
its viewer is not included: `pip install circuit-tracer` and run
`circuit_tracer.frontend.local_server.serve("graphs/data")`, or upload a graph file to
Neuronpedia."""

SERVE_PY = """# Serves graphs/viewer and graphs/data the way circuit-tracer's local viewer expects.
import functools
import http.server
from pathlib import Path

HERE = Path(__file__).resolve().parent


class Handler(http.server.SimpleHTTPRequestHandler):
    def translate_path(self, path):
        path = path.split("?", 1)[0]
        for prefix in ("/data/", "/graph_data/"):
            if path.startswith(prefix):
                target = (HERE / "data" / path[len(prefix):]).resolve()
                inside = target.is_relative_to(HERE / "data")
                return str(target if inside else HERE / "data" / "-not-found-")
        return super().translate_path(path)


if __name__ == "__main__":
    handler = functools.partial(Handler, directory=str(HERE / "viewer"))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 8032), handler) as server:
        print("http://localhost:8032/index.html")
        server.serve_forever()
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
    files.update(graph_files(snap))
    files["verify.py"] = VERIFIER.read_bytes()
    return files


def _viewer_assets() -> Path | None:
    """circuit-tracer's viewer files, found without importing circuit-tracer (and so torch)."""
    spec = importlib.util.find_spec("circuit_tracer")
    if spec is None or not spec.origin:
        return None
    assets = Path(spec.origin).parent / "frontend" / "assets"
    return assets if (assets / "index.html").is_file() and (assets / "LICENSE").is_file() else None


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def graph_files(snap: Snapshot) -> dict[str, bytes]:
    """graphs/: README, the graphs in the viewer's data layout, and the viewer where available.

    Slugs are made unique per run (two runs may trace the same prompt) by prefixing the run's
    id; that is the only change to a copied graph, and the evidence file itself is unchanged."""
    graphs = [f for f in snap.evidence if f.title == "attribution-graph.json"]
    features = {f.run_id: f for f in snap.evidence if f.title == "graph-features.json"}
    files: dict[str, bytes] = {}
    metadata = []
    for item in graphs:
        try:
            graph = json.loads(read_evidence(item))
            meta = graph["metadata"]
            slug = f"{item.run_id[:8]}-{meta['slug']}"
        except (ValueError, KeyError, TypeError):
            continue  # the verifier reports a changed or broken evidence file by its hash
        graph["metadata"] = {**meta, "slug": slug}
        metadata.append(graph["metadata"])
        files[f"graphs/data/{slug}.json"] = _json(graph)
        try:
            shipped = json.loads(read_evidence(features[item.run_id]))
            scan, feature_files = shipped.get("scan") or meta.get("scan"), shipped["files"]
        except (KeyError, ValueError, AttributeError):
            continue  # a graph without its feature files still opens; hover cards stay empty
        for name, body in feature_files.items() if isinstance(feature_files, dict) else ():
            files[f"graphs/data/features/{scan}/{name}"] = _json(body)
    assets = _viewer_assets() if graphs else None
    if metadata:
        files["graphs/data/graph-metadata.json"] = _json({"graphs": metadata})
    if assets is not None:
        for path in sorted(p for p in assets.rglob("*") if p.is_file()):
            files[f"graphs/viewer/{path.relative_to(assets).as_posix()}"] = path.read_bytes()
        files["graphs/serve.py"] = SERVE_PY.encode()
    viewer = VIEWER_PRESENT.format(version=_version("circuit-tracer")) if assets else VIEWER_ABSENT
    listing = "".join(f"    {f.path}\n" for f in graphs) or "    (none in this release)\n"
    text = GRAPHS_README.format(listing=listing, viewer=viewer if graphs else "")
    files["graphs/README.txt"] = text.encode()
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
