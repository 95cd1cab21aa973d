"""Attribution graphs on a check run's page.

Two shapes of graph JSON are read, the same way the browser viewer (static/assay/graph.js)
reads them:

- circuit-tracer's ``create_graph_files`` output (``metadata``, ``qParams``, ``nodes`` with
  node_id, feature, layer, ctx_idx, feature_type, influence, activation, clerp …, ``links``
  with source, target, weight), written by circuit_trace on circuit-tracer;
- Assay's first circuit_trace graph (``nodes`` with id, type, layer, position, attribution,
  activation, hook, feature, token; ``edges`` with source, target, weight, metric_weight).

The server reads a graph for the page that works without script (the most important nodes as
a table, and the static SVG figure) and gathers what the viewer shows on hover: a feature's
label and its top activating contexts (circuit-tracer feature files, or the feature catalog).
"""

from dataclasses import dataclass
from typing import Any

from audits.models import CatalogFeature, CheckRun
from audits.web import evidence, figures

GRAPH_TITLES = ("attribution-graph.json", "graph.json")
FEATURE_FILES_TITLE = "graph-features.json"


def is_graph(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and isinstance(data.get("nodes"), list)
        and (isinstance(data.get("links"), list) or isinstance(data.get("edges"), list))
    )


def schema_of(data: dict) -> str:
    return "circuit-tracer" if "links" in data else "assay-attribution-v1"


@dataclass(frozen=True)
class NodeRow:
    id: str
    kind: str
    layer: str
    position: int | None
    token: str
    label: str
    activation: str
    weight: str  # influence (circuit-tracer) or attribution (Assay v1)


KINDS = {
    "cross layer transcoder": "feature",
    "mlp reconstruction error": "error",
    "embedding": "token",
    "logit": "output",
    "feature": "feature",
    "error": "error",
    "token": "token",
}


def _ct_row(node: dict, tokens: list[str]) -> NodeRow:
    position = node.get("ctx_idx")
    token = tokens[position] if isinstance(position, int) and position < len(tokens) else ""
    return NodeRow(
        id=str(node.get("node_id", "")),
        kind=KINDS.get(str(node.get("feature_type")), str(node.get("feature_type"))),
        layer=str(node.get("layer", "")),
        position=position if isinstance(position, int) else None,
        token=token,
        label=str(node.get("clerp") or ""),
        activation=figures.number(node.get("activation")),
        weight=figures.number(node.get("influence")),
    )


def _v1_row(node: dict) -> NodeRow:
    kind = str(node.get("type", ""))
    return NodeRow(
        id=str(node.get("id", "")),
        kind=KINDS.get(kind, "output" if kind == "logit" else kind),
        layer=str(node.get("hook") or node.get("layer", "")),
        position=node.get("position") if isinstance(node.get("position"), int) else None,
        token=str(node.get("token") or ""),
        label=f"feature {node['feature']}" if node.get("feature") is not None else "",
        activation=figures.number(node.get("activation")),
        weight=figures.number(node.get("attribution")),
    )


def _importance(node: dict, schema: str) -> float:
    if schema == "circuit-tracer":
        # circuit-tracer's influence is the cumulative share at which the node is kept: the
        # smaller, the more influential.
        influence = node.get("influence")
        return -float(influence) if isinstance(influence, int | float) else -2.0
    value = node.get("attribution")
    return abs(float(value)) if isinstance(value, int | float) else 0.0


def summary(data: dict, limit: int = 25) -> dict:
    """The graph for a page without script: counts and the most important feature nodes."""
    schema = schema_of(data)
    nodes = [n for n in data.get("nodes") or [] if isinstance(n, dict)]
    links = data.get("links") if schema == "circuit-tracer" else data.get("edges")
    tokens = _prompt_tokens(data)
    ranked = sorted(
        (n for n in nodes if KINDS.get(str(n.get("feature_type") or n.get("type"))) == "feature"),
        key=lambda n: _importance(n, schema),
        reverse=True,
    )
    rows = [_ct_row(n, tokens) if schema == "circuit-tracer" else _v1_row(n) for n in ranked]
    found = data.get("ablations")
    ablations: dict = found if isinstance(found, dict) else {}
    return {
        "schema": schema,
        "ablations": [a for a in ablations.get("checks") or [] if isinstance(a, dict)],
        "ablation_words": str(ablations.get("what") or ""),
        "n_nodes": len(nodes),
        "n_links": len(links or []),
        "tokens": tokens,
        "prompt": _prompt(data),
        "top": rows[:limit],
        "weight_name": "influence (cumulative; smaller is more influential)"
        if schema == "circuit-tracer"
        else "attribution (estimate)",
    }


def _prompt_tokens(data: dict) -> list[str]:
    metadata = data.get("metadata") or {}
    if isinstance(metadata.get("prompt_tokens"), list):
        return [str(t) for t in metadata["prompt_tokens"]]
    prompt = data.get("prompt") or {}
    return [str(t.get("text", "")) for t in prompt.get("tokens") or [] if isinstance(t, dict)]


def _prompt(data: dict) -> str:
    metadata = data.get("metadata") or {}
    if metadata.get("prompt"):
        return str(metadata["prompt"])
    prompt = data.get("prompt") or {}
    return str(prompt.get("text", "")) if isinstance(prompt, dict) else ""


# --- what the viewer shows on hover ---------------------------------------------------------


def _lines_as_json(lines: list[evidence.HeatLine]) -> list[dict]:
    return [
        {
            "tokens": [t.text for t in line.tokens],
            "acts": [t.activation for t in line.tokens],
            "note": line.note,
        }
        for line in lines
    ]


def feature_info(run: CheckRun, graph: dict, files: dict | None) -> dict:
    """{key: {label, contexts, top_logits}} for the viewer's hover card. Keys: the node's
    circuit-tracer feature index ("ct:<index>"), or "<hook>:<feature>" for Assay's first
    graphs (looked up in the catalog of the release's model version by lens hook)."""
    info: dict[str, dict] = {}
    for name, data in ((files or {}).get("files") or {}).items():
        if not isinstance(data, dict):
            continue
        index = data.get("index", str(name).split(".")[0])
        info[f"ct:{index}"] = {
            "label": "",
            "contexts": _lines_as_json(evidence.feature_file_lines(data, limit=3)),
            "top_logits": [str(t) for t in (data.get("top_logits") or [])[:8]],
            "frequency": data.get("activation_frequency"),
        }
    if schema_of(graph) != "circuit-tracer":
        info.update(_catalog_info(run, graph))
    return info


def _catalog_info(run: CheckRun, graph: dict) -> dict:
    hooks = {
        str(lens.get("hook")): str(lens.get("name"))
        for lens in graph.get("lenses") or []
        if isinstance(lens, dict)
    }
    if not hooks:
        return {}
    features = CatalogFeature.objects.filter(
        lens__model_version_id=run.release.model_version_id, lens__name__in=hooks.values()
    ).select_related("lens")
    by_lens = {(f.lens.name, f.index): f for f in features}
    info = {}
    for node in graph.get("nodes") or []:
        if not isinstance(node, dict) or node.get("type") != "feature":
            continue
        feature = node.get("feature")
        if not isinstance(feature, int):
            continue
        found = by_lens.get((hooks.get(str(node.get("hook")), ""), feature))
        if found is not None:
            contexts = (found.evidence or {}).get("contexts") or []
            info[f"{node.get('hook')}:{node.get('feature')}"] = {
                "label": f"{found.label} ({found.risk_axis}, {found.status})",
                "contexts": _lines_as_json(evidence.contexts_lines(contexts)),
                "top_logits": [],
            }
    return info
