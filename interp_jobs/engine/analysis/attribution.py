"""Attribution graphs through SAE lenses spliced into the model with their error terms.

Follows "sparse feature circuits" (Marks et al. 2024). At every lens hook the activation x is
replaced by ``x_hat + error`` with ``x_hat = decode(f)``, ``f = encode(x)`` and
``error = x - x_hat``, so the spliced model computes exactly what the unmodified model computes
while its activation is split into nodes: SAE features (one per active feature and position)
and one error node per position (what the lens fails to explain). Token nodes are the input
embeddings; the logit node is the metric on the target token at the last position.

Every number on a node or edge is an *attribution estimate* (attribution patching: gradient x
activation, a first-order linear approximation of what removing the node would change), never a
measured causal effect. ``trace`` therefore also zero-ablates the top features for real and
reports how well the estimates rank those measured effects, so the evidence carries its own
check of the approximation.

Gradients: the feature activations are leaves; the error node is ``x - x_hat.detach()``, so
the gradient reaching an upstream layer through a spliced hook is the unmodified model's
gradient (the Jacobian of ``x_hat + error`` with respect to x is the identity). Node effects
at every layer are therefore total effects through the real model, not through a model with
frozen errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch

from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.hooks import parse_hook_name, replace_activation, resolve_hook
from interp_jobs.engine.loading.lenses import lens_hook_name

METRICS = ("logprob", "logit", "logit_diff")
RESIDUAL_SITES = ("resid_pre", "resid_post")
MetricFn = Callable[[torch.Tensor], torch.Tensor]
Progress = Callable[[float, str], None]

INTERPRETATION = (
    "Node and edge values are attribution estimates (gradient x activation, a first-order "
    "linear approximation through the model with SAE error terms kept), not causal effects. "
    "Only the numbers under 'ablations' (measured_effect) are intervention results: the metric "
    "measured with one feature zero-ablated at one position. A large error share means the "
    "lenses explain little of this computation, and the feature-level story is correspondingly "
    "incomplete."
)


def make_metric(kind: str, target_id: int, contrast_id: int | None = None) -> MetricFn:
    """The scalar to explain, from the last position's logits (a 1-D tensor over the vocab)."""
    if kind == "logit":
        return lambda logits: logits[target_id]
    if kind == "logprob":
        # at least float32: a bf16 log-softmax over a large vocabulary loses the target's mass
        return lambda logits: torch.log_softmax(
            logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1
        )[target_id]
    if kind == "logit_diff":
        if contrast_id is None:
            raise PermanentEngineError("The logit_diff metric needs a contrast token.")
        return lambda logits: logits[target_id] - logits[contrast_id]
    raise PermanentEngineError(f"Unknown metric {kind!r}; use one of: {', '.join(METRICS)}.")


@dataclass(frozen=True)
class TraceLens:
    name: str
    lens: Any
    hook: str
    layer: int
    depth: int


def order_lenses(loaded, named_lenses: Sequence[tuple[str, Any]]) -> list[TraceLens]:
    """Lenses in forward order; each must read a distinct residual-stream hook point.

    Edges connect consecutive lens layers, which is only complete when each lens layer is a
    cut of the network (the residual stream); a lens on attention or MLP output would leave
    the residual path around it out of the graph.
    """
    specs = []
    for name, lens in named_lenses:
        hook = lens_hook_name(lens)
        layer, site = parse_hook_name(hook, n_layers=loaded.n_layers)
        if site not in RESIDUAL_SITES or lens.cfg.metadata.hook_name_out:
            raise PermanentEngineError(
                f"Lens {name!r} reads {hook}; circuit tracing needs SAEs on the residual stream "
                "(blocks.N.hook_resid_pre or blocks.N.hook_resid_post), not transcoders or "
                "attention/MLP outputs."
            )
        specs.append(TraceLens(name, lens, hook, layer, resolve_hook(loaded, hook).depth))
    specs.sort(key=lambda spec: spec.depth)
    depths = [spec.depth for spec in specs]
    if not specs or len(set(depths)) != len(depths):
        raise PermanentEngineError(
            "Circuit tracing needs at least one lens and at most one lens per hook point; "
            f"got hooks {[spec.hook for spec in specs]}."
        )
    return specs


