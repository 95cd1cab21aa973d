"""Attribution graphs across all layers with circuit-tracer's local replacement model.

Follows Ameisen et al. 2025, "Circuit Tracing: Revealing Computational Graphs in Language
Models" (https://transformer-circuits.pub/2025/attribution-graphs/methods.html), with
circuit-tracer 0.5.0 as the library; this module only arranges its calls and reads its graph.

1. **Replacement model** (``replacement_model``): circuit-tracer's nnsight backend loads the
   model from a Hugging Face directory (a GGUF model goes through ``loading.export``) and
   swaps every MLP for its per-layer transcoder (``loading.transcoders``). For a prompt,
   attention patterns and normalisation scales are frozen at their values on that prompt and
   an error node per (layer, position) holds what each transcoder misses, so the local
   replacement model reproduces the model's output exactly while being linear in the
   feature activations.
2. **Tokens** (``prompt_tokens``): circuit-tracer prepends a special token unless the prompt
   starts with one, and zeroes the features and error nodes at position 0 (the attention sink,
   ``zero_positions``); see ``analysis.positions``.
3. **Attribution** (``trace_graph``): ``circuit_tracer.attribute`` computes the direct effect
   of every active feature, error node and token embedding on the target logit and on each of
   the ``max_feature_nodes`` most influential features (visited in order of influence, so the
   budget keeps the important ones). Edge values are attribution estimates: linear direct
   effects under frozen attention and norms, not measured causal effects.
4. **Pruning and scores**: ``prune_graph`` keeps the nodes (then edges) carrying
   ``node_threshold`` (``edge_threshold``) of the influence on the logit;
   ``compute_graph_scores`` gives the replacement score (the share of token-to-logit
   influence that does not pass through error nodes) and the completeness score (the
   influence-weighted share of node inputs that come from features or tokens).
5. **Predicted ablation effects** (``predicted_ablation``): chaining the graph's direct effects
   through the selected features gives each feature's total linear effect on the target logit,
   hence the predicted change when it is set to zero.
6. **Interventions** (``ablation_effects``): circuit-tracer's ``feature_intervention`` sets a
   feature to zero in the real model (its MLPs, not the transcoders, compute downstream) with
   attention patterns frozen (the graph's assumption) or free (the model's own response), and
   the measured change of the target logit is compared with the prediction.

The target logit is circuit-tracer's: the target token's logit minus the mean logit over the
vocabulary (a direction in the residual stream, so the frozen model is linear in it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.loading.transcoders import (
    circuit_tracer,
    circuit_tracer_hooks,
    to_circuit_tracer,
)

LOGIT_TOLERANCE = 1e-3  # max |logit difference| between the attributed and the checked model


def replacement_model(hf_dir: str | Path, lenses: Sequence, *, scan: str, device: str = "cpu"):
    """circuit-tracer's ReplacementModel (nnsight backend) over ``hf_dir`` and the lenses."""
    import json

    import torch

    circuit_tracer()
    from circuit_tracer import ReplacementModel

    config = json.loads((Path(hf_dir) / "config.json").read_text(encoding="utf-8"))
    hooks = circuit_tracer_hooks((config.get("architectures") or [""])[0])
    transcoders = to_circuit_tracer(
        lenses, scan=scan, device=device, dtype=torch.float32, hooks=hooks
    )
    return ReplacementModel.from_pretrained_and_transcoders(
        str(hf_dir),
        transcoders,
        backend="nnsight",
        device=torch.device(device),
        dtype=torch.float32,
    )


def prompt_tokens(model, ids: Sequence[int]):
    """The token ids circuit-tracer attributes: ``ids`` with a special token prepended unless
    the first already is one (the library's own rule, applied once so that attribution and
    every intervention read the same tokens)."""
    import torch

    return model.ensure_tokenized(torch.tensor(list(ids), dtype=torch.long)).cpu()


def demeaned(logits_last, target_id: int) -> float:
    return float(logits_last[target_id] - logits_last.mean())


def logit_difference(model, loaded, tokens) -> float:
    """Largest |logit| difference between the replacement model's underlying model and the
    model every other check reads, on ``tokens``: they must be the same model."""
    import torch

    logits, _ = model.get_activations(tokens)
    with torch.inference_mode():
        reference = loaded.model(input_ids=tokens[None].to(loaded.device), use_cache=False).logits
    return float((logits.float().cpu() - reference.float().cpu()).abs().max())


