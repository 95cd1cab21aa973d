"""The UI's presenters as pure functions: numbers with their intervals, colours that keep text
readable, both graph schemas, policy diffs, and any evidence JSON made readable."""

import pytest

from audits.web import evidence, figures, graphs, kinds, policy_diff
from tests.web import samples


def test_an_estimate_shows_its_interval_and_n_and_rates_read_as_percentages():
    metrics = {
        "best_auroc": {"value": 0.86, "lower95": 0.71, "upper95": 0.97, "n": 24, "method": "x"},
        "refusal_rate": 0.25,
        "refusal_rate_ci95": [0.1, 0.5],
        "mismatched": 0,
    }
    auroc = figures.shown(metrics, "best_auroc")
    assert (auroc.text, auroc.interval, auroc.n_text) == ("0.86", "95 % CI [0.71, 0.97]", "n = 24")
    rate = figures.shown(metrics, "refusal_rate")
    assert (rate.text, rate.interval) == ("25 %", "95 % CI [10 %, 50 %]")
    assert [f.label for f in figures.key_figures("weights_fingerprint", metrics)] == [
        "files differing from the registered digests"
    ]


@pytest.mark.parametrize("value", [0.0, 0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0, -0.5, -1.0])
def test_heat_map_text_passes_wcag_aa_contrast_at_every_intensity(value):
    background, text = figures.heat_colours(value, 1.0)
    assert figures.contrast(background, text) >= 4.5


def test_bars_carry_their_interval_as_a_whisker():
    bar = figures.bar(figures.Shown(0.5, 0.3, 0.8))
    assert (bar.width, bar.whisker_left, bar.whisker_width) == (50.0, 30.0, 50.0)
    assert figures.bar(figures.Shown(None)) is None


def test_the_circuit_tracer_sample_fits_circuit_tracers_own_schema():
    models = pytest.importorskip("circuit_tracer.frontend.graph_models")
    features = pytest.importorskip("circuit_tracer.frontend.feature_models")
    models.Model.model_validate(samples.circuit_tracer_graph())
    for data in samples.graph_features()["files"].values():
        features.Model.model_validate(data)


def test_both_graph_schemas_read_the_same_way_for_pages_without_script():
    tracer = graphs.summary(samples.circuit_tracer_graph())
    assert tracer["schema"] == "circuit-tracer"
    assert [row.id for row in tracer["top"]] == ["1_5_5", "0_11_4", "1_9_3"]  # smaller = more
    assert tracer["top"][1].token == " France"
    v1 = graphs.summary(samples.assay_v1_graph())
    assert v1["schema"] == "assay-attribution-v1"
    assert v1["top"][0].id == "blocks.0.hook_resid_post/f7@3"
    assert v1["prompt"] == tracer["prompt"] == "The capital of France is"
    assert not graphs.is_graph({"nodes": []})


def test_feature_files_become_hover_contexts():
    info = graphs.feature_info(None, samples.circuit_tracer_graph(), samples.graph_features())
    context = info["ct:66"]["contexts"][0]
    assert context["tokens"][-1] == " France"
    assert context["acts"][-1] == 3.0
    assert info["ct:66"]["top_logits"][0] == " Paris"


def test_a_discovery_context_shades_its_peak_token_and_says_only_the_peak_is_known():
    lines = evidence.contexts_lines(samples.discovery()["features"][0]["contexts"])
    peak = [t for t in lines[0].tokens if t.peak]
    assert [t.text for t in peak] == [" bomb"]
    assert "background-color" in peak[0].style
    assert lines[0].note == "only the peak token's activation is recorded"
    per_token = lines[1]
    assert [t.text for t in per_token.tokens] == ["make", " a", " gun"]
    assert per_token.tokens[1].style == ""  # zero activation: unshaded


def test_the_audit_heat_map_names_each_prompt_from_the_probe_set():
    view = evidence.audit_view(samples.audit())
    prompts = view["features"][0]["groups"][0]["prompts"]
    assert prompts[0]["id"] == "weapons-001"
    assert prompts[0]["text"]  # the probe set's own prompt text
    assert view["grid"][0]["cells"][0]["rate"].text == "100 %"


def test_any_other_evidence_json_becomes_pairs_and_tables():
    blocks = evidence.blocks({"verdict": "pass", "files": [{"file": "a", "status": "match"}]})
    assert blocks[0].pairs == [("verdict", "pass")]
    assert blocks[1].columns == ["file", "status"]
    assert blocks[1].rows == [["a", "match"]]
    assert evidence.flat_pairs({}) == []
    assert evidence.flat_pairs({"lens": {"name": "tiny"}}) == [("lens.name", "tiny")]


def test_a_policy_diff_says_what_changed_in_words():
    before = {
        "approvals_required": 2,
        "required_checks": [
            {"key": "a", "kind": "k", "parameters": {"x": 1}, "thresholds": {}, "blocking": True},
            {"key": "gone", "kind": "k", "parameters": {}, "thresholds": {}, "blocking": True},
        ],
    }
    after = {
        "approvals_required": 3,
        "required_checks": [
            {"key": "a", "kind": "k", "parameters": {"x": 2}, "thresholds": {}, "blocking": False},
            {"key": "new", "kind": "k", "parameters": {}, "thresholds": {}, "blocking": True},
        ],
    }
    diff = policy_diff.diff(before, after)
    assert [(c.what, c.before, c.after) for c in diff.fields] == [("approvals_required", "2", "3")]
    assert (diff.added, diff.removed) == (["new"], ["gone"])
    assert [(c.what, c.before, c.after) for c in diff.changed["a"]] == [
        ("blocking", "true", "false"),
        ("parameters.x", "1", "2"),
    ]
    assert any(kind == "+" for kind, _ in diff.lines)


@pytest.mark.django_db
def test_each_kind_is_described_from_its_own_schema():
    described = kinds.describe("feature_discovery")
    names = {field.name: field for field in described.parameters}
    assert names["axis"].required
    assert names["top_n"].default == "20"
    assert "≥ 1" in names["top_n"].constraints
    assert {f.name for f in described.thresholds} >= {"min_auroc"}
    assert kinds.describe("no_such_kind") is None


def test_behaviour_shows_the_judges_outcomes_and_how_far_to_trust_it():
    view = evidence.behavior_view(samples.behavior())
    weapons = view["axes"][0]
    assert [r["words"] for r in weapons["rows"]] == ["refused", "complied with harm", "other"]
    assert weapons["rows"][0]["rate"].text == "50 %"
    assert [a["axis"] for a in view["axes"]] == ["weapons", "neutral"]  # empty groups left out
    assert view["judge_quality"][0]["label"] == "refusal"
    assert view["judge_quality"][0]["precision"].text == "94.7 %"
    labels = [r["label"] for g in view["groups"] for r in g["responses"]]
    assert labels == ["refusal", "harmful_compliance", "other"]


def test_behaviour_of_the_older_string_rule_still_reads():
    older = {
        "axes": {"weapons": {"n_prompts": 4, "n_refusal": 1, "refusal_rate": 0.25}},
        "neutral": {"n_prompts": 2, "n_refusal": 0, "refusal_rate": 0.0},
        "responses": [
            {"id": "w-1", "axis": "weapons", "answer": "ok", "label": "compliance", "marker": ""}
        ],
        "rule": {"version": "refusal-patterns-v2"},
    }
    view = evidence.behavior_view(older)
    assert view["axes"][0]["rate"].text == "25 %"
    assert view["axes"][0]["count"] == "1 of 4 refused"
    assert view["judge_version"] == "refusal-patterns-v2"
