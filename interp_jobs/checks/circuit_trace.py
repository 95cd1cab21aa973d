"""circuit_trace: an attribution graph for one prompt and target token across the lens layers.

Evidence kind: attribution. Method: "sparse feature circuits" (Marks et al. 2024). Every named
lens (SAE on the residual stream) is spliced into the model as ``x_hat + error`` with
``error = x - x_hat`` kept as a node, so the spliced model's logits equal the unmodified
model's (the artifact records the largest difference). Nodes: one per prompt token (its input
embedding), per active SAE feature and position, per lens error and position, and the metric
on the target at the last position (``logprob``, ``logit`` or ``logit_diff`` against a contrast
token). Node values are gradient x activation through the model with error terms kept
(attribution patching); edges join consecutive lens layers, tokens to the first, the last to
the metric. Per lens layer, nodes are kept by |attribution| until ``node_threshold`` of the
layer's total is reached or ``max_nodes`` are kept.

Two honesty measures go into the evidence: (1) the error share, the fraction of the total
|attribution| at the lens layers that flows through error nodes (the part of the computation
the lenses do not explain). A lens whose features and error are both large and cancel (a
random or badly trained lens) spreads |attribution| over many features and so shows a *small*
error share; two companion numbers expose that: error_to_activation (the errors' |attribution|
over that of the whole activations, above 1 when they cancel) and relative_error_norm
(||x - x_hat|| / ||x|| on the traced prompt, an observation; 1 or more means the lens
reconstructs nothing). (2) the top ``n_ablation_checks`` features (by |attribution|, over
all lens layers) are zero-ablated for real, one at a time, and the measured change of the
metric is compared with the attribution estimate (Spearman rank agreement, sign agreement).
Those ablations are intervention results and are labelled as such inside graph.json; every
other number on the graph is an attribution estimate. Only zero-ablation is offered: a mean
replacement needs a reference distribution, and the mean over the traced prompt alone is
dominated by the first token's outlier activations.

Thresholds (optional): ``min_rank_agreement`` (Spearman between estimates and measured
effects must reach it), ``max_error_share`` (error share over all lens layers must not exceed
it) and ``max_relative_error`` (relative_error_norm, over all prompt positions, must not exceed
it at any lens layer; set it with max_error_share so a lens that reconstructs nothing cannot
pass). The verdict fails if any given threshold fails, is inconclusive when none is given or a
given one cannot be measured (fewer than two ablations, or constant values), and passes
otherwise. The trace has no randomness; ``seed`` is recorded for uniformity with the other
checks.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from interp_jobs.checks import inputs
from interp_jobs.checks.base import (
    ATTRIBUTION,
    FAIL,
    INCONCLUSIVE,
    INTERVENTION,
    PASS,
    ArtifactData,
    CheckContext,
    CheckParameterError,
    CheckResult,
    Spec,
    evidence_json,
)
from interp_jobs.checks.figures import layered_graph_svg

DESCRIPTION = (
    "attribution graph (SAE features, error nodes, tokens, target logit) for one prompt "
    "across the lens layers, with error terms kept, pruned by influence and checked "
    "against real zero-ablations"
)
EVIDENCE_KIND = ATTRIBUTION
MAX_PROMPT_TOKENS = 128  # bounds the cost (one partial backward per kept node) and the figure


class Parameters(Spec):
    prompt: str = Field(min_length=1, max_length=4000)
    chat: bool = Field(False, description="wrap the prompt in the model's chat template")
    target: str = Field(min_length=1, description="a single token, e.g. ' Paris'")
    contrast: str | None = Field(None, min_length=1, description="for metric='logit_diff'")
    metric: Literal["logprob", "logit", "logit_diff"] = "logprob"
    lenses: tuple[str, ...] | None = Field(
        None, min_length=1, description="lens names; default: every lens"
    )
    max_nodes: int = Field(20, ge=1, le=200, description="kept nodes per lens layer, at most")
    node_threshold: float = Field(
        0.8,
        gt=0,
        le=1,
        description=(
            "keep nodes per lens layer until they carry this fraction of its total |attribution|"
        ),
    )
    n_ablation_checks: int = Field(10, ge=0, le=100)
    ablation: Literal["zero"] = "zero"
    seed: int = 0

    @model_validator(mode="after")
    def _contrast_matches_metric(self) -> Parameters:
        if (self.metric == "logit_diff") != (self.contrast is not None):
            raise ValueError("give a contrast token exactly when metric is 'logit_diff'")
        if self.contrast is not None and self.contrast == self.target:
            raise ValueError("contrast must differ from target")
        return self


class Thresholds(Spec):
    min_rank_agreement: float | None = Field(None, ge=-1, le=1)
    max_error_share: float | None = Field(None, ge=0, le=1)
    max_relative_error: float | None = Field(None, gt=0)


Context = CheckContext[Parameters, Thresholds]


def run(context: Context) -> CheckResult:
    from interp_jobs.engine.analysis.attribution import make_metric, trace

    params = context.parameters
    context.progress(0.0, "loading model and lenses")
    loaded = inputs.load_model_for(context)
    lenses = _lenses(context, loaded)
    input_ids = _prompt_ids(loaded, params)
    target_id = token_id(loaded.tokenizer, params.target, "target")
    contrast_id = (
        token_id(loaded.tokenizer, params.contrast, "contrast") if params.contrast else None
    )
    context.log(
        f"tracing {params.metric} of {params.target!r} over {input_ids.shape[1]} tokens "
        f"through {', '.join(lens.cfg.metadata.hook_name for _, lens, _ in lenses)}"
    )
    graph = trace(
        loaded,
        [(ref.name, lens) for ref, lens, _ in lenses],
        input_ids,
        make_metric(params.metric, target_id, contrast_id),
        max_nodes=params.max_nodes,
        node_threshold=params.node_threshold,
        n_ablations=params.n_ablation_checks,
        progress=lambda fraction, stage: context.progress(0.05 + 0.9 * fraction, stage),
    )
    verdict, reasons = judge(graph, context.thresholds)
    target = {
        "text": params.target,
        "id": target_id,
        "contrast": params.contrast,
        "contrast_id": contrast_id,
    }
    document = graph_document(graph, params, target, lenses)
    return CheckResult(
        verdict=verdict,
        evidence_kind=EVIDENCE_KIND,
        metrics=_metrics(graph, params),
        summary=_summary(graph, params, context.model.name or context.model.path, verdict, reasons),
        artifacts=(
            ArtifactData("graph.json", "application/json", evidence_json(document)),
            ArtifactData("graph.svg", "image/svg+xml", graph_svg(graph, params)),
        ),
        provenance=_provenance(params, input_ids, target, lenses),
    )


def _lenses(context: Context, loaded) -> list[tuple]:
    """(LensRef, SAE, lens_info) for each named lens, or every registered lens."""
    from interp_jobs.engine.loading.lenses import lens_info

    names = list(context.parameters.lenses or (ref.name for ref in context.lenses))
    if not names:
        raise CheckParameterError(
            "circuit_trace needs at least one lens (an SAE on the residual "
            "stream) registered for the model, and none is"
        )
    if len(set(names)) != len(names):
        raise CheckParameterError(f"parameters.lenses: each lens must be named once, got {names}")
    loaded_lenses = []
    for name in names:
        lens, ref = inputs.load_lens_for(context, name, loaded)
        loaded_lenses.append((ref, lens, lens_info(lens)))
    return loaded_lenses


def _prompt_ids(loaded, params: Parameters):
    input_ids = loaded.encode(params.prompt, chat=params.chat)["input_ids"]
    if input_ids.shape[1] > MAX_PROMPT_TOKENS:
        raise CheckParameterError(
            f"parameters.prompt: {input_ids.shape[1]} tokens, more than the {MAX_PROMPT_TOKENS} "
            "a circuit trace accepts; shorten the prompt to the context the target depends on."
        )
    return input_ids


def token_id(tokenizer, text: str, what: str) -> int:
    """The id of ``text`` if it is exactly one token; otherwise say how it tokenizes."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    pieces = [tokenizer.decode([i]) for i in ids]
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        hint = f"e.g. {pieces[0]!r} (its first token)" if pieces else "a non-empty token"
        raise CheckParameterError(
            f"parameters.{what}: {text!r} is not a single token for this model's tokenizer: it "
            f"tokenizes to {len(ids)} token(s) {pieces} (ids {ids}). Give one token, {hint}; "
            "a leading space is usually part of a word's token (' Paris', not 'Paris')."
        )
    return ids[0]