@dataclass(frozen=True)
class Node:
    id: str
    type: str  # "token" | "feature" | "error" | "logit"
    layer: int  # model block of the hook; -1 for token embeddings, n_layers for the logit
    position: int
    attribution: float  # metric units; estimate (for the logit node: the metric itself)
    activation: float  # feature activation; L2 norm of the error or embedding vector
    hook: str | None = None
    feature: int | None = None
    token: str | None = None


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    # d(target activation)/d(source) . source: estimate in units of the target's activation
    # (for the logit node, the metric: the source's attribution); None for error targets,
    # which are vectors.
    weight: float | None
    metric_weight: float  # the same edge's estimated contribution to the metric


@dataclass(frozen=True)
class Ablation:
    node: str
    hook: str | None  # always set: only feature nodes are ablated
    position: int
    feature: int | None
    attribution: float  # estimate of metric(clean) - metric(ablated)
    measured_effect: float  # measured metric(clean) - metric(ablated): an intervention result
    metric_ablated: float
    in_graph: bool


@dataclass(frozen=True)
class LayerSummary:
    name: str
    hook: str
    layer: int
    n_active_features: int
    feature_influence: float  # sum of |feature attribution| over features and positions
    error_influence: float  # sum of |error attribution| over positions
    error_share: float
    feature_total: float  # signed sums: features + errors + unattributed = grad . x
    error_total: float
    unattributed: float  # decoder bias (and any decoder nonlinearity): carried by no node
    kept_nodes: int
    kept_influence_fraction: float
    # Guards against a lens whose features and error are large and cancel (e.g. a random
    # lens): many large feature attributions then make error_share look small.
    activation_influence: float  # sum over positions of |grad . x|: the whole activation
    error_to_activation: float  # error_influence / activation_influence (can exceed 1)
    relative_error_norm: float  # ||x - x_hat|| / ||x|| on this prompt (observed); >= 1: none


