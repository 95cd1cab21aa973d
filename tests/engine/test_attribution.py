"""Attribution graphs on a tiny 3-layer Llama with SAE lenses at every block's output.

The numbers are checked against brute force: logits with the lenses spliced in, finite
differences of the metric (float64), and real ablations where the model is linear after the
lens, so the linear estimate must equal the measured effect exactly.
"""

import math

import pytest
import torch

from interp_jobs.engine.analysis import attribution
from interp_jobs.engine.analysis.attribution import (
    Node,
    make_metric,
    prune,
    sign_agreement,
    spearman,
)
from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.hooks import replace_activation, run_to
from interp_jobs.engine.loading.lenses import load_lens
from interp_jobs.engine.loading.models import load_model
from tests.factories import save_random_lens

HOOKS = [f"blocks.{i}.hook_resid_post" for i in range(3)]
PROMPT = "what is the capital of france"
TARGET = "paris"


@pytest.fixture(scope="module")
def lens_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("trace-lenses")
    return [
        save_random_lens(root / f"l{i}", seed=i, hook_name=hook) for i, hook in enumerate(HOOKS)
    ]


def _lenses(dirs, dtype=torch.float32):
    return [(f"l{i}", load_lens(d).to(dtype)) for i, d in enumerate(dirs)]


@pytest.fixture
def loaded(llama_saved):
    return load_model(llama_saved.path, "hf_dir")


@pytest.fixture
def prompt(loaded):
    ids = loaded.encode(PROMPT)["input_ids"]
    target = loaded.tokenizer.encode(TARGET, add_special_tokens=False)
    assert len(target) == 1
    return ids, target[0]


def _node(graph, node_id):
    return next(n for n in graph.nodes if n.id == node_id)


def test_splicing_every_lens_with_its_error_term_leaves_all_logits_unchanged(
    loaded, prompt, lens_dirs
):
    ids, _ = prompt
    lenses = _lenses(lens_dirs)
    with torch.no_grad():
        unmodified = loaded.model(input_ids=ids).logits[0]
    spliced = attribution.spliced_logits(loaded, lenses, ids)
    torch.testing.assert_close(spliced, unmodified, rtol=0, atol=1e-5)
    # Not vacuous: the same lenses spliced without their error terms change the output a lot.
    lens = lenses[1][1]
    with (
        replace_activation(loaded, HOOKS[1], lambda x: lens.decode(lens.encode(x))),
        torch.no_grad(),
    ):
        reconstructed = loaded.model(input_ids=ids).logits[0]
    assert (reconstructed - unmodified).abs().max() > 0.1


def test_trace_reports_the_spliced_metric_equal_to_the_unmodified_one(loaded, prompt, lens_dirs):
    ids, target = prompt
    graph = attribution.trace(loaded, _lenses(lens_dirs), ids, make_metric("logprob", target))
    assert graph.max_abs_logit_diff < 1e-5
    assert graph.metric_spliced == pytest.approx(graph.metric_unmodified, abs=1e-5)
    assert [layer.hook for layer in graph.layers] == HOOKS


def _metric_with_edit(loaded, ids, hook, metric_fn, edit):
    with torch.no_grad(), replace_activation(loaded, hook, edit):
        return float(metric_fn(loaded.model(input_ids=ids).logits[0, -1]))


def _derivative_at_zero(f, h=1e-3):
    """Central differences with one Richardson step (error O(h^4)): the model computes its
    norms in float32 even in a float64 model, so h cannot be tiny."""

    def central(step):
        return (f(step) - f(-step)) / (2 * step)

    return (4 * central(h / 2) - central(h)) / 3


