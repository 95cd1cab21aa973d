"""The graph in circuit-tracer's viewer format, and the feature files its viewer reads.

``graph_json`` runs circuit-tracer's own ``create_graph_files`` (metadata, qParams, nodes,
links: the schema circuit-tracer's local viewer and Neuronpedia's graph viewer open) and
checks the result against ``circuit_tracer.frontend.graph_models.Model``. ``feature_files``
writes, for every feature node of that graph, the file the viewer fetches at
``features/<scan>/<index>.json`` (``frontend.feature_models.Model``; ``index`` is the node's
``feature`` field, circuit-tracer's Cantor pairing of layer and feature): the feature's top
activating contexts on the transcoders' training text (``contexts.safetensors``, recorded at
training), its firing frequency there, and the tokens its decoder direction promotes and
suppresses through the unembedding. Only the peak activation of each context was recorded,
so the other tokens of a context show 0.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from interp_jobs.engine.loading.transcoders import CONTEXTS_FILE, circuit_tracer

WINDOW_BEFORE, WINDOW_AFTER = 12, 3
N_LOGITS = 10


def graph_json(traced, *, slug: str, node_threshold: float, edge_threshold: float) -> dict:
    """circuit-tracer's graph file for ``traced`` (validated), as a JSON object."""
    circuit_tracer()
    from circuit_tracer.utils.create_graph_files import create_graph_files

    with tempfile.TemporaryDirectory(prefix="assay-graph-") as tmp:
        out = Path(tmp).resolve() / "graph"  # create_graph_files needs a parent directory
        create_graph_files(
            traced.graph,
            slug=slug,
            output_path=str(out),
            node_threshold=node_threshold,
            edge_threshold=edge_threshold,
        )
        text = (out / f"{slug}.json").read_text(encoding="utf-8")
    validate_graph(text)
    return json.loads(text)


def validate_graph(text: str | bytes) -> None:
    """Raise unless ``text`` is a graph in circuit-tracer's schema."""
    circuit_tracer()
    from circuit_tracer.frontend.graph_models import Model

    Model.model_validate_json(text)


def validate_feature(data: dict) -> None:
    circuit_tracer()
    from circuit_tracer.frontend.feature_models import Model

    Model.model_validate(data)


def feature_nodes(graph: dict) -> list[tuple[int, int, int]]:
    """(layer, feature, viewer index) of every feature node, in the graph's order, once each."""
    seen, out = set(), []
    for node in graph["nodes"]:
        if node["feature_type"] != "cross layer transcoder":
            continue
        layer, feature, _ = (int(x) for x in node["node_id"].split("_"))
        if (layer, feature) not in seen:
            seen.add((layer, feature))
            out.append((layer, feature, int(node["feature"])))
    return out


def load_contexts(layer_dir: str | Path) -> dict[str, Any] | None:
    path = Path(layer_dir) / CONTEXTS_FILE
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        tensors["n_tokens"] = int((handle.metadata() or {}).get("n_tokens", 0))
    return tensors


def feature_files(
    graph: dict,
    *,
    scan: str,
    lenses: Sequence,
    layer_dirs: Sequence[str | Path],
    tokenizer,
    unembed,
    context_rows=None,
) -> dict[str, dict]:
    """``{"<index>.json": feature file}`` for every feature node of ``graph``.

    ``unembed``: the model's output matrix with the final norm's scale folded in
    ([vocab, d_model]); ``context_rows``: the token rows the contexts index (None: the files
    carry no examples).
    """
    files = {}
    for layer, feature, index in feature_nodes(graph):
        contexts = load_contexts(layer_dirs[layer])
        decoder = lenses[layer].W_dec[feature].detach().float()
        promoted = unembed.float() @ decoder
        files[f"{index}.json"] = _feature_file(
            scan, index, feature, contexts, context_rows, tokenizer, promoted
        )
    return files


def _feature_file(scan, index, feature, contexts, rows, tokenizer, promoted) -> dict:
    top = promoted.topk(N_LOGITS).indices.tolist()
    bottom = (-promoted).topk(N_LOGITS).indices.tolist()
    examples, peaks, frequency = [], [], 0.0
    if contexts is not None:
        acts = contexts["activation"][feature].float().tolist()
        peaks = [a for a in acts if a > 0]
        frequency = float(contexts["fired"][feature]) / max(1, contexts["n_tokens"])
        if rows is not None:
            for a, row, pos in zip(
                acts,
                contexts["row"][feature].tolist(),
                contexts["position"][feature].tolist(),
                strict=True,
            ):
                if a > 0:
                    examples.append(_example(tokenizer, rows[int(row)].tolist(), int(pos), a))
    data = {
        "transcoder_id": scan,
        "index": index,
        "examples_quantiles": [{"quantile_name": "Top activations", "examples": examples}],
        "top_logits": [tokenizer.decode([i]) for i in top],
        "bottom_logits": [tokenizer.decode([i]) for i in bottom],
        "act_min": 0.0,
        "act_max": max(peaks) if peaks else 0.0,
        "quantile_values": peaks,
        "histogram": [],
        "activation_frequency": frequency,
    }
    validate_feature(data)
    return data


def _example(tokenizer, row: list[int], pos: int, activation: float) -> dict:
    start, end = max(1, pos - WINDOW_BEFORE), min(len(row), pos + WINDOW_AFTER + 1)
    tokens = [tokenizer.decode([t]) for t in row[start:end]]
    acts = [activation if start + i == pos else 0.0 for i in range(end - start)]
    return {
        "tokens": tokens,
        "tokens_acts_list": acts,
        "train_token_ind": pos - start,
        "is_repeated_datapoint": False,
    }


def unembedding(loaded):
    """The output matrix with the final norm's scale folded in: what a residual direction
    contributes to each logit (up to the norm's common 1/rms)."""
    from interp_jobs.engine.loading.architectures import family_for, get_path

    family = family_for(loaded.model_type)
    norm = get_path(loaded.model, family.final_norm)
    weight = loaded.model.get_output_embeddings().weight.detach()
    scale = getattr(norm, "weight", None)
    return weight * scale.detach()[None, :] if scale is not None else weight