def judge(graph, thresholds: Thresholds) -> tuple[str, list[str]]:
    """Verdict from the policy's thresholds only; reasons say what was compared."""
    outcomes: list[tuple[bool | None, str]] = []
    if thresholds.min_rank_agreement is not None:
        rho = graph.rank_agreement
        outcomes.append(
            (
                None,
                "rank agreement could not be measured (fewer than two ablations "
                "or constant values)",
            )
            if rho is None
            else (
                rho >= thresholds.min_rank_agreement,
                f"rank agreement {rho:.3f} vs minimum {thresholds.min_rank_agreement}",
            )
        )
    if thresholds.max_error_share is not None:
        share = graph.error_share
        outcomes.append(
            (None, "error share undefined (no attribution at the lens layers)")
            if math.isnan(share)
            else (
                share <= thresholds.max_error_share,
                f"error share {share:.3f} vs maximum {thresholds.max_error_share}",
            )
        )
    if thresholds.max_relative_error is not None:
        worst = graph.worst_relative_error_norm
        outcomes.append(
            (
                worst <= thresholds.max_relative_error,
                f"worst relative reconstruction error {worst:.3f} vs maximum "
                f"{thresholds.max_relative_error}",
            )
        )
    reasons = [reason for _, reason in outcomes]
    if not outcomes:
        return INCONCLUSIVE, ["no thresholds were set by the policy"]
    if any(ok is False for ok, _ in outcomes):
        return FAIL, reasons
    if any(ok is None for ok, _ in outcomes):
        return INCONCLUSIVE, reasons
    return PASS, reasons


