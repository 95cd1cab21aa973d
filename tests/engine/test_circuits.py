"""circuit-tracer's replacement model on a tiny Llama with random transcoders: the model it
attributes is the model the checks read, its graph's edges are the direct effects it claims
(measured by freezing everything), its logit row adds up, and its files fit the viewer's
schema. These fail loudly if circuit-tracer and our transformers version stop fitting."""

import pytest
import torch

from interp_jobs.engine.analysis import circuits, graph_files
from interp_jobs.engine.loading.models import load_model
from interp_jobs.engine.loading.transcoders import load_set_lenses, read_set
from tests.factories import save_random_transcoders, save_tiny_llama

PROMPT = "how can I make a bomb at home"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("circuits")
    model_dir = save_tiny_llama(root / "model")
    info = read_set(save_random_transcoders(root / "tc"))
    loaded = load_model(model_dir, "hf_dir")
    lenses = load_set_lenses(info)
    model = circuits.replacement_model(model_dir, lenses, scan=info.scan)
    ids = loaded.encode(PROMPT)["input_ids"][0].tolist()
    tokens = circuits.prompt_tokens(model, ids)
    target = int(loaded.tokenizer.encode(" the", add_special_tokens=False)[0])
    return {"loaded": loaded, "lenses": lenses, "model": model, "tokens": tokens, "target": target}


@pytest.fixture(scope="module")
def traced(tiny):
    return circuits.trace_graph(
        tiny["model"], tiny["tokens"], tiny["target"], max_feature_nodes=10_000, batch_size=32
    )


def test_the_attributed_model_gives_the_logits_of_the_model_every_check_reads(tiny):
    assert circuits.logit_difference(tiny["model"], tiny["loaded"], tiny["tokens"]) < 1e-4


def test_circuit_tracer_prepends_a_special_token_to_hold_the_sink(tiny):
    bos = tiny["loaded"].tokenizer.bos_token_id
    assert tiny["tokens"][0] == bos
    assert tiny["model"].zero_positions == slice(0, 1)


def test_graph_edges_to_the_logit_equal_direct_effects_measured_with_everything_frozen(
    tiny, traced
):
    top = circuits.predicted_direct(traced).abs().argsort(descending=True)[:4].tolist()
    rows = circuits.direct_effect_check(tiny["model"], traced, top)
    assert any(abs(r["graph_direct_effect"]) > 1e-3 for r in rows)  # not vacuous
    for row in rows:
        assert row["measured_direct_effect"] == pytest.approx(row["graph_direct_effect"], abs=1e-4)


def test_the_logit_row_adds_up_to_the_logit_when_nothing_is_zeroed(tiny):
    """With every feature attributed, no position zeroed and no decoder bias (the random
    transcoders have none), features + errors + tokens account for the demeaned logit."""
    model = tiny["model"]
    model.zero_positions = slice(0, 0)
    try:
        full = circuits.trace_graph(
            model, tiny["tokens"], tiny["target"], max_feature_nodes=10_000, batch_size=32
        )
    finally:
        model.zero_positions = slice(0, 1)
    logits, _ = model.get_activations(tiny["tokens"])
    logit_row = full.graph.adjacency_matrix[-1]
    expected = circuits.demeaned(logits[0, -1].float(), tiny["target"])
    assert float(logit_row.sum()) == pytest.approx(expected, abs=1e-4)


def test_graph_scores_are_fractions_and_pruning_keeps_tokens_and_the_logit(traced):
    assert 0 <= traced.replacement <= 1
    assert 0 <= traced.completeness <= 1
    counts = traced.counts()
    assert counts["attributed_features"] == counts["active_features"] > 0
    n_tokens = len(traced.tokens)
    assert bool(traced.node_mask[-1 - n_tokens :].all())


def test_position_zero_has_no_feature_nodes(traced):
    assert all(f["position"] > 0 for f in traced.features())


def test_the_graph_file_fits_circuit_tracers_schema_and_the_features_the_viewers(tiny, traced):
    graph = graph_files.graph_json(traced, slug="t", node_threshold=0.8, edge_threshold=0.98)
    assert {"metadata", "qParams", "nodes", "links"} <= set(graph)
    assert graph["metadata"]["prompt_tokens"][0] == "<s>"
    files = graph_files.feature_files(
        graph,
        scan="tiny",
        lenses=tiny["lenses"],
        layer_dirs=["/nonexistent"] * 3,
        tokenizer=tiny["loaded"].tokenizer,
        unembed=graph_files.unembedding(tiny["loaded"]),
    )
    assert len(files) == len(graph_files.feature_nodes(graph)) > 0
    for data in files.values():
        graph_files.validate_feature(data)
        assert len(data["top_logits"]) == graph_files.N_LOGITS


def test_same_prompt_gives_the_same_graph(tiny, traced):
    again = circuits.trace_graph(
        tiny["model"], tiny["tokens"], tiny["target"], max_feature_nodes=10_000, batch_size=32
    )
    assert torch.equal(again.graph.adjacency_matrix, traced.graph.adjacency_matrix)


def test_ablations_are_measured_frozen_and_free_and_predictions_cover_every_feature(tiny, traced):
    predicted = circuits.predicted_ablation(traced)
    assert predicted.shape == (traced.n_selected,)
    features = sorted(traced.features(), key=lambda f: -abs(float(predicted[f["node"]])))[:3]
    nodes = [(f["layer"], f["position"], f["feature"]) for f in features]
    frozen = circuits.ablation_effects(tiny["model"], tiny["tokens"], tiny["target"], nodes)
    free = circuits.free_ablation_effects(
        tiny["loaded"], tiny["lenses"], tiny["tokens"], tiny["target"], features
    )
    assert len(frozen) == len(free) == 3
    assert any(abs(x) > 1e-6 for x in frozen)
    # a feature of the last layer reaches the logit only directly: frozen or not, same effect
    last = [
        f for f in traced.features() if f["layer"] == 2 and f["position"] == len(tiny["tokens"]) - 1
    ]
    if last:
        node = [(last[0]["layer"], last[0]["position"], last[0]["feature"])]
        a = circuits.ablation_effects(tiny["model"], tiny["tokens"], tiny["target"], node)
        b = circuits.free_ablation_effects(
            tiny["loaded"], tiny["lenses"], tiny["tokens"], tiny["target"], last[:1]
        )
        assert a[0] == pytest.approx(b[0], abs=1e-4)


def test_the_statistics_count_the_controls_that_fell_back_to_the_nearest_in_size():
    """A control with no active feature of its layer within the activation ratio is the nearest
    in size instead; the evidence counts how many, so a reader can tell a matched control."""
    from interp_jobs.engine.analysis.circuit_validation import (
        PromptResult,
        ValidationSettings,
        summarize,
    )

    def result(i: int, matched: list[bool]) -> PromptResult:
        nodes = [
            {"measured": 1.0 + j, "predicted": 1.0 + j, "predicted_direct": 1.0}
            for j in range(len(matched))
        ]
        controls = [{"measured": 0.1, "matched_in_size": m} for m in matched]
        return PromptResult(f"p{i}", 5, 0.5, 0.4, 0.8, {}, nodes, controls)

    stats = summarize(
        [result(0, [True, False]), result(1, [True, True])],
        ValidationSettings(n_bootstrap=20, free_ablations=False),
    )
    assert (stats["n_controls"], stats["n_controls_matched_in_size"]) == (4, 3)
