"""The bundle's graphs/ folder: circuit_trace graphs as circuit-tracer's viewer reads them."""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from audits.dossier.bundle import graph_files
from audits.dossier.collect import EvidenceFile
from tests.web import samples


def evidence(tmp_path: Path, run_id: str, title: str, body: dict) -> EvidenceFile:
    source = tmp_path / f"{run_id}-{title}"
    source.write_text(json.dumps(body))
    return EvidenceFile(
        run_id=run_id,
        title=title,
        media_type="application/json",
        evidence_kind="attribution",
        sha256="",
        size=source.stat().st_size,
        path=f"evidence/{run_id}/{title}",
        source=source,
    )


def traced_release(tmp_path: Path, runs: tuple[str, ...]) -> SimpleNamespace:
    items = []
    for run_id in runs:
        items.append(
            evidence(tmp_path, run_id, "attribution-graph.json", samples.circuit_tracer_graph())
        )
        items.append(evidence(tmp_path, run_id, "graph-features.json", samples.graph_features()))
    return SimpleNamespace(evidence=items)


def test_two_runs_tracing_the_same_prompt_get_two_graphs_in_the_viewers_schema(tmp_path):
    models = pytest.importorskip("circuit_tracer.frontend.graph_models")
    files = graph_files(traced_release(tmp_path, ("aaaaaaaa-1", "bbbbbbbb-2")))
    listed = json.loads(files["graphs/data/graph-metadata.json"])["graphs"]
    slugs = sorted(g["slug"] for g in listed)
    assert len(set(slugs)) == 2
    assert {s.split("-")[0] for s in slugs} == {"aaaaaaaa", "bbbbbbbb"}
    for slug in slugs:
        models.Model.model_validate_json(files[f"graphs/data/{slug}.json"])
    scan = samples.graph_features()["scan"]
    assert f"graphs/data/features/{scan}/66.json" in files
    readme = files["graphs/README.txt"].decode()
    assert "evidence/aaaaaaaa-1/attribution-graph.json" in readme


def test_the_viewer_ships_with_its_licence_and_serves_the_bundled_graph(tmp_path):
    pytest.importorskip("circuit_tracer")
    files = graph_files(traced_release(tmp_path, ("cccccccc-3",)))
    assert files["graphs/viewer/LICENSE"].startswith(b"MIT License")
    assert b"graphs/serve.py" in files["graphs/README.txt"]
    root = tmp_path / "unpacked"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    server = subprocess.Popen([sys.executable, str(root / "graphs" / "serve.py")])
    try:
        slug = json.loads(files["graphs/data/graph-metadata.json"])["graphs"][0]["slug"]
        body = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:8032/data/{slug}.json") as r:
                    body = r.read()
                break
            except OSError:
                time.sleep(0.1)
        assert body == files[f"graphs/data/{slug}.json"]
        with urllib.request.urlopen("http://127.0.0.1:8032/index.html") as r:
            assert r.read() == files["graphs/viewer/index.html"]
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen("http://127.0.0.1:8032/data/../../../README.txt")
    finally:
        server.terminate()
        server.wait(10)


def test_a_release_without_graphs_says_so_and_ships_no_viewer(tmp_path):
    files = graph_files(SimpleNamespace(evidence=[]))
    assert set(files) == {"graphs/README.txt"}
    assert b"(none in this release)" in files["graphs/README.txt"]


def test_a_graph_file_that_is_not_json_is_left_to_the_verifier(tmp_path):
    broken = evidence(tmp_path, "dddddddd-4", "attribution-graph.json", {})
    broken.source.write_bytes(b"{not json")
    files = graph_files(SimpleNamespace(evidence=[broken]))
    assert "graphs/data/graph-metadata.json" not in files