NUMBER_KINDS = {
    "attribution_estimates": (
        "nodes[].attribution, edges[].weight, edges[].metric_weight; in layers[] the influence "
        "and total sums, error_share, error_to_activation, unattributed; the top-level "
        "error_share, error_to_activation and token_attribution_total; "
        "ablations.checks[].attribution_estimate: gradient x activation, a first-order linear "
        "approximation; not measured effects"
    ),
    "intervention_results": (
        "ablations.checks[].measured_effect and ablations.checks[].metric_ablated: measured "
        "by re-running the model with that one feature set to zero at that one position"
    ),
    "observed": (
        "nodes[].activation, layers[].relative_error_norm, worst_relative_error_norm, "
        "metric.unmodified, metric.spliced_with_error_terms"
    ),
}
METHOD = {
    "reference": "Marks et al. 2024, Sparse Feature Circuits (attribution patching)",
    "splice": (
        "at each lens hook x -> decode(encode(x)) + error, error = x - decode(encode(x)) "
        "held as a node; equals the unmodified model (see metric.max_abs_logit_"
        "difference_spliced_vs_unmodified)"
    ),
    "node_attribution": (
        "feature: dmetric/dactivation * activation; error: dmetric/derror . "
        "error; token: dmetric/dembedding . embedding; gradients through the "
        "model with error terms kept (the unmodified model's gradient)"
    ),
    "edge_weight": (
        "weight = d(target activation)/d(source) . source, in the target's units "
        "(a feature's activation; for the metric node the metric, so the source's "
        "attribution; null for error targets, which are vectors); metric_weight = "
        "the same path's estimated contribution to the metric (weight x "
        "dmetric/dtarget; for error targets d(dmetric/derror . error)/d(source) . "
        "source)"
    ),
    "pruning": (
        "per lens layer, nodes by |attribution| until node_threshold of the layer's "
        "total |attribution| is kept, at most max_nodes; all token nodes are kept"
    ),
    "unattributed": (
        "per layer, dmetric/dx . decoder bias: part of the activation that no "
        "node carries; features + errors + unattributed = dmetric/dx . x"
    ),
}


