"""The PDF a regulator reads: every section, the records' own numbers, PDF/A-3b with the bundle's
manifest attached, a table of contents, bookmarks, page numbers and the running header."""

import json
import re

import pikepdf
import pypdf
import pytest

from audits.dossier import render
from audits.dossier.collect import EvidenceFile

# The records live in a module-wide transaction (see conftest.exported); the mark makes the
# test database exist for it.
pytestmark = pytest.mark.django_db

SECTIONS = (
    "Audit dossier",
    "Contents",
    "1. Executive summary",
    "2. The policy in force",
    "3. Check runs",
    "4. Model card facts",
    "5. Decisions",
    "6. Ledger excerpt",
    "7. Regulatory crosswalk",
    "8. How to verify",
)


@pytest.fixture(scope="module")
def pages(exported) -> list[str]:
    return [page.extract_text() for page in pypdf.PdfReader(exported.pdf).pages]


@pytest.fixture(scope="module")
def text(pages) -> str:
    return "\n".join(pages)


@pytest.fixture(scope="module")
def squeezed(text) -> str:
    """The text without whitespace: digests wrapped across lines read whole again."""
    return re.sub(r"\s+", "", text)


def test_the_pdf_has_every_section(text):
    for title in SECTIONS:
        assert title in text, title


def test_the_pdf_shows_the_release_model_policy_and_gate_as_recorded(exported, text, squeezed):
    records = exported.records
    model, policy, gate = records["model_version"], records["policy"], records["gate"]
    for digest in (model["weights_digest"], model["tokenizer_digest"], model["config_digest"]):
        assert digest in squeezed
    assert policy["digest"] in squeezed
    assert exported.release_id in squeezed
    assert exported.export_id in squeezed
    assert exported.manifest_sha256 in squeezed
    assert f"Gateanswer:{gate['state']}" in squeezed
    assert "mayship:yes" in squeezed
    assert "Thresholdsfixedbeforetherunsyes" in squeezed


def test_the_pdf_shows_every_counting_run_with_its_verdict_figure_and_manifest(exported, squeezed):
    counting = [r for r in exported.records["check_runs"] if r["counting"]]
    assert len(counting) == 6
    for run in counting:
        assert f"{run['key']}·{run['kind']}" in squeezed
        assert run["manifest_digest"] in squeezed
        figure = render.key_figure(run["kind"], run["metrics"])
        assert re.sub(r"\s+", "", f"{figure.label}: {figure.value}") in squeezed, run["key"]
        for item in run["evidence"]:
            assert item["sha256"] in squeezed
    refusal = next(r for r in counting if r["key"] == "refusal")
    assert refusal["verdict"] == "fail"
    assert "waived" in squeezed


def test_the_pdf_lists_earlier_attempts_and_why_they_do_not_count(exported, text):
    earlier = [r for r in exported.records["check_runs"] if not r["counting"]]
    assert [(r["key"], r["attempt"]) for r in earlier] == [("fingerprint", 1)]
    assert "Earlier attempts (not counted)" in text
    assert "superseded by attempt 2" in text


def test_the_pdf_shows_each_decision_as_signed(exported, text, squeezed):
    decisions = exported.records["decisions"]
    assert [d["decision"] for d in decisions] == ["waive", "approve", "approve"]
    for decision in decisions:
        for value in (decision["key_id"], decision["signature_sha256"], decision["payload_sha256"]):
            assert value in squeezed
        assert decision["printed_name"] in text
        assert re.sub(r"\s+", "", decision["rationale"]) in squeezed
    assert "Signatureverifiesyes" in squeezed
    assert "coversblockingcheckrefusalonly" in squeezed


def test_the_pdf_carries_the_ledger_excerpt_and_the_checkpoint(exported, squeezed):
    files = exported.files()
    point = json.loads(json.loads(files["ledger/checkpoint.json"])["body"])
    assert point["root_hash"] in squeezed
    events = json.loads(files["ledger/events.json"])
    for event in events:
        assert json.loads(event["body"])["verb"] in squeezed
    assert "release.opened" in squeezed
    assert "decision.recorded" in squeezed


def test_the_pdf_has_the_crosswalk_and_says_it_is_not_a_compliance_claim(text):
    for provision in (
        "Annex IV point 2(g)",
        "Art. 9(8)",
        "Art. 12 and Art. 18",
        "MEASURE 2",
        "A.6.2",
    ):
        assert provision in text
    assert "It is not a claim" in text