@dataclass
class Graph:
    tokens: list[tuple[int, int, str]]  # (position, token id, text)
    nodes: list[Node]
    edges: list[Edge]
    layers: list[LayerSummary]
    ablations: list[Ablation]
    metric_unmodified: float
    metric_spliced: float
    max_abs_logit_diff: float  # spliced-with-errors vs unmodified logits, last position
    n_forward_passes: int
    n_backward_passes: int
    token_total: float = 0.0  # sum of token attributions

    @property
    def error_share(self) -> float:
        errors = sum(layer.error_influence for layer in self.layers)
        total = errors + sum(layer.feature_influence for layer in self.layers)
        return errors / total if total > 0 else math.nan

    @property
    def error_to_activation(self) -> float:
        errors = sum(layer.error_influence for layer in self.layers)
        whole = sum(layer.activation_influence for layer in self.layers)
        return errors / whole if whole > 0 else math.nan

    @property
    def worst_relative_error_norm(self) -> float:
        return max(layer.relative_error_norm for layer in self.layers)

    @property
    def rank_agreement(self) -> float | None:
        return spearman(
            [a.attribution for a in self.ablations], [a.measured_effect for a in self.ablations]
        )

    @property
    def sign_agreement(self) -> float | None:
        return sign_agreement(
            [a.attribution for a in self.ablations], [a.measured_effect for a in self.ablations]
        )


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties given their average rank (as Spearman's rho requires)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            ranks[i] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation; None when undefined (< 2 values or a constant side)."""
    if len(a) != len(b):
        raise ValueError("spearman needs two sequences of the same length")
    if len(a) < 2:
        return None
    ra, rb = _ranks(a), _ranks(b)
    mean = (len(a) + 1) / 2
    cov = sum((x - mean) * (y - mean) for x, y in zip(ra, rb, strict=True))
    var_a = sum((x - mean) ** 2 for x in ra)
    var_b = sum((y - mean) ** 2 for y in rb)
    if var_a == 0 or var_b == 0:
        return None
    return cov / math.sqrt(var_a * var_b)


def sign_agreement(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Fraction of pairs whose signs agree (zero agrees only with zero); None if empty."""
    if not a:
        return None
    signs = [(x > 0) - (x < 0) == (y > 0) - (y < 0) for x, y in zip(a, b, strict=True)]
    return sum(signs) / len(signs)


@dataclass
class _Site:
    """One spliced lens during a trace: its node tensors (batch of one, kept for backprop)."""

    spec: TraceLens
    # Set by the splice during the forward pass (Any: None until then, a tensor after).
    features: Any = None  # leaf, (1, T, d_sae)
    error: Any = None  # x - x_hat.detach(), (1, T, d)
    features_live: Any = None  # encode(x) in the graph: edges into features
    error_live: Any = None  # x - decode(encode(x)) in the graph: into errors
    grads: dict[str, torch.Tensor] = field(default_factory=dict)


def _splicer(site: _Site) -> Callable[[torch.Tensor], torch.Tensor]:
    lens = site.spec.lens

    def splice(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            encoded = lens.encode(x)
        site.features = encoded.detach().requires_grad_(True)
        x_hat = lens.decode(site.features).to(x.dtype)
        # Detaching x_hat here makes d(x_hat + error)/dx the identity, so gradients reaching
        # earlier layers are the unmodified model's, while d/d(features) goes through decode.
        site.error = x - x_hat.detach()
        site.features_live = lens.encode(x)
        site.error_live = x - lens.decode(site.features_live).to(x.dtype)
        return x_hat + site.error

    return splice


def _spliced_logits(loaded, sites: list[_Site], embeds: torch.Tensor, keep: int = 0):
    """(T, vocab) logits with every lens spliced in as x_hat + error (the last ``keep``
    positions only when keep > 0: the metric needs just the last one)."""
    with ExitStack() as stack:
        for site in sites:
            stack.enter_context(replace_activation(loaded, site.spec.hook, _splicer(site)))
        out = loaded.model(inputs_embeds=embeds, use_cache=False, logits_to_keep=keep)
    return out.logits[0]


def spliced_logits(loaded, lenses: Sequence[tuple[str, Any]], input_ids: torch.Tensor):
    """(T, vocab) logits of the model with every lens spliced in with its error term; they
    should equal the unmodified model's (what makes the graph a description of the model)."""
    sites = [_Site(spec) for spec in order_lenses(loaded, lenses)]
    with torch.inference_mode(False), torch.no_grad():
        embeds = loaded.model.get_input_embeddings()(input_ids)
        return _spliced_logits(loaded, sites, embeds)


def _unmodified_logits(loaded, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = loaded.model(input_ids=input_ids, use_cache=False, logits_to_keep=1)
        return out.logits[0, -1].clone()


def trace(
    loaded,
    lenses: Sequence[tuple[str, Any]],
    input_ids: torch.Tensor,
    metric_fn: MetricFn,
    *,
    max_nodes: int = 20,
    node_threshold: float = 0.8,
    n_ablations: int = 10,
    progress: Progress | None = None,
) -> Graph:
    """The attribution graph of ``metric_fn(last-position logits)`` for one prompt.

    ``lenses`` are (name, SAE) pairs on residual-stream hooks; ``input_ids`` is (1, T).
    Per lens layer, nodes are kept in order of |attribution| until they carry
    ``node_threshold`` of that layer's total |attribution| or ``max_nodes`` are kept. Cost:
    one unmodified forward, one spliced forward and backward, for the edges one partial
    backward (down to the previous lens layer) per lens layer, vectorised over its kept nodes
    (EDGE_BATCH at a time), and the ablation checks, ABLATION_BATCH rows per forward pass.
    """
    report = progress or _silent
    sites = [_Site(spec) for spec in order_lenses(loaded, lenses)]
    report(0.0, "unmodified forward pass")
    clean_logits = _unmodified_logits(loaded, input_ids)
    metric_unmodified = float(metric_fn(clean_logits))
    with torch.inference_mode(False), torch.enable_grad():
        found = _attribute(
            loaded,
            sites,
            input_ids,
            metric_fn,
            report,
            max_nodes=max_nodes,
            node_threshold=node_threshold,
        )
    logit_node = _logit_node(loaded, input_ids, metric_unmodified)
    found.edges += [Edge(n.id, logit_node.id, n.attribution, n.attribution) for n in found.kept[-1]]
    ablations = _ablations(loaded, sites, found, metric_fn, metric_unmodified, n_ablations, report)
    return Graph(
        tokens=[
            (n.position, int(i), n.token or "")
            for n, i in zip(found.token_nodes, input_ids[0].tolist(), strict=True)
        ],
        nodes=found.token_nodes + [n for layer in found.kept for n in layer] + [logit_node],
        edges=found.edges,
        layers=[
            _summary(site, nodes, kept)
            for site, nodes, kept in zip(sites, found.all_nodes, found.kept, strict=True)
        ],
        ablations=ablations,
        metric_unmodified=metric_unmodified,
        metric_spliced=float(found.metric),
        max_abs_logit_diff=float((found.logits - clean_logits).abs().max()),
        n_forward_passes=2 + _batches(ablations),
        n_backward_passes=1 + sum(math.ceil(len(layer) / EDGE_BATCH) for layer in found.kept),
        token_total=sum(n.attribution for n in found.token_nodes),
    )


def _silent(fraction: float, stage: str) -> None:
    return None


@dataclass
class _Attributed:
    embeds: torch.Tensor  # detached input embeddings
    logits: torch.Tensor  # spliced, last position, detached
    metric: torch.Tensor
    token_nodes: list[Node]
    all_nodes: list[list[Node]]  # per lens layer, before pruning
    kept: list[list[Node]]  # per lens layer, after pruning
    edges: list[Edge]


def _attribute(
    loaded, sites, input_ids, metric_fn, report: Progress, *, max_nodes: int, node_threshold: float
) -> _Attributed:
    """The spliced forward pass, node attributions, pruning and edges (needs grad mode)."""
    embeds = loaded.model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
    report(0.05, "spliced forward and backward pass")
    logits = _spliced_logits(loaded, sites, embeds, keep=1)[-1]
    metric = metric_fn(logits)
    token_nodes = _token_nodes(loaded, input_ids, embeds, _node_effects(metric, embeds, sites))
    all_nodes = [_layer_nodes(site) for site in sites]
    kept = [prune(nodes, max_nodes=max_nodes, node_threshold=node_threshold) for nodes in all_nodes]
    edges = _all_edges(sites, embeds, token_nodes, kept, report)
    return _Attributed(
        embeds.detach(), logits.detach(), metric.detach(), token_nodes, all_nodes, kept, edges
    )


def _node_effects(metric: torch.Tensor, embeds: torch.Tensor, sites: list[_Site]) -> torch.Tensor:
    """One backward pass: the metric's gradient at every node; returns the embeddings' one."""
    tensors = [embeds, *(s.features for s in sites), *(s.error for s in sites)]
    grads = torch.autograd.grad(metric, tensors, retain_graph=True)
    n = len(sites)
    for i, site in enumerate(sites):
        site.grads = {"features": grads[1 + i].detach()[0], "error": grads[1 + n + i].detach()[0]}
    return grads[0].detach()[0]


def _token_nodes(loaded, input_ids, embeds, grads) -> list[Node]:
    values = embeds.detach()[0]
    attributions = (grads * values).sum(-1).tolist()
    norms = values.norm(dim=-1).tolist()
    return [
        Node(
            id=f"token@{p}",
            type="token",
            layer=-1,
            position=p,
            attribution=attributions[p],
            activation=norms[p],
            token=loaded.tokenizer.decode([token_id]),
        )
        for p, token_id in enumerate(input_ids[0].tolist())
    ]


def _logit_node(loaded, input_ids, metric_value: float) -> Node:
    return Node(
        id="logit",
        type="logit",
        layer=loaded.n_layers,
        position=input_ids.shape[1] - 1,
        attribution=metric_value,
        activation=metric_value,
    )


def _layer_nodes(site: _Site) -> list[Node]:
    """Every active feature (activation != 0) and every position's error, with attributions."""
    hook, layer = site.spec.hook, site.spec.layer
    features = site.features.detach()[0]
    attributions = site.grads["features"] * features
    index = torch.nonzero(features)
    rows, columns = index[:, 0], index[:, 1]
    nodes = [
        Node(
            id=f"{hook}/f{j}@{p}",
            type="feature",
            layer=layer,
            position=p,
            hook=hook,
            feature=j,
            activation=value,
            attribution=attribution,
        )
        for (p, j), value, attribution in zip(
            index.tolist(),
            features[rows, columns].tolist(),
            attributions[rows, columns].tolist(),
            strict=True,
        )
    ]
    error = site.error.detach()[0]
    error_attr = (site.grads["error"] * error).sum(-1).tolist()
    norms = error.norm(dim=-1).tolist()
    nodes += [
        Node(
            id=f"{hook}/error@{p}",
            type="error",
            layer=layer,
            position=p,
            hook=hook,
            activation=norms[p],
            attribution=error_attr[p],
        )
        for p in range(error.shape[0])
    ]
    return nodes


def _ranked(nodes: Sequence[Node]) -> list[Node]:
    """Largest |attribution| first; ties broken by id so the order is reproducible."""
    return sorted(nodes, key=lambda n: (-abs(n.attribution), n.id))


def prune(nodes: Sequence[Node], *, max_nodes: int, node_threshold: float) -> list[Node]:
    """The fewest top nodes whose |attribution| reaches ``node_threshold`` of the total,
    capped at ``max_nodes``; nodes with zero attribution are never kept."""
    ranked = [n for n in _ranked(nodes) if n.attribution != 0]
    total = sum(abs(n.attribution) for n in ranked)
    kept: list[Node] = []
    carried = 0.0
    for node in ranked:
        if len(kept) >= max_nodes or carried >= node_threshold * total:
            break
        kept.append(node)
        carried += abs(node.attribution)
    return kept


def _summary(site: _Site, nodes: list[Node], kept: list[Node]) -> LayerSummary:
    features = [n.attribution for n in nodes if n.type == "feature"]
    errors = [n.attribution for n in nodes if n.type == "error"]
    feature_influence = sum(abs(a) for a in features)
    error_influence = sum(abs(a) for a in errors)
    total = feature_influence + error_influence
    grad_x_hat, activation_influence, relative_error_norm = _lens_fit(site)
    return LayerSummary(
        name=site.spec.name,
        hook=site.spec.hook,
        layer=site.spec.layer,
        n_active_features=len(features),
        feature_influence=feature_influence,
        error_influence=error_influence,
        error_share=error_influence / total if total > 0 else math.nan,
        feature_total=sum(features),
        error_total=sum(errors),
        # grad . x_hat minus what the features carry: the decoder bias, which no node owns
        unattributed=grad_x_hat - sum(features),
        kept_nodes=len(kept),
        kept_influence_fraction=sum(abs(n.attribution) for n in kept) / total if total else 0.0,
        activation_influence=activation_influence,
        error_to_activation=(
            error_influence / activation_influence if activation_influence else math.nan
        ),
        relative_error_norm=relative_error_norm,
    )


def _lens_fit(site: _Site) -> tuple[float, float, float]:
    """grad . x_hat, sum over positions of |grad . x|, and ||error|| / ||x||."""
    error = site.error.detach()[0]
    x_hat = site.spec.lens.decode(site.features.detach()).to(error.dtype)[0]
    x = x_hat + error
    grad = site.grads["error"]  # d metric / d(x_hat + error): the activation's gradient
    x_norm = float(x.norm())
    return (
        float((grad * x_hat).sum()),
        float((grad * x).sum(-1).abs().sum()),
        float(error.norm()) / x_norm if x_norm else math.nan,
    )


EDGE_BATCH = 16  # kept nodes whose incoming edges share one vectorised backward pass


def _all_edges(sites, embeds, token_nodes, kept, report: Progress) -> list[Edge]:
    edges: list[Edge] = []
    done, total = 0, sum(len(layer) for layer in kept) or 1
    for k, site in enumerate(sites):
        if k == 0:
            upstream, tensors = token_nodes, [embeds]
        else:
            upstream, tensors = kept[k - 1], [sites[k - 1].features, sites[k - 1].error]
        for start in range(0, len(kept[k]), EDGE_BATCH):
            report(0.1 + 0.6 * done / total, f"edges into {site.spec.hook}")
            chunk = kept[k][start : start + EDGE_BATCH]
            grads = _batched_grads([_downstream_scalar(site, node) for node in chunk], tensors)
            for row, node in enumerate(chunk):
                row_grads = [None if grad is None else grad[row] for grad in grads]
                edges += _edges_into(site, node, upstream, tensors, row_grads)
            done += len(chunk)
    return edges


def _batched_grads(scalars: list[torch.Tensor], tensors: list[torch.Tensor]):
    """d scalar_i / d tensors for every i in one backward pass, vectorised over i (row i of
    each result); it stops at ``tensors``, so only the layers in between are traversed."""
    outputs = torch.stack(scalars)
    rows = torch.eye(len(scalars), dtype=outputs.dtype, device=outputs.device)
    return torch.autograd.grad(
        outputs,
        tensors,
        grad_outputs=rows,
        retain_graph=True,
        allow_unused=True,
        is_grads_batched=True,
    )


def _edges_into(site: _Site, node: Node, upstream: list[Node], tensors, grads) -> list[Edge]:
    """Edges from the previous lens layer (or the tokens) into ``node``, from its gradients."""
    edges = []
    for source in upstream:
        if source.position > node.position:  # causal: a later position cannot feed it
            continue
        contribution = _contribution(source, tensors, grads)
        if contribution == 0:
            continue
        if node.type == "feature":
            metric_grad = float(site.grads["features"][node.position, node.feature])
            edges.append(Edge(source.id, node.id, contribution, contribution * metric_grad))
        else:
            edges.append(Edge(source.id, node.id, None, contribution))
    return edges


def _downstream_scalar(site: _Site, node: Node) -> torch.Tensor:
    """A feature's activation, or an error node's metric-weighted value (it is a vector)."""
    if node.type == "feature":
        return site.features_live[0, node.position, node.feature]
    return (site.grads["error"][node.position] * site.error_live[0, node.position]).sum()


def _contribution(node: Node, tensors, grads) -> float:
    """gradient . value of an upstream node (token embedding, feature, or error vector)."""
    index = 1 if node.type == "error" else 0
    grad = grads[index]
    if grad is None:
        return 0.0
    value = tensors[index].detach()
    if node.type == "feature":
        return float(grad[0, node.position, node.feature] * value[0, node.position, node.feature])
    return float((grad[0, node.position] * value[0, node.position]).sum())


ABLATION_BATCH = 8  # ablations of one hook share a forward pass, one batch row each


def _ablations(
    loaded, sites, found: _Attributed, metric_fn, metric_unmodified: float, n: int, report: Progress
) -> list[Ablation]:
    """Zero-ablate the top-|attribution| features (over all lens layers) one at a time, each
    in its own batch row, and measure the metric."""
    kept_ids = {node.id for layer in found.kept for node in layer}
    features = [node for layer in found.all_nodes for node in layer if node.type == "feature"]
    chosen = _ranked(features)[:n]
    measured: dict[str, float] = {}
    for site in sites:
        group = [node for node in chosen if node.hook == site.spec.hook]
        for start in range(0, len(group), ABLATION_BATCH):
            report(0.7 + 0.3 * len(measured) / max(n, 1), "ablation checks")
            chunk = group[start : start + ABLATION_BATCH]
            values = _patched_metrics(loaded, site, found.embeds, chunk, metric_fn)
            measured.update(zip((node.id for node in chunk), values, strict=True))
    return [
        Ablation(
            node=node.id,
            hook=node.hook,
            position=node.position,
            feature=node.feature,
            attribution=node.attribution,
            measured_effect=metric_unmodified - measured[node.id],
            metric_ablated=measured[node.id],
            in_graph=node.id in kept_ids,
        )
        for node in chosen
    ]


def _batches(ablations: list[Ablation]) -> int:
    """Forward passes the ablation checks took (rows of one hook are batched)."""
    per_hook: dict[str | None, int] = {}
    for ablation in ablations:
        per_hook[ablation.hook] = per_hook.get(ablation.hook, 0) + 1
    return sum(math.ceil(count / ABLATION_BATCH) for count in per_hook.values())


def _patched_metrics(loaded, site: _Site, embeds, nodes: list[Node], metric_fn) -> list[float]:
    """The metric with one feature set to zero at one position, per batch row, measured.

    At the feature's hook the activation becomes decode(edited features) + the clean error,
    so only that feature's decoder contribution changes. Every other lens, spliced with its
    own error term recomputed on this run, is the identity; it is left out, which is the same
    model without the rounding. Everything downstream responds as the unmodified model does.
    """
    features = site.features.detach().expand(len(nodes), -1, -1).clone()
    for row, node in enumerate(nodes):
        features[row, node.position, node.feature] = 0.0
    with torch.inference_mode():
        patched = site.spec.lens.decode(features).to(embeds.dtype) + site.error.detach()
        with replace_activation(loaded, site.spec.hook, lambda x: patched):
            out = loaded.model(
                inputs_embeds=embeds.expand(len(nodes), -1, -1), use_cache=False, logits_to_keep=1
            )
        return [float(metric_fn(row)) for row in out.logits[:, -1]]