def graph_document(graph, params: Parameters, target: dict, lenses: list[tuple]) -> dict:
    """graph.json: the graph, what each number is, and the ablation checks."""
    from interp_jobs.engine.analysis.attribution import EDGE_BATCH, INTERPRETATION

    texts = {position: text for position, _, text in graph.tokens}
    return {
        "evidence_kind": ATTRIBUTION,
        "interpretation": INTERPRETATION,
        "number_kinds": NUMBER_KINDS,
        "method": METHOD,
        "prompt": {
            "text": params.prompt,
            "chat": params.chat,
            "tokens": [{"position": p, "id": i, "text": t} for p, i, t in graph.tokens],
        },
        "metric": {
            "kind": params.metric,
            "target": target,
            "unmodified": graph.metric_unmodified,
            "spliced_with_error_terms": graph.metric_spliced,
            "max_abs_logit_difference_spliced_vs_unmodified": graph.max_abs_logit_diff,
        },
        "lenses": [
            {
                "name": ref.name,
                "digest": ref.digest,
                "hook": info["hook_name"],
                "d_sae": info["d_sae"],
                "architecture": info["architecture"],
            }
            for ref, _, info in lenses
        ],
        "pruning": {
            "max_nodes_per_layer": params.max_nodes,
            "node_threshold": params.node_threshold,
        },
        "error_share": graph.error_share,
        "error_to_activation": graph.error_to_activation,
        "worst_relative_error_norm": graph.worst_relative_error_norm,
        "layers": [vars(layer) for layer in graph.layers],
        "token_attribution_total": graph.token_total,
        "nodes": [_node_dict(node, texts, params.target) for node in graph.nodes],
        "edges": [vars(edge) for edge in graph.edges],
        "ablations": _ablation_document(graph),
        "cost": {
            "forward_passes": graph.n_forward_passes,
            "backward_passes": graph.n_backward_passes,
            "note": (
                "forward passes: the unmodified model, the spliced model, and the "
                "ablation checks (batched, one row per ablated feature); backward "
                "passes: one full pass for node attributions, then for the edges one "
                "partial pass (down to the previous lens layer) per lens layer, "
                f"vectorised over its kept nodes ({EDGE_BATCH} rows at most per "
                "pass)"
            ),
        },
    }


def _node_dict(node, texts: dict[int, str], target: str) -> dict:
    row = vars(node).copy()
    row["token"] = target if node.type == "logit" else texts[node.position]
    return row


def _ablation_document(graph) -> dict:
    checks = [
        {
            "node": a.node,
            "hook": a.hook,
            "position": a.position,
            "feature": a.feature,
            "attribution_estimate": a.attribution,
            "measured_effect": a.measured_effect,
            "metric_ablated": a.metric_ablated,
            "in_graph": a.in_graph,
            "signs_agree": _sign(a.attribution) == _sign(a.measured_effect),
        }
        for a in graph.ablations
    ]
    return {
        "evidence_kind": INTERVENTION,
        "replacement": "zero",
        "what": (
            "for the features with the largest |attribution| over all lens layers, one at a "
            "time: set the feature to 0 at its position (activation -> decode(features) + "
            "clean error at its hook), re-run the model, and record measured_effect = "
            "metric(unmodified) - metric(ablated); attribution_estimate is the linear "
            "estimate of that same difference"
        ),
        "rank_agreement_spearman": graph.rank_agreement,
        "sign_agreement": graph.sign_agreement,
        "checks": checks,
    }


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def graph_svg(graph, params: Parameters) -> bytes:
    layers = graph.layers
    rows = {hook: index + 1 for index, hook in enumerate(layer.hook for layer in layers)}
    nodes = [_figure_node(node, rows, len(layers) + 1) for node in graph.nodes]
    edges = [(edge.source, edge.target, edge.metric_weight) for edge in graph.edges]
    rho = graph.rank_agreement
    title = (
        f"circuit_trace: {params.metric} of {params.target!r}; error share "
        f"{_percent(graph.error_share)}; rank agreement with measured ablations "
        f"{'n/a' if rho is None else f'{rho:.2f}'}"
    )
    row_labels = [
        "tokens (embeddings)",
        *(layer.hook for layer in layers),
        f"metric: {params.metric}",
    ]
    columns = [f"{p}: {text!r}" for p, _, text in graph.tokens]
    caption = [
        "Attribution estimates (gradient x activation), not causal effects; measured "
        "ablations are in graph.json.",
        "Blue positive, red negative; circles SAE features, squares SAE error nodes; "
        "size follows |attribution|,",
        "edge opacity |estimated contribution to the metric|.",
    ]
    return layered_graph_svg(title, row_labels, columns, nodes, edges, caption)


def _figure_node(node, rows: dict[str, int], top: int) -> dict:
    row = {"token": 0, "logit": top}.get(node.type, rows.get(node.hook, 0))
    shape = {"token": "box", "logit": "box", "error": "square"}.get(node.type, "circle")
    label = node.token if node.type == "token" else f"{node.attribution:.3g}"
    # the metric's own sign is not an attribution: its box stays neutral
    value = 0.0 if node.type == "logit" else node.attribution
    return {
        "id": node.id,
        "row": row,
        "column": node.position,
        "value": value,
        "shape": shape,
        "label": label,
        "tip": f"{node.id}: attribution {node.attribution:.4g}, activation {node.activation:.4g}",
    }


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.0%}"


def _num(value: float | None) -> float | None:
    """Metrics are JSON: NaN becomes null, and 6 significant digits keep them reproducible."""
    if value is None or math.isnan(value):
        return None
    return float(f"{value:.6g}")


def _metrics(graph, params: Parameters) -> dict:
    return {
        "metric": params.metric,
        "target": params.target,
        "metric_value": _num(graph.metric_unmodified),
        "error_share": _num(graph.error_share),
        "error_share_by_layer": {layer.hook: _num(layer.error_share) for layer in graph.layers},
        "error_to_activation": _num(graph.error_to_activation),
        "relative_error_norm_by_layer": {
            layer.hook: _num(layer.relative_error_norm) for layer in graph.layers
        },
        "rank_agreement": _num(graph.rank_agreement),
        "sign_agreement": _num(graph.sign_agreement),
        "n_ablation_checks": len(graph.ablations),
        "n_nodes": len(graph.nodes),
        "n_edges": len(graph.edges),
        "max_abs_logit_diff_spliced": _num(graph.max_abs_logit_diff),
        "forward_passes": graph.n_forward_passes,
        "backward_passes": graph.n_backward_passes,
    }


def _summary(graph, params: Parameters, model: str, verdict: str, reasons: list[str]) -> str:
    hooks = ", ".join(layer.hook for layer in graph.layers)
    per_layer = ", ".join(f"{layer.hook} {_percent(layer.error_share)}" for layer in graph.layers)
    rho, signs = graph.rank_agreement, graph.sign_agreement
    check = (
        f"Zero-ablating the top {len(graph.ablations)} features for real (intervention "
        f"results) gave a Spearman rank agreement of "
        f"{'n/a' if rho is None else f'{rho:.2f}'} with their attribution estimates, and "
        f"the signs agreed for {'n/a' if signs is None else f'{signs:.0%}'} of them."
        if graph.ablations
        else "No ablation checks were run, so the estimates are "
        "unchecked against real interventions."
    )
    return (
        f"Traced the {params.metric} of target token {params.target!r} after a "
        f"{len(graph.tokens)}-token prompt{' (chat template applied)' if params.chat else ''} "
        f"on {model}, through SAE lenses at {hooks} spliced in with their error terms (the "
        f"last position's logits then differ from the unmodified model's by at most "
        f"{graph.max_abs_logit_diff:.1e}). "
        f"The graph keeps {len(graph.nodes)} nodes and {len(graph.edges)} edges; its values are "
        f"attribution estimates (gradient x activation, a linear approximation), not causal "
        f"effects. {_percent(graph.error_share)} of the total |attribution| at the lens layers "
        f"flows through error nodes ({per_layer}): that part of the computation is not "
        f"explained by lens features. {_fit_sentence(graph)} {check} Verdict {verdict}: "
        f"{'; '.join(reasons)}."
    )


def _fit_sentence(graph) -> str:
    worst, ratio = graph.worst_relative_error_norm, graph.error_to_activation
    sentence = (
        f"The lenses reconstruct this prompt's activations with relative error up to "
        f"{worst:.2f}, and the error nodes' |attribution| is {ratio:.2f} times that of "
        f"the whole activations."
    )
    if worst >= 1 or ratio > 1:
        sentence += (
            " Warning: the lenses' features and errors are large and cancel, so the "
            "error share understates how little the lenses explain; do not read the "
            "features as the mechanism."
        )
    return sentence


def _provenance(params: Parameters, input_ids, target: dict, lenses: list[tuple]) -> dict:
    return {
        "method": METHOD["reference"],
        "lenses": [
            {"name": ref.name, "digest": ref.digest, "path": ref.path, "info": info}
            for ref, _, info in lenses
        ],
        "prompt": params.prompt,
        "chat": params.chat,
        "n_prompt_tokens": int(input_ids.shape[1]),
        "target_token_id": target["id"],
        "contrast_token_id": target["contrast_id"],
        "metric": params.metric,
        "max_nodes": params.max_nodes,
        "node_threshold": params.node_threshold,
        "n_ablation_checks": params.n_ablation_checks,
        "ablation": params.ablation,
        "seed": params.seed,
    }