def test_the_pdf_is_pdfa_3b_with_the_bundle_manifest_attached(exported):
    manifest = exported.files()["manifest.json"]
    with pikepdf.open(exported.pdf) as pdf:
        assert pdf.open_metadata().pdfa_status == "3B"
        assert "/OutputIntents" in pdf.Root
        attached = pdf.attachments["bundle-manifest.json"]
        assert attached.get_file().read_bytes() == manifest
        assert str(attached.obj.AFRelationship) == "/Data"
        assert len(pdf.Root.AF) == 1
        for page in pdf.pages:
            for font in page.Resources.get("/Font", {}).values():
                descendant = font.DescendantFonts[0] if "/DescendantFonts" in font else font
                assert "/FontFile2" in descendant.FontDescriptor, "every font is embedded"


def test_the_pdf_has_bookmarks_a_contents_page_numbers_and_a_running_header(exported, pages):
    reader = pypdf.PdfReader(exported.pdf)
    titles = [item.title for item in reader.outline if not isinstance(item, list)]
    assert "1. Executive summary" in titles
    assert "8. How to verify" in titles
    total = len(pages)
    assert f"Page 1 of {total}" in pages[0]
    assert f"Page {total} of {total}" in pages[-1]
    assert all(f"Assay audit dossier {exported.export_id}" in page for page in pages[1:])
    contents = pages[1]
    assert re.search(r"1\. Executive summary[ .]*3\n", contents), contents


def test_every_figure_is_embedded_and_nothing_is_fetched(exported):
    figures = sum(
        len(r["evidence"]) and sum(1 for e in r["evidence"] if e["media_type"].startswith("image/"))
        for r in exported.records["check_runs"]
        if r["counting"]
    )
    assert figures >= 6
    with pikepdf.open(exported.pdf) as pdf:
        assert len(pdf.pages) > 20
    fetcher = render.data_only_fetcher()
    with pytest.raises(ValueError, match="disallowed protocol"):
        fetcher.fetch("file:///etc/passwd")


def test_long_answers_are_truncated_and_marked(tmp_path):
    long = "Step one. " * 60
    path = tmp_path / "behavior.json"
    path.write_text(
        json.dumps(
            {
                "responses": [
                    {
                        "id": "w-1",
                        "axis": "weapons",
                        "prompt": "p",
                        "answer": long,
                        "label": "compliance",
                    }
                ]
            }
        )
    )
    item = EvidenceFile(
        "run",
        "behavior.json",
        "application/json",
        "observed",
        "",
        0,
        "evidence/run/behavior.json",
        path,
    )
    shown = render.examples("behavior_probe", [item], lambda f: f.source.read_bytes())
    answer = shown["behaviour"][0]["answer"]
    assert answer["text"] == long[: render.MAX_ANSWER_CHARS]
    assert answer["cut"] == len(long) - render.MAX_ANSWER_CHARS


def test_key_figures_carry_the_interval_the_metrics_give():
    with_ci = {"overall_refusal_rate": 0.25, "overall_refusal_rate_ci95": [0.1, 0.45]}
    figure = render.key_figure("behavior_probe", with_ci)
    assert (figure.value, figure.interval) == ("0.25", "95 % CI [0.1, 0.45]")
    nested = {"best_auroc": {"value": 0.8, "low": 0.7, "high": 0.9}}
    assert render.key_figure("feature_discovery", nested).interval == "95 % CI [0.7, 0.9]"
    assert render.key_figure("behavior_probe", {"overall_refusal_rate": 0.5}).interval == ""


def test_figure_sizes_are_read_from_svg_and_png_headers():
    svg = b"<svg xmlns='x' width='900' height='410'>"
    assert render.figure_size("image/svg+xml", svg) == (900, 410)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + b"\x00\x00\x00\rIHDR"
        + (640).to_bytes(4, "big")
        + (80).to_bytes(4, "big")
    )
    assert render.figure_size("image/png", png) == (640, 80)
    assert render.figure_size("image/png", b"nope") == (0, 0)
    assert render.is_wide("image/svg+xml", svg)
    assert not render.is_wide("image/svg+xml", b"<svg width='900' height='120'>")