def test_node_attributions_equal_finite_differences_through_the_real_model(llama_saved, lens_dirs):
    """gradient x activation == d metric / d t of scaling the node by (1 + t), at t = 0."""
    loaded = load_model(llama_saved.path, "hf_dir")
    loaded.model.to(torch.float64)
    lenses = _lenses(lens_dirs, torch.float64)
    ids = loaded.encode(PROMPT)["input_ids"]
    metric_fn = make_metric("logprob", loaded.tokenizer.encode(TARGET, add_special_tokens=False)[0])
    graph = attribution.trace(loaded, lenses, ids, metric_fn, max_nodes=5, n_ablations=0)
    lens0 = lenses[0][1]
    feature = next(n for n in graph.nodes if n.type == "feature" and n.layer == 0)
    direction = lens0.W_dec[feature.feature] * feature.activation

    def feature_scaled(t):  # every lens downstream stays in place: it is the identity there
        def edit(x):
            x = x.clone()
            x[0, feature.position] += t * direction
            return x

        return _metric_with_edit(loaded, ids, HOOKS[0], metric_fn, edit)

    assert _derivative_at_zero(feature_scaled) == pytest.approx(feature.attribution, rel=1e-5)
    error = next(n for n in graph.nodes if n.type == "error" and n.layer == 1)
    lens1 = lenses[1][1]

    def error_scaled(t):
        def edit(x):
            error_vec = (x - lens1.decode(lens1.encode(x)))[0, error.position]
            x = x.clone()
            x[0, error.position] += t * error_vec
            return x

        return _metric_with_edit(loaded, ids, HOOKS[1], metric_fn, edit)

    assert _derivative_at_zero(error_scaled) == pytest.approx(error.attribution, rel=1e-5)
    # Token effects are small next to float32 rounding in the norms, too small for finite
    # differences: compare with the unmodified model's own gradient instead.
    embeds = loaded.model.get_input_embeddings()(ids).detach().requires_grad_(True)
    metric_fn(loaded.model(inputs_embeds=embeds).logits[0, -1]).backward()
    expected = (embeds.grad * embeds.detach()).sum(-1)[0]
    tokens = [n.attribution for n in graph.nodes if n.type == "token"]
    torch.testing.assert_close(
        torch.tensor(tokens, dtype=torch.float64), expected, rtol=1e-9, atol=1e-12
    )


def test_feature_to_feature_edge_weight_equals_finite_difference_of_the_downstream_feature(
    llama_saved, lens_dirs
):
    loaded = load_model(llama_saved.path, "hf_dir")
    loaded.model.to(torch.float64)
    lenses = _lenses(lens_dirs, torch.float64)
    ids = loaded.encode(PROMPT)["input_ids"]
    metric_fn = make_metric("logit", loaded.tokenizer.encode(TARGET, add_special_tokens=False)[0])
    graph = attribution.trace(loaded, lenses, ids, metric_fn, max_nodes=8, n_ablations=0)
    edge = next(
        e
        for e in graph.edges
        if "/f" in e.source and "/f" in e.target and e.source.startswith(HOOKS[0]) and e.weight
    )
    source, target = _node(graph, edge.source), _node(graph, edge.target)
    direction = lenses[0][1].W_dec[source.feature] * source.activation

    def downstream_feature(t):
        def edit(x):
            x = x.clone()
            x[0, source.position] += t * direction
            return x

        with torch.no_grad(), replace_activation(loaded, HOOKS[0], edit):
            x1 = run_to(loaded, ids, None, [HOOKS[1]])[HOOKS[1]]
        return float(lenses[1][1].encode(x1)[0, target.position, target.feature])

    assert _derivative_at_zero(downstream_feature) == pytest.approx(edge.weight, rel=1e-5)
    # metric_weight is the same path weighted by the metric's gradient at the target feature.
    assert edge.metric_weight == pytest.approx(
        edge.weight * target.attribution / target.activation, rel=1e-9
    )


def test_attribution_equals_measured_ablation_when_the_model_is_linear_after_the_lens(
    loaded, prompt, lens_dirs
):
    """With the final norm removed, the logit is linear in the last block's output, so a
    zero-ablation changes it by exactly gradient x activation: rank and sign agree fully."""
    ids, target = prompt
    loaded.model.model.norm = torch.nn.Identity()
    graph = attribution.trace(
        loaded, _lenses(lens_dirs)[2:], ids, make_metric("logit", target), n_ablations=8
    )
    assert len(graph.ablations) == 8
    for ablation in graph.ablations:
        assert ablation.measured_effect == pytest.approx(ablation.attribution, rel=1e-3, abs=1e-4)
    assert graph.rank_agreement == pytest.approx(1.0)
    assert graph.sign_agreement == 1.0
    layer = graph.layers[0]
    # Linearity: features + errors + the decoder bias carry the whole logit.
    assert layer.feature_total + layer.error_total + layer.unattributed == pytest.approx(
        graph.metric_unmodified, rel=1e-4
    )


def test_ablations_are_measured_one_feature_at_a_time_not_copied_from_the_estimates(
    loaded, prompt, lens_dirs, monkeypatch
):
    monkeypatch.setattr(attribution, "ABLATION_BATCH", 3)  # several batches, several rows each
    ids, target = prompt
    lenses = dict(_lenses(lens_dirs))
    metric_fn = make_metric("logprob", target)
    graph = attribution.trace(loaded, list(lenses.items()), ids, metric_fn, n_ablations=12)
    assert len(graph.ablations) == 12
    top = sorted((a.attribution for a in graph.ablations), key=abs, reverse=True)
    assert [a.attribution for a in graph.ablations] == top
    assert any(abs(a.measured_effect - a.attribution) > 1e-3 for a in graph.ablations)
    by_hook = {}
    for ablation in graph.ablations:
        by_hook[ablation.hook] = by_hook.get(ablation.hook, 0) + 1
        # brute force, alone in its own forward pass: x -> x - activation * decoder row
        node = _node(graph, ablation.node) if ablation.in_graph else None
        lens = lenses[f"l{HOOKS.index(ablation.hook)}"]

        def edit(x, lens=lens, a=ablation):
            x = x.clone()
            x[0, a.position] -= lens.encode(x)[0, a.position, a.feature] * lens.W_dec[a.feature]
            return x

        alone = _metric_with_edit(loaded, ids, ablation.hook, metric_fn, edit)
        assert ablation.metric_ablated == pytest.approx(alone, abs=1e-4)
        assert node is None or node.attribution == ablation.attribution
    batches = sum(-(-count // attribution.ABLATION_BATCH) for count in by_hook.values())
    assert graph.n_forward_passes == 2 + batches


def test_spearman_matches_known_values_including_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)  # ranks only
    # ranks [1, 2.5, 2.5, 4] vs [1, 3, 2, 4]: 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert spearman([0.3, -1.2, 5.0, 2.2, 0.0], [1.0, 2.0, 0.5, 0.4, 3.0]) == pytest.approx(-0.8)
    assert spearman([1.0], [2.0]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_sign_agreement_counts_matching_signs():
    assert sign_agreement([1.0, -2.0, 0.0], [3.0, -0.1, 0.0]) == 1.0
    assert sign_agreement([1.0, -2.0, 0.5, 0.2], [-1.0, -2.0, 0.0, 0.3]) == 0.5
    assert sign_agreement([], []) is None


def _nodes(*attributions):
    return [
        Node(id=f"n{i}", type="feature", layer=0, position=0, attribution=a, activation=1.0)
        for i, a in enumerate(attributions)
    ]


def test_pruning_keeps_the_fewest_top_nodes_reaching_the_threshold():
    nodes = _nodes(1.0, 5.0, 0.0, -4.0, 0.5)  # total |attribution| 10.5
    assert [n.id for n in prune(nodes, max_nodes=10, node_threshold=0.8)] == ["n1", "n3"]
    assert [n.id for n in prune(nodes, max_nodes=10, node_threshold=0.4)] == ["n1"]
    assert [n.id for n in prune(nodes, max_nodes=1, node_threshold=1.0)] == ["n1"]
    # zero-attribution nodes are never kept, even when everything is asked for
    assert [n.id for n in prune(nodes, max_nodes=10, node_threshold=1.0)] == [
        "n1",
        "n3",
        "n0",
        "n4",
    ]


def test_trace_keeps_per_layer_the_nodes_with_the_largest_attribution(loaded, prompt, lens_dirs):
    ids, target = prompt
    graph = attribution.trace(
        loaded,
        _lenses(lens_dirs),
        ids,
        make_metric("logprob", target),
        max_nodes=4,
        node_threshold=1.0,
        n_ablations=0,
    )
    for layer in graph.layers:
        kept = [n for n in graph.nodes if n.hook == layer.hook]
        assert len(kept) == layer.kept_nodes == 4
        smallest_kept = min(abs(n.attribution) for n in kept)
        # the kept share equals the top-4 share, so nothing outside the graph is larger
        assert layer.kept_influence_fraction * (
            layer.feature_influence + layer.error_influence
        ) == pytest.approx(sum(abs(n.attribution) for n in kept))
        assert smallest_kept > 0
    assert graph.n_backward_passes == 1 + 3  # one vectorised edge pass per lens layer


def test_edges_are_the_same_whether_computed_one_node_at_a_time_or_vectorised(
    loaded, prompt, lens_dirs, monkeypatch
):
    ids, target = prompt
    lenses, metric_fn = _lenses(lens_dirs), make_metric("logprob", target)
    vectorised = attribution.trace(loaded, lenses, ids, metric_fn, max_nodes=6, n_ablations=0)
    monkeypatch.setattr(attribution, "EDGE_BATCH", 1)
    one_by_one = attribution.trace(loaded, lenses, ids, metric_fn, max_nodes=6, n_ablations=0)
    assert one_by_one.n_backward_passes == 1 + 3 * 6 > vectorised.n_backward_passes
    assert [(e.source, e.target) for e in vectorised.edges] == [
        (e.source, e.target) for e in one_by_one.edges
    ]
    for fast, slow in zip(vectorised.edges, one_by_one.edges, strict=True):
        assert fast.metric_weight == pytest.approx(slow.metric_weight, rel=1e-4, abs=1e-7)


def _constructed_lens(lens_dir, w_enc, w_dec):
    lens = load_lens(lens_dir)
    with torch.no_grad():
        lens.W_enc.copy_(w_enc)
        lens.W_dec.copy_(w_dec)
        lens.b_enc.zero_()
        lens.b_dec.zero_()
    return lens


def _trace_one(loaded, ids, target, lens):
    return attribution.trace(
        loaded, [("lens", lens)], ids, make_metric("logprob", target), n_ablations=0
    ).layers[0]


def test_error_share_is_one_when_the_lens_reconstructs_nothing_and_small_when_it_does(
    loaded, prompt, lens_dirs
):
    ids, target = prompt
    d, d_sae = 32, 64
    nothing = _trace_one(
        loaded,
        ids,
        target,
        _constructed_lens(lens_dirs[1], torch.randn(d, d_sae), torch.zeros(d_sae, d)),
    )
    eye = torch.eye(d)
    # features = relu(x) and relu(-x): decode is exactly x, so the error is zero
    exact = _trace_one(
        loaded,
        ids,
        target,
        _constructed_lens(lens_dirs[1], torch.cat([eye, -eye], 1), torch.cat([eye, -eye], 0)),
    )
    half_eye = torch.diag((torch.arange(d) < d // 2).float())
    # the same on the first half of the dimensions only: the rest goes to the error
    half = _trace_one(
        loaded,
        ids,
        target,
        _constructed_lens(
            lens_dirs[1], torch.cat([half_eye, -half_eye], 1), torch.cat([half_eye, -half_eye], 0)
        ),
    )
    assert nothing.error_share == 1.0
    assert nothing.relative_error_norm == pytest.approx(1.0)
    assert nothing.error_to_activation == pytest.approx(1.0)
    assert exact.error_share < 1e-3
    assert exact.relative_error_norm < 1e-3
    assert exact.error_to_activation < 1e-3
    assert 0.05 < half.error_share < 0.95
    assert 0.05 < half.relative_error_norm < 0.95


def test_random_lens_shows_a_modest_error_share_but_its_error_dwarfs_the_activation(
    loaded, prompt, lens_dirs
):
    """Why the companion numbers exist: a random lens's features and error are large and
    cancel, so |attribution| is spread over many features and the error share looks fine."""
    ids, target = prompt
    layer = _trace_one(loaded, ids, target, load_lens(lens_dirs[1]))
    assert layer.error_share < 0.5
    assert layer.error_to_activation > 1
    assert layer.relative_error_norm > 1


def test_edges_never_point_from_a_later_position_to_an_earlier_one(loaded, prompt, lens_dirs):
    ids, target = prompt
    graph = attribution.trace(
        loaded, _lenses(lens_dirs), ids, make_metric("logprob", target), max_nodes=6, n_ablations=0
    )
    positions = {n.id: n.position for n in graph.nodes}
    assert graph.edges
    assert all(positions[e.source] <= positions[e.target] for e in graph.edges)
    kinds = {(e.source.split("/")[0].split("@")[0], e.target.split("/")[0]) for e in graph.edges}
    assert ("token", HOOKS[0]) in kinds
    assert (HOOKS[2], "logit") in kinds


def test_lenses_off_the_residual_stream_or_sharing_a_hook_are_refused(loaded, tmp_path, lens_dirs):
    mlp = load_lens(save_random_lens(tmp_path / "mlp", hook_name="blocks.1.hook_mlp_out"))
    with pytest.raises(PermanentEngineError, match="residual stream"):
        attribution.order_lenses(loaded, [("mlp", mlp)])
    twice = _lenses(lens_dirs)[:1] * 2
    with pytest.raises(PermanentEngineError, match="one lens per hook point"):
        attribution.order_lenses(loaded, twice)


def test_logit_difference_metric_needs_a_contrast_token():
    logits = torch.tensor([1.0, 3.0, -2.0])
    assert float(make_metric("logit_diff", 1, 2)(logits)) == 5.0
    assert float(make_metric("logprob", 1)(logits)) == pytest.approx(
        float(torch.log_softmax(logits, -1)[1])
    )
    with pytest.raises(PermanentEngineError, match="contrast"):
        make_metric("logit_diff", 1)


def test_gpt2_models_trace_with_errors_kept_too(gpt2_saved, tmp_path):
    loaded = load_model(gpt2_saved.path, "hf_dir")
    lenses = [
        (f"g{i}", load_lens(save_random_lens(tmp_path / f"g{i}", seed=i, hook_name=hook)))
        for i, hook in enumerate(["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"])
    ]
    ids = loaded.encode(PROMPT)["input_ids"]
    graph = attribution.trace(loaded, lenses, ids, make_metric("logit", 5), n_ablations=3)
    assert graph.max_abs_logit_diff < 1e-5
    assert [layer.hook for layer in graph.layers] == [
        "blocks.0.hook_resid_pre",
        "blocks.1.hook_resid_post",
    ]
    assert len(graph.ablations) == 3
