"""Validation of attribution graphs that can fail: predictions against interventions on many
prompts of one form, a random-feature control, and a two-hop positive control.

For every prompt of a family (``loading.prompt_families``):

1. attribute a graph (``circuits.trace_graph``, a small node budget) and record its
   replacement and completeness scores;
2. take the ``top_nodes`` features with the largest predicted effect on the target logit
   (``circuits.predicted_ablation``) at the prompt's own positions (never the sink, never
   template scaffolding: ``analysis.positions``);
3. zero each of them in the model with circuit-tracer's ``feature_intervention`` (attention
   patterns frozen, as the graph assumes; MLPs and norms compute) and measure the change of the
   target logit; also without freezing (``circuits.free_ablation_effects``: the model's own
   response);
4. negative control: for each top feature, a random active feature of the same layer whose
   activation is within ``control_activation_ratio`` of it (the nearest in size if none is),
   zeroed the same way.

Across the family: Spearman rank correlation and sign agreement between predicted and measured
effects, the mean |effect| of top and control features and their ratio; every number with its
n and a 95 % interval from a bootstrap that resamples prompts (the nodes of one prompt are not
independent). Replacement and completeness are reported as means over the family's graphs.

Two-hop positive control (``two_hop``): for "The capital of the country where X is located is"
the graph must route through a feature of the intermediate country (never named in the prompt).
A feature counts as the country's when it fires on the country's own token in the one-hop
prompt ("The capital of France is") and on none of the other countries' tokens there; it is
found when such a feature is kept in the pruned two-hop graph and reachable from the landmark's
tokens along kept edges (pruned nodes always reach the logit). Reported per prompt, found or
not, with the rate and its Wilson interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from interp_jobs.engine.analysis import circuits
from interp_jobs.engine.analysis.positions import PositionRule, plan_positions
from interp_jobs.engine.analysis.statistics import Estimate, _percentiles, rate, spearman

Progress = Callable[[float, str], None]
RULE = PositionRule(sink_positions=1, template="mark")


def _ignore(fraction: float, stage: str) -> None:
    return None


@dataclass(frozen=True)
class ValidationSettings:
    top_nodes: int = 5
    feature_nodes: int = 128  # attribution budget per family prompt
    batch_size: int | None = None  # None: circuits.attribution_batch(feature_nodes)
    node_threshold: float = 0.8
    edge_threshold: float = 0.98
    control_activation_ratio: float = 2.0
    free_ablations: bool = True
    n_bootstrap: int = 1000
    seed: int = 0


@dataclass
class PromptCase:
    """One prompt to validate: its tokens (as circuit-tracer attributes them) and target."""

    id: str
    tokens: Any  # 1-D LongTensor
    target_id: int
    template: frozenset[int] = frozenset()
    entity: str = ""
    landmark: tuple[int, ...] = ()  # two-hop: positions of the landmark's tokens


@dataclass
class PromptResult:
    id: str
    n_tokens: int
    target_probability: float
    replacement: float
    completeness: float
    counts: dict[str, int]
    nodes: list[dict[str, Any]] = field(default_factory=list)
    controls: list[dict[str, Any]] = field(default_factory=list)


def validate_family(
    model,
    loaded,
    lenses: Sequence,
    cases: Sequence[PromptCase],
    settings: ValidationSettings,
    progress: Progress | None = None,
) -> dict[str, Any]:
    progress = progress or _ignore
    rng = np.random.default_rng(settings.seed)
    results = []
    for index, case in enumerate(cases):
        results.append(_validate_prompt(model, loaded, lenses, case, settings, rng))
        progress((index + 1) / len(cases), f"validated {index + 1} of {len(cases)} prompts")
    return {"prompts": [vars(r) for r in results], "statistics": summarize(results, settings)}


def _validate_prompt(model, loaded, lenses, case: PromptCase, settings, rng) -> PromptResult:
    traced = circuits.trace_graph(
        model,
        case.tokens,
        case.target_id,
        max_feature_nodes=settings.feature_nodes,
        batch_size=settings.batch_size,
        node_threshold=settings.node_threshold,
        edge_threshold=settings.edge_threshold,
    )
    predicted = circuits.predicted_ablation(traced).tolist()
    direct = circuits.predicted_direct(traced).tolist()
    plan = plan_positions(len(traced.tokens), RULE, template=case.template)
    content = set(plan.content)
    features = [f for f in traced.features() if f["position"] in content]
    top = sorted(features, key=lambda f: -abs(predicted[f["node"]]))[: settings.top_nodes]
    nodes = [(f["layer"], f["position"], f["feature"]) for f in top]
    base_logits, _ = model.get_activations(case.tokens)
    frozen = circuits.ablation_effects(
        model, case.tokens, case.target_id, nodes, base_logits=base_logits
    )
    free = (
        circuits.free_ablation_effects(loaded, lenses, case.tokens, case.target_id, top)
        if settings.free_ablations
        else [None] * len(top)
    )
    rows = [
        {
            **f,
            "predicted": predicted[f["node"]],
            "predicted_direct": direct[f["node"]],
            "measured": m,
            "measured_free_attention": u,
        }
        for f, m, u in zip(top, frozen, free, strict=True)
    ]
    controls = _controls(traced, top, content, settings, rng)
    control_nodes = [(c["layer"], c["position"], c["feature"]) for c in controls]
    control_effects = circuits.ablation_effects(
        model, case.tokens, case.target_id, control_nodes, base_logits=base_logits
    )
    for control, effect in zip(controls, control_effects, strict=True):
        control["measured"] = effect
    return PromptResult(
        id=case.id,
        n_tokens=len(traced.tokens),
        target_probability=traced.target_probability,
        replacement=traced.replacement,
        completeness=traced.completeness,
        counts=traced.counts(),
        nodes=rows,
        controls=controls,
    )


def _controls(traced, top: list[dict], content: set[int], settings, rng) -> list[dict]:
    """Per top feature: a random active feature of its layer with a similar activation."""
    graph = traced.graph
    active = graph.active_features.tolist()
    values = graph.activation_values.tolist()
    taken = {(f["layer"], f["position"], f["feature"]) for f in top}
    controls = []
    for f in top:
        pool = [
            (i, v)
            for i, ((layer, pos, feat), v) in enumerate(zip(active, values, strict=True))
            if layer == f["layer"] and pos in content and (layer, pos, feat) not in taken
        ]
        if not pool:
            continue
        ratio, a = settings.control_activation_ratio, abs(f["activation"])
        similar = [i for i, v in pool if a / ratio <= abs(v) <= a * ratio]
        if not similar:  # the nearest in activation size
            similar = [min(pool, key=lambda item: abs(abs(item[1]) - a))[0]]
        pick = similar[int(rng.integers(len(similar)))]
        layer, pos, feat = active[pick]
        taken.add((layer, pos, feat))
        controls.append(
            {
                "for_node": f["node"],
                "layer": layer,
                "position": pos,
                "feature": feat,
                "activation": values[pick],
                "matched_in_size": len(similar) > 1 or a / ratio <= abs(values[pick]) <= a * ratio,
            }
        )
    return controls


# --- family statistics -------------------------------------------------------------------------


def cluster_bootstrap(
    statistic: Callable[[list[Any]], float],
    groups: Sequence[Any],
    *,
    method: str,
    n: int,
    n_boot: int,
    seed: int,
) -> Estimate:
    """A statistic over groups (prompts) with a percentile-bootstrap interval resampling groups."""
    groups = list(groups)
    value = statistic(groups)
    rng = np.random.default_rng(seed)
    draws = [
        statistic([groups[i] for i in rng.integers(0, len(groups), len(groups))])
        for _ in range(n_boot)
    ]
    low, high = _percentiles(draws)
    return Estimate(float(value), low, high, n, f"cluster-bootstrap-{method}")


def _pairs(groups, key: str = "measured", by: str = "predicted"):
    rows = [row for group in groups for row in group["nodes"] if row[key] is not None]
    return (
        np.asarray([r[by] for r in rows], float),
        np.asarray([r[key] for r in rows], float),
    )


def _spearman(key: str, by: str = "predicted"):
    return lambda groups: spearman(*_pairs(groups, key, by))


def _sign_agreement(key: str):
    def statistic(groups) -> float:
        predicted, measured = _pairs(groups, key)
        if not len(predicted):
            return float("nan")
        return float(np.mean(np.sign(predicted) == np.sign(measured)))

    return statistic


def _mean_abs(part: str):
    def statistic(groups) -> float:
        values = [abs(r["measured"]) for g in groups for r in g[part]]
        return float(np.mean(values)) if values else float("nan")

    return statistic


def _control_ratio(groups) -> float:
    top, control = _mean_abs("nodes")(groups), _mean_abs("controls")(groups)
    return control / top if top > 0 else float("nan")


def _mean_of(key: str):
    return lambda groups: float(np.mean([g[key] for g in groups])) if groups else float("nan")


def summarize(results: Sequence[PromptResult], settings: ValidationSettings) -> dict[str, Any]:
    groups = [vars(r) for r in results]
    n_nodes = sum(len(g["nodes"]) for g in groups)
    n_controls = sum(len(g["controls"]) for g in groups)
    boot = {"n_boot": settings.n_bootstrap, "seed": settings.seed}

    def estimate(statistic, method: str, n: int) -> dict:
        return cluster_bootstrap(statistic, groups, method=method, n=n, **boot).as_dict()

    stats = {
        "n_prompts": len(groups),
        "n_nodes": n_nodes,
        "n_controls": n_controls,
        # the rest are the nearest in size: no active feature of the layer was within the ratio
        "n_controls_matched_in_size": sum(
            bool(c["matched_in_size"]) for g in groups for c in g["controls"]
        ),
        "replacement": estimate(_mean_of("replacement"), "mean", len(groups)),
        "completeness": estimate(_mean_of("completeness"), "mean", len(groups)),
        "rank_correlation": estimate(_spearman("measured"), "spearman", n_nodes),
        "sign_agreement": estimate(_sign_agreement("measured"), "sign-agreement", n_nodes),
        "rank_correlation_direct_only": estimate(
            _spearman("measured", "predicted_direct"), "spearman", n_nodes
        ),
        "mean_abs_effect_top": estimate(_mean_abs("nodes"), "mean", n_nodes),
        "mean_abs_effect_control": estimate(_mean_abs("controls"), "mean", n_controls),
        "control_to_top_ratio": estimate(_control_ratio, "ratio", n_nodes + n_controls),
    }
    if settings.free_ablations:
        stats["rank_correlation_free_attention"] = estimate(
            _spearman("measured_free_attention"), "spearman", n_nodes
        )
        stats["sign_agreement_free_attention"] = estimate(
            _sign_agreement("measured_free_attention"), "sign-agreement", n_nodes
        )
    return stats


# --- two-hop positive control ------------------------------------------------------------------


def entity_features(model, references: dict[str, tuple[Any, int]]) -> dict[str, set]:
    """Per entity, the (layer, feature) pairs that fire on its token in its one-hop prompt and
    on no other entity's token there. ``references``: entity -> (tokens, entity position)."""
    active: dict[str, set] = {}
    for entity, (tokens, position) in references.items():
        _, acts = model.get_activations(tokens)
        layer, feature = (acts[:, position] > 0).nonzero(as_tuple=True)
        active[entity] = set(zip(layer.tolist(), feature.tolist(), strict=True))
    specific = {}
    for entity, own in active.items():
        others = set().union(*(f for e, f in active.items() if e != entity))
        specific[entity] = own - others
    return specific