def check_same_model(model, loaded, tokens) -> float:
    difference = logit_difference(model, loaded, tokens)
    if difference > LOGIT_TOLERANCE:
        raise PermanentEngineError(
            f"The model circuit-tracer attributes differs from the registered model: logits "
            f"differ by up to {difference:.3g} (tolerance {LOGIT_TOLERANCE}). The exported "
            "directory was probably written by another transformers version; delete it from "
            "the work directory so it is exported again."
        )
    return difference


@dataclass
class TracedGraph:
    graph: Any  # circuit_tracer.graph.Graph
    tokens: list[int]
    target_id: int
    target_probability: float
    node_mask: Any
    edge_mask: Any
    cumulative: Any
    replacement: float
    completeness: float
    seconds: float

    @property
    def n_layers(self) -> int:
        return int(self.graph.cfg.n_layers)

    @property
    def n_active(self) -> int:
        return int(self.graph.active_features.shape[0])

    @property
    def n_selected(self) -> int:
        return int(self.graph.selected_features.shape[0])

    def features(self) -> list[dict[str, Any]]:
        """Every selected feature: layer, position, index, activation, kept after pruning."""
        graph = self.graph
        rows = []
        for i, active in enumerate(graph.selected_features.tolist()):
            layer, pos, feat = graph.active_features[active].tolist()
            rows.append(
                {
                    "node": i,
                    "layer": layer,
                    "position": pos,
                    "feature": feat,
                    "activation": float(graph.activation_values[active]),
                    "kept": bool(self.node_mask[i]),
                }
            )
        return rows

    def counts(self) -> dict[str, int]:
        n_sel, n_pos = self.n_selected, len(self.tokens)
        mask = self.node_mask
        errors = slice(n_sel, n_sel + self.n_layers * n_pos)
        return {
            "active_features": self.n_active,
            "attributed_features": n_sel,
            "kept_features": int(mask[:n_sel].sum()),
            "kept_error_nodes": int(mask[errors].sum()),
            "kept_nodes": int(mask.sum()),
            "kept_edges": int(self.edge_mask.sum()),
        }


def attribution_batch(max_feature_nodes: int, requested: int | None = None) -> int:
    """Rows per batched backward for a node budget: ``requested`` when the caller names one.

    circuit-tracer runs its forward on ``batch_size`` copies of the prompt and every backward
    over all of them, the logit pass included (one target row), so a batch much larger than
    the budget needs is paid for in full. On a CPU, bench/circuit_graph.py measured a batch of
    64 at about twice the time of 16-32 at 256 and 1024 nodes, and 8 fastest at 64 nodes
    (bench/README.md): about an eighth of the budget, between 8 and 32.
    """
    return requested or max(8, min(32, max_feature_nodes // 8))


def trace_graph(
    model,
    tokens,
    target_id: int,
    *,
    max_feature_nodes: int,
    batch_size: int | None = None,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
) -> TracedGraph:
    import torch

    circuit_tracer()
    from circuit_tracer import attribute
    from circuit_tracer.graph import compute_graph_scores, prune_graph

    started = time.perf_counter()
    graph = attribute(
        tokens,
        model,
        attribution_targets=torch.tensor([target_id]),
        max_feature_nodes=max_feature_nodes,
        batch_size=attribution_batch(max_feature_nodes, batch_size),
    )
    seconds = time.perf_counter() - started
    node_mask, edge_mask, cumulative = prune_graph(graph, node_threshold, edge_threshold)
    replacement, completeness = compute_graph_scores(graph)
    return TracedGraph(
        graph=graph,
        tokens=[int(t) for t in tokens.tolist()],
        target_id=target_id,
        target_probability=float(graph.logit_probabilities[0]),
        node_mask=node_mask.cpu(),
        edge_mask=edge_mask.cpu(),
        cumulative=cumulative.cpu(),
        replacement=float(replacement),
        completeness=float(completeness),
        seconds=seconds,
    )


def predicted_ablation(traced: TracedGraph):
    """Predicted change of the target logit if each selected feature were set to zero.

    ``A[t, s]`` is the direct effect of node s on node t's input (for a feature, its
    pre-activation; for the logit node, the logit). A feature's activation moves one for one
    with its pre-activation while it stays active, so per unit of activation the total effect
    ``g`` of a feature on the logit solves ``g = r + g N`` with ``r = A[logit, F] / a`` and
    ``N = A[F, F] / a``: paths through unselected features (outside the node budget) and
    through error nodes (constants) are not counted. Zeroing feature s changes the logit by
    ``-a_s g_s``.
    """
    import torch

    graph = traced.graph
    n_sel = traced.n_selected
    adjacency = graph.adjacency_matrix.double()
    activations = graph.activation_values[graph.selected_features].double()
    safe = torch.where(activations.abs() > 0, activations, torch.ones_like(activations))
    logit_row = adjacency.shape[0] - len(graph.logit_targets)  # the target is the first logit
    r = adjacency[logit_row, :n_sel] / safe
    n = adjacency[:n_sel, :n_sel] / safe[None, :]
    eye = torch.eye(n_sel, dtype=torch.float64)
    g = torch.linalg.solve((eye - n).T, r)
    return (-activations * g).float()


def predicted_direct(traced: TracedGraph):
    """The graph's direct edge of each selected feature to the target logit, as the predicted
    change when the feature is set to zero (no path through other features)."""
    graph = traced.graph
    logit_row = graph.adjacency_matrix.shape[0] - len(graph.logit_targets)
    return -graph.adjacency_matrix[logit_row, : traced.n_selected].float()


def ablation_effects(
    model,
    tokens,
    target_id: int,
    nodes: Sequence[tuple[int, int, int]],
    *,
    freeze_attention: bool = True,
    base_logits=None,
) -> list[float]:
    """Measured change of the target logit when each (layer, position, feature) is set to 0."""
    if base_logits is None:
        base_logits, _ = model.get_activations(tokens)
    base = demeaned(base_logits[0, -1].float(), target_id)
    effects = []
    for layer, pos, feat in nodes:
        # not under inference_mode: circuit-tracer edits the MLP outputs in place (no_grad)
        logits, _ = model.feature_intervention(
            tokens,
            [(layer, pos, feat, 0.0)],
            freeze_attention=freeze_attention,
            return_activations=False,
        )
        effects.append(demeaned(logits[0, -1].float(), target_id) - base)
    return effects


def direct_effect_check(model, traced: TracedGraph, nodes: Sequence[int]) -> list[dict]:
    """For selected feature ``nodes``: the graph's direct edge to the logit against the logit
    change measured with every MLP, norm and attention pattern frozen (circuit-tracer's
    ``constrained_layers`` covering all layers). They agree up to float error when the
    replacement model's freezing is exact; a disagreement means the library and the model no
    longer fit (e.g. a transformers version whose modules moved)."""
    import torch

    graph = traced.graph
    tokens = torch.tensor(traced.tokens)
    base_logits, _ = model.get_activations(tokens)
    base = demeaned(base_logits[0, -1].float(), traced.target_id)
    logit_row = graph.adjacency_matrix.shape[0] - len(graph.logit_targets)
    rows = []
    for node in nodes:
        layer, pos, feat = graph.active_features[graph.selected_features[node]].tolist()
        logits, _ = model.feature_intervention(
            tokens,
            [(layer, pos, feat, 0.0)],
            constrained_layers=range(traced.n_layers),
            return_activations=False,
        )
        measured = demeaned(logits[0, -1].float(), traced.target_id) - base
        rows.append(
            {
                "layer": layer,
                "position": pos,
                "feature": feat,
                "graph_direct_effect": -float(graph.adjacency_matrix[logit_row, node]),
                "measured_direct_effect": measured,
            }
        )
    return rows


def free_ablation_effects(
    loaded, lenses: Sequence, tokens, target_id: int, features: Sequence[dict]
) -> list[float]:
    """The same ablations in the model itself with nothing frozen: each feature's decoder
    contribution (activation x decoder row) is removed from its MLP's output at its position,
    and attention, norms and every later MLP respond. (circuit-tracer's own
    ``feature_intervention(freeze_attention=False)`` cannot take token ids: it re-tokenizes
    them as text.)"""
    import torch

    from interp_jobs.engine.hooks import replace_activation
    from interp_jobs.engine.loading.transcoders import HOOK_OUT

    ids = tokens[None].to(loaded.device)
    with torch.inference_mode():
        base = demeaned(loaded.model(input_ids=ids, use_cache=False).logits[0, -1], target_id)
    effects = []
    for f in features:
        lens = lenses[f["layer"]]
        delta = -f["activation"] * lens.W_dec[f["feature"]].detach()

        def edit(out, delta=delta, pos=f["position"]):
            out = out.clone()
            out[:, pos] += delta.to(out.dtype)
            return out

        with torch.inference_mode(), replace_activation(loaded, HOOK_OUT.format(f["layer"]), edit):
            logits = loaded.model(input_ids=ids, use_cache=False).logits[0, -1]
        effects.append(demeaned(logits, target_id) - base)
    return effects