def two_hop(
    model,
    cases: Sequence[PromptCase],
    specific: dict[str, set],
    settings: ValidationSettings,
    progress: Progress | None = None,
) -> dict[str, Any]:
    progress = progress or _ignore
    rows = []
    for index, case in enumerate(cases):
        traced = circuits.trace_graph(
            model,
            case.tokens,
            case.target_id,
            max_feature_nodes=settings.feature_nodes,
            batch_size=settings.batch_size,
            node_threshold=settings.node_threshold,
            edge_threshold=settings.edge_threshold,
        )
        logits, _ = model.get_activations(case.tokens)
        answers = int(logits[0, -1].argmax()) == case.target_id
        rows.append(_two_hop_row(traced, case, specific.get(case.entity, set()), answers))
        progress((index + 1) / len(cases), f"two-hop {index + 1} of {len(cases)}")
    found = rate(sum(r["found"] for r in rows), len(rows))
    correct = [r for r in rows if r["model_answers_target"]]
    return {
        "prompts": rows,
        "found_rate": found.as_dict(),
        "found_rate_where_model_answers": rate(
            sum(r["found"] for r in correct), len(correct)
        ).as_dict(),
    }


def _two_hop_row(traced, case: PromptCase, specific: set, answers: bool) -> dict[str, Any]:
    features = traced.features()
    kept = [f for f in features if f["kept"] and (f["layer"], f["feature"]) in specific]
    reachable = _reachable_from(traced, case.landmark)
    path = [f for f in kept if f["node"] in reachable]
    return {
        "id": case.id,
        "entity": case.entity,
        "target_probability": traced.target_probability,
        "model_answers_target": answers,
        "entity_features_in_graph": [
            {k: f[k] for k in ("layer", "position", "feature", "activation")} for f in kept
        ],
        "entity_features_on_path": [
            {k: f[k] for k in ("layer", "position", "feature", "activation")} for f in path
        ],
        "found": bool(path),
        "replacement": traced.replacement,
        "completeness": traced.completeness,
    }


def _reachable_from(traced, positions: Sequence[int]) -> set[int]:
    """Node indices reachable from the token nodes at ``positions`` along kept edges."""
    n_sel, n_pos = traced.n_selected, len(traced.tokens)
    token_start = n_sel + traced.n_layers * n_pos
    edges = traced.edge_mask  # [target, source]
    frontier = [token_start + p for p in positions]
    seen = set(frontier)
    while frontier:
        source = frontier.pop()
        for target in edges[:, source].nonzero().flatten().tolist():
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen
