"""circuit_trace: an attribution graph across every layer with the replacement model, validated
by interventions on a family of prompts.

Evidence kinds, labelled in each file: ``circuit.json`` and the graph are *attribution*
(linear direct effects in a local replacement model: estimates, not causal effects);
``validation.json`` is *intervention* (measured changes of the target logit when features are
set to zero in the model).

Method (Ameisen et al. 2025, circuit-tracer 0.5.0; see interp_jobs.engine.analysis.circuits):
per-layer transcoders (one registered lens per layer: MLP input -> MLP output) replace the
MLPs, attention patterns and norm scales are frozen on the prompt, an error node per (layer,
position) keeps the model's output exact, and ``attribute`` computes the graph, visiting at
most ``max_feature_nodes`` features in order of influence. ``prune_graph`` keeps the nodes and
edges carrying ``node_threshold`` / ``edge_threshold`` of the influence on the target logit;
``compute_graph_scores`` gives the replacement and completeness scores. The graph is exported
with circuit-tracer's ``create_graph_files`` (the schema its viewer and Neuronpedia's open),
with a feature file per feature node (top activating contexts on the transcoders' training
text) and a static SVG.

Positions (interp_jobs.engine.analysis.positions): circuit-tracer prepends a special token
unless the prompt starts with one, and zeroes features and error nodes at position 0 (the
attention sink); chat-template scaffolding stays in the graph (it takes part in the
computation) but is marked, and no validation intervention targets it.

Validation that can fail: on ``n_family_prompts`` prompts of a shipped family (default
"The capital of <country> is"), each with its own graph, the ``top_nodes`` features with the
largest predicted effect are zeroed with circuit-tracer's ``feature_intervention`` (attention
frozen, as the graph assumes) and without freezing; predicted and measured effects are compared
by Spearman rank correlation and sign agreement; random features of the same layers and
activation size are the negative control; and on two-hop prompts ("the capital of the country
where <landmark> is located is") the graph must route through a feature of the unnamed country
(reported found or not). Every statistic carries n and a 95 % interval (bootstrap over
prompts; Wilson for rates).

Thresholds (policy; a check never sets its own bar): ``min_replacement``,
``min_completeness`` (the traced graph's scores), ``min_rank_correlation``,
``min_sign_agreement``, ``max_control_ratio`` (mean |effect| of control features over that of
top features) and ``min_two_hop_found_rate``. With ``bound="interval"`` (default) a minimum is
compared with the lower end of the 95 % interval and a maximum with the upper end. Fail if any
threshold fails; inconclusive if none is set or one cannot be measured; else pass.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Literal

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

DESCRIPTION = (
    "attribution graph across every layer with per-layer transcoders and circuit-tracer's "
    "replacement model (frozen attention and norms, error nodes), pruned by influence, with "
    "replacement/completeness scores, exported in circuit-tracer's graph schema, and "
    "validated by interventions on a prompt family against a random-feature control"
)
EVIDENCE_KIND = ATTRIBUTION
SOFT_TIME_LIMIT = 3600  # SmolLM2 on 2 CPU cores: ~1 graph per prompt and ~10 interventions each
MAX_PROMPT_TOKENS = 64  # the edge matrix is dense in (rows x all nodes); keep prompts short
ROOT = Path(__file__).resolve().parents[2]


class Parameters(Spec):
    prompt: str = Field(min_length=1, max_length=2000)
    target: str = Field(min_length=1, description="a single token, e.g. ' Paris'")
    chat: bool = Field(False, description="wrap the prompt in the model's chat template")
    transcoders: tuple[str, ...] | None = Field(
        None, min_length=1, description="lens names, one per layer; default: every transcoder"
    )
    max_feature_nodes: int = Field(1024, ge=8, le=8192, description="features attributed")
    batch_size: int | None = Field(
        None, ge=1, le=512, description="rows per backward; default: from the node budget"
    )
    node_threshold: float = Field(0.8, gt=0, le=1)
    edge_threshold: float = Field(0.98, gt=0, le=1)
    family: str | None = Field("capitals-v1", description="validation prompt family; None: skip")
    n_family_prompts: int = Field(20, ge=2, le=200)
    family_feature_nodes: int = Field(128, ge=8, le=4096)
    top_nodes: int = Field(5, ge=1, le=50, description="features ablated per family prompt")
    control_activation_ratio: float = Field(2.0, gt=1)
    free_attention_ablations: bool = True
    two_hop_family: str | None = "two-hop-capitals-v1"
    n_bootstrap: int = Field(1000, ge=100, le=20000)
    seed: int = 0

    @model_validator(mode="after")
    def _two_hop_needs_family(self) -> Parameters:
        if self.two_hop_family is not None and self.family is None:
            raise ValueError("two_hop_family needs family (its entities' reference prompts)")
        return self


class Thresholds(Spec):
    min_replacement: float | None = Field(None, ge=0, le=1)
    min_completeness: float | None = Field(None, ge=0, le=1)
    min_rank_correlation: float | None = Field(None, ge=-1, le=1)
    min_sign_agreement: float | None = Field(None, ge=0, le=1)
    max_control_ratio: float | None = Field(None, gt=0)
    min_two_hop_found_rate: float | None = Field(None, ge=0, le=1)
    bound: Literal["interval", "estimate"] = "interval"


Context = CheckContext[Parameters, Thresholds]


def run(context: Context) -> CheckResult:
    from interp_jobs.engine.analysis import circuits

    params = context.parameters
    context.progress(0.0, "loading model and transcoders")
    loaded = inputs.load_model_for(context)
    refs, lenses = _transcoders(context, loaded)
    scan = _scan(refs)
    model = _replacement(context, loaded, refs, lenses, scan)
    prompt = _prompt(model, loaded, params)
    target_id = token_id(loaded.tokenizer, params.target, "target")
    logit_gap = circuits.check_same_model(model, loaded, prompt["tokens"])
    context.log(f"attributing {len(prompt['tokens'])} tokens -> {params.target!r} ({scan})")
    context.progress(0.05, "attributing the graph")
    traced = circuits.trace_graph(
        model,
        prompt["tokens"],
        target_id,
        max_feature_nodes=params.max_feature_nodes,
        batch_size=params.batch_size,
        node_threshold=params.node_threshold,
        edge_threshold=params.edge_threshold,
    )
    context.log(f"attribution took {traced.seconds:.1f} s; {traced.counts()}")
    context.progress(0.25, "writing the graph files")
    graph, features = _graph_files(loaded, lenses, refs, traced, params, scan)
    consistency = _consistency(model, traced)
    validation = _validation(context, model, loaded, lenses)
    verdict, reasons = judge(traced, validation, context.thresholds)
    document = _circuit_document(traced, prompt, params, logit_gap, consistency, scan)
    provenance = _provenance(context, refs, prompt, target_id, validation, logit_gap)
    context.progress(1.0, "done")
    return CheckResult(
        verdict=verdict,
        evidence_kind=EVIDENCE_KIND,
        metrics=_metrics(traced, validation, logit_gap),
        summary=_summary(traced, validation, params, verdict, reasons, prompt),
        artifacts=(
            ArtifactData("circuit.json", "application/json", evidence_json(document)),
            ArtifactData("attribution-graph.json", "application/json", graph),
            ArtifactData("graph-features.json", "application/json", evidence_json(features)),
            ArtifactData("graph.svg", "image/svg+xml", _figure(graph, traced, params)),
            ArtifactData(
                "validation.json",
                "application/json",
                evidence_json({**validation, "thresholds": reasons}),
            ),
        ),
        provenance=provenance,
    )


# --- inputs -----------------------------------------------------------------------------------


def _transcoders(context: Context, loaded) -> tuple[list, list]:
    """The registered per-layer transcoders (the named ones, or every lens that is one), one
    per layer, in layer order."""
    from interp_jobs.engine.loading.transcoders import (
        is_mlp_transcoder,
        order_layers,
        transcoder_layer,
    )

    names = context.parameters.transcoders
    if names is not None:
        unknown = sorted(set(names) - {ref.name for ref in context.lenses})
        if unknown:
            known = ", ".join(ref.name for ref in context.lenses)
            raise CheckParameterError(
                f"parameters.transcoders: no lens named {unknown}; known lenses: {known}"
            )
    chosen = []
    for ref in context.lenses:
        if names is not None and ref.name not in names:
            continue
        lens, _ = inputs.load_lens_for(context, ref.name, loaded)
        if names is None and not is_mlp_transcoder(lens):
            continue  # another kind of lens of the model (an SAE on the residual stream)
        chosen.append((transcoder_layer(lens), ref, lens))
    if not chosen:
        raise CheckParameterError(
            "circuit_trace needs per-layer transcoders registered for the model, one per layer "
            "(lenses reading blocks.N.ln2.hook_normalized and writing blocks.N.hook_mlp_out)."
        )
    chosen.sort(key=lambda item: item[0])
    ordered = order_layers([lens for _, _, lens in chosen], loaded.n_layers)
    return [ref for _, ref, _ in chosen], ordered


def _scan(refs) -> str:
    """circuit-tracer's name for the transcoders: the set's manifest scan, else from digests."""
    from interp_jobs.engine.loading.transcoders import read_set

    try:
        return read_set(Path(refs[0].path).parent, verify=False).scan
    except Exception:  # a set registered without its manifest: name it by its digests
        import hashlib

        joined = "".join(ref.digest or ref.path for ref in refs)
        return "assay-transcoders-" + hashlib.sha256(joined.encode()).hexdigest()[:16]


def work_dir() -> Path:
    """Where derived files (the HF export of a GGUF model) are cached: ASSAY_WORK_DIR, else
    <ASSAY_VAR_DIR>/work (the same default var directory as the settings)."""
    explicit = os.environ.get("ASSAY_WORK_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("ASSAY_VAR_DIR") or ROOT / "var") / "work"


def _replacement(context: Context, loaded, refs, lenses, scan: str):
    from interp_jobs.engine.analysis import circuits
    from interp_jobs.engine.loading import cache
    from interp_jobs.engine.loading.transcoders import attribution_dir

    ref = context.model
    hf_dir = attribution_dir(
        loaded, ref.path, ref.format, digest=inputs.model_cache_digest(ref), work_dir=work_dir()
    )
    key = ("replacement", str(hf_dir), scan, tuple(r.digest or r.path for r in refs))

    def load() -> _Replacement:
        replacement = circuits.replacement_model(hf_dir, lenses, scan=scan, device=context.device)
        return _Replacement(replacement, getattr(replacement, "_model", None))

    return cache.cached(key, load).replacement


class _Replacement:
    """A cache entry: circuit-tracer's model, and the torch module inside it (``model``), whose
    tensors the cache counts against its budget."""

    def __init__(self, replacement, model):
        self.replacement = replacement
        self.model = model


def _prompt(model, loaded, params: Parameters) -> dict[str, Any]:
    from interp_jobs.engine.analysis import circuits
    from interp_jobs.engine.analysis.positions import (
        PositionRule,
        plan_positions,
        template_positions,
    )

    ids = loaded.encode(params.prompt, chat=params.chat)["input_ids"][0].tolist()
    template: set[int] = set()
    if params.chat and loaded.has_chat_template:
        rendered = loaded.chat_prompt(params.prompt)
        template = template_positions(loaded.tokenizer, rendered, ids, [params.prompt])
    tokens = circuits.prompt_tokens(model, ids)
    shift = len(tokens) - len(ids)  # 1 when circuit-tracer prepended a special token
    if len(tokens) > MAX_PROMPT_TOKENS:
        raise CheckParameterError(
            f"parameters.prompt: {len(tokens)} tokens, more than the {MAX_PROMPT_TOKENS} a "
            "circuit trace accepts (the graph is dense in rows x nodes); shorten the prompt."
        )
    template = {p + shift for p in template}
    plan = plan_positions(len(tokens), PositionRule(template="mark"), template=template)
    return {"tokens": tokens, "ids": ids, "prepended": bool(shift), "plan": plan}


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


# --- the graph --------------------------------------------------------------------------------


def _graph_files(loaded, lenses, refs, traced, params: Parameters, scan: str):
    from interp_jobs.engine.analysis import graph_files
    from interp_jobs.engine.transcoder_training import context_rows

    graph = graph_files.graph_json(
        traced,
        slug="assay-circuit",
        node_threshold=params.node_threshold,
        edge_threshold=params.edge_threshold,
    )
    graph["metadata"]["scan"] = scan
    data = evidence_json(graph)
    graph_files.validate_graph(data)  # the stored bytes, rounded, still fit the schema
    rows = context_rows(loaded, Path(refs[0].path).parent)
    files = graph_files.feature_files(
        graph,
        scan=scan,
        lenses=lenses,
        layer_dirs=[ref.path for ref in refs],
        tokenizer=loaded.tokenizer,
        unembed=graph_files.unembedding(loaded),
        context_rows=rows,
    )
    bundle = {
        "layout": "features/<scan>/<name>: write each entry of 'files' there for the viewer",
        "scan": scan,
        "contexts": "top activating contexts on the training text"
        if rows is not None
        else "none: the transcoders' training rows could not be rebuilt",
        "files": files,
    }
    return data, bundle


def _consistency(model, traced) -> dict[str, Any]:
    """The library's own check on this graph: direct effects measured with everything frozen
    equal the graph's edges to the logit (up to float error)."""
    from interp_jobs.engine.analysis import circuits

    predicted = circuits.predicted_ablation(traced)
    top = predicted.abs().argsort(descending=True)[:3].tolist()
    rows = circuits.direct_effect_check(model, traced, top)
    worst = max(
        (abs(r["graph_direct_effect"] - r["measured_direct_effect"]) for r in rows), default=0.0
    )
    return {
        "evidence_kind": INTERVENTION,
        "what": "graph's direct edge to the logit vs the logit change with every MLP, norm and "
        "attention pattern frozen (circuit-tracer constrained_layers = all layers)",
        "rows": rows,
        "max_abs_difference": worst,
    }


# --- validation -------------------------------------------------------------------------------


def _validation(context: Context, model, loaded, lenses) -> dict[str, Any]:
    from interp_jobs.engine.analysis.circuit_validation import (
        ValidationSettings,
        entity_features,
        two_hop,
        validate_family,
    )
    from interp_jobs.engine.loading.prompt_families import load_family

    params = context.parameters
    if params.family is None:
        return {"evidence_kind": INTERVENTION, "skipped": "no prompt family was given"}
    settings = ValidationSettings(
        top_nodes=params.top_nodes,
        feature_nodes=params.family_feature_nodes,
        batch_size=params.batch_size,
        node_threshold=params.node_threshold,
        edge_threshold=params.edge_threshold,
        control_activation_ratio=params.control_activation_ratio,
        free_ablations=params.free_attention_ablations,
        n_bootstrap=params.n_bootstrap,
        seed=params.seed,
    )
    family = load_family(params.family)
    cases = [_case(model, loaded, p) for p in family.prompts[: params.n_family_prompts]]
    cases = [c for c in cases if c is not None]
    if len(cases) < 2:
        raise CheckParameterError(
            f"parameters.family: fewer than 2 prompts of {family.name} have a single-token "
            "target for this tokenizer; choose another family."
        )
    result = validate_family(
        model,
        loaded,
        lenses,
        cases,
        settings,
        progress=lambda f, stage: context.progress(0.3 + 0.5 * f, stage),
    )
    out = {
        "evidence_kind": INTERVENTION,
        "interpretation": VALIDATION_NOTE,
        "family": family.describe(),
        "settings": vars(settings),
        **result,
    }
    if params.two_hop_family:
        hop = load_family(params.two_hop_family)
        references = _references(model, loaded, family, {p.entity for p in hop.prompts})
        specific = entity_features(model, references)
        hop_cases = [c for c in (_case(model, loaded, p) for p in hop.prompts) if c is not None]
        out["two_hop"] = {
            "family": hop.describe(),
            "entity_features": {e: len(f) for e, f in specific.items()},
            **two_hop(
                model,
                hop_cases,
                specific,
                settings,
                progress=lambda f, stage: context.progress(0.8 + 0.15 * f, stage),
            ),
        }
    return out


VALIDATION_NOTE = (
    "Intervention results: 'measured' is the change of the target logit (minus the mean "
    "logit) when one feature is set to zero in the model with attention patterns frozen at "
    "their values on the prompt (circuit-tracer's feature_intervention; MLPs and norms "
    "compute); 'measured_free_attention' is the same with nothing frozen. 'predicted' is the "
    "graph's linear estimate (an attribution estimate). Controls are random active features "
    "of the same layer and similar activation."
)


def _case(model, loaded, prompt):
    from interp_jobs.engine.analysis import circuits
    from interp_jobs.engine.analysis.circuit_validation import PromptCase

    try:
        target = token_id(loaded.tokenizer, prompt.target, "target")
    except CheckParameterError:
        return None
    ids = loaded.encode(prompt.prompt)["input_ids"][0].tolist()
    tokens = circuits.prompt_tokens(model, ids)
    landmark = _span_positions(
        loaded.tokenizer, prompt.prompt, prompt.subject, len(tokens) - len(ids)
    )
    return PromptCase(
        id=prompt.id,
        tokens=tokens,
        target_id=target,
        entity=prompt.entity,
        landmark=tuple(landmark),
    )


def _span_positions(tokenizer, text: str, span: str, shift: int) -> list[int]:
    """Token positions covering ``span``'s last occurrence's words up to the end of the
    landmark ("the Eiffel Tower"), from the tokenizer's offsets."""
    if not span:
        return []
    start = text.find("where ")
    start = start + len("where ") if start >= 0 else max(0, text.rfind(span.strip()))
    end = text.find(" is located", start)
    end = end if end >= 0 else start + len(span)
    try:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]
    except (NotImplementedError, TypeError, ValueError, KeyError):
        return []
    return [i + shift for i, (a, b) in enumerate(offsets) if a < end and b > start]


def _references(model, loaded, family, entities: set[str]) -> dict[str, tuple]:
    """Per entity, its one-hop prompt's tokens and the position of its own token."""
    from interp_jobs.engine.analysis import circuits

    references = {}
    for prompt in family.prompts:
        if not prompt.subject:
            continue
        ids = loaded.encode(prompt.prompt)["input_ids"][0].tolist()
        tokens = circuits.prompt_tokens(model, ids)
        subject = loaded.tokenizer.encode(prompt.subject, add_special_tokens=False)
        if len(subject) != 1 or subject[0] not in tokens.tolist():
            continue
        references[prompt.subject] = (tokens, tokens.tolist().index(subject[0]))
    missing = entities - set(references)
    if missing:
        raise CheckParameterError(
            f"two_hop_family: entities {sorted(missing)} have no one-hop prompt in "
            f"{family.name} to find their features; use families that match."
        )
    return references


# --- verdict ----------------------------------------------------------------------------------


def judge(traced, validation: dict, thresholds: Thresholds) -> tuple[str, list[str]]:
    """Verdict from the policy's thresholds only; reasons say what was compared."""
    stats = validation.get("statistics", {})
    two_hop = validation.get("two_hop", {})

    def single(value: float) -> dict:  # one graph: no interval, the value is its own bound
        return {"value": value, "lower95": value, "upper95": value, "n": 1}

    rules = [
        ("min_replacement", single(traced.replacement), True, "replacement score (traced graph)"),
        ("min_completeness", single(traced.completeness), True, "completeness (traced graph)"),
        ("min_rank_correlation", stats.get("rank_correlation"), True, "rank correlation"),
        ("min_sign_agreement", stats.get("sign_agreement"), True, "sign agreement"),
        ("max_control_ratio", stats.get("control_to_top_ratio"), False, "control / top effect"),
        ("min_two_hop_found_rate", two_hop.get("found_rate"), True, "two-hop path found rate"),
    ]
    outcomes = [
        _outcome(estimate, getattr(thresholds, field), minimum, label, thresholds.bound)
        for field, estimate, minimum, label in rules
        if getattr(thresholds, field) is not None
    ]
    reasons = [reason for _, reason in outcomes]
    if not outcomes:
        return INCONCLUSIVE, ["no thresholds were set by the policy"]
    if any(ok is False for ok, _ in outcomes):
        return FAIL, reasons
    if any(ok is None for ok, _ in outcomes):
        return INCONCLUSIVE, reasons
    return PASS, reasons


def _outcome(estimate, bar: float, minimum: bool, label: str, bound: str):
    side = "value" if bound == "estimate" else ("lower95" if minimum else "upper95")
    value = None if not estimate else estimate.get(side)
    if value is None or not math.isfinite(value):
        return None, f"{label} could not be measured (threshold {bar})"
    where = (
        "" if side == "value" or estimate.get("n") == 1 else f" ({side} bound, n={estimate['n']})"
    )
    ok = value >= bar if minimum else value <= bar
    return ok, f"{label} {value:.3f}{where} vs {'minimum' if minimum else 'maximum'} {bar}"


# --- evidence ---------------------------------------------------------------------------------


def _circuit_document(traced, prompt, params: Parameters, logit_gap: float, consistency, scan):
    from interp_jobs.engine.analysis.circuits import attribution_batch, predicted_ablation

    tokenizer_tokens = traced.tokens
    predicted = predicted_ablation(traced).tolist()
    features = [
        {**f, "predicted_ablation_effect": predicted[f["node"]]}
        for f in traced.features()
        if f["kept"]
    ]
    return {
        "evidence_kind": ATTRIBUTION,
        "interpretation": (
            "Attribution estimates: every edge is a linear direct effect in the local "
            "replacement model (transcoders for the MLPs, attention patterns and norm scales "
            "frozen on this prompt, error nodes for what the transcoders miss); "
            "predicted_ablation_effect chains them. None of them is a measured causal effect; "
            "'consistency' and validation.json hold intervention results."
        ),
        "method": {
            "reference": "Ameisen et al. 2025, Circuit Tracing (transformer-circuits.pub)",
            "library": "circuit-tracer 0.5.0 (nnsight backend)",
            "scan": scan,
            "max_feature_nodes": params.max_feature_nodes,
            # the batch changes the graph a little (features are re-ranked every 4 batches)
            "batch_size": attribution_batch(params.max_feature_nodes, params.batch_size),
            "family_batch_size": attribution_batch(params.family_feature_nodes, params.batch_size),
            "node_threshold": params.node_threshold,
            "edge_threshold": params.edge_threshold,
        },
        "prompt": {
            "text": params.prompt,
            "chat": params.chat,
            "tokens": tokenizer_tokens,
            "special_token_prepended_by_circuit_tracer": prompt["prepended"],
        },
        "positions": {
            **prompt["plan"].describe(),
            "handling": "position 0: circuit-tracer zero_positions = slice(0, 1) (features and "
            "error node zeroed; its MLP output is a constant of the frozen context); template "
            "positions: kept as graph nodes, never targeted by validation interventions",
        },
        "target": {"text": params.target, "id": traced.target_id},
        "target_probability": traced.target_probability,
        "scores": {"replacement": traced.replacement, "completeness": traced.completeness},
        "counts": traced.counts(),
        "max_abs_logit_difference_vs_registered_model": logit_gap,
        "kept_features": features,
        "consistency": consistency,
    }


def _metrics(traced, validation: dict, logit_gap: float) -> dict[str, Any]:
    stats = validation.get("statistics", {})
    two_hop = validation.get("two_hop", {})

    def est(name: str, source: dict) -> dict | None:
        value = source.get(name)
        return None if value is None else {k: _num(v) for k, v in value.items() if k != "method"}

    return {
        "replacement": _num(traced.replacement),
        "completeness": _num(traced.completeness),
        "target_probability": _num(traced.target_probability),
        **{k: v for k, v in traced.counts().items()},
        "max_abs_logit_difference": _num(logit_gap),
        "family_prompts": stats.get("n_prompts"),
        "family_replacement": est("replacement", stats),
        "family_completeness": est("completeness", stats),
        "rank_correlation": est("rank_correlation", stats),
        "sign_agreement": est("sign_agreement", stats),
        "rank_correlation_free_attention": est("rank_correlation_free_attention", stats),
        "control_to_top_ratio": est("control_to_top_ratio", stats),
        "mean_abs_effect_top": est("mean_abs_effect_top", stats),
        "mean_abs_effect_control": est("mean_abs_effect_control", stats),
        "two_hop_found_rate": est("found_rate", two_hop),
    }


def _num(value):
    """Metrics are JSON: NaN becomes null, and 6 significant digits keep them reproducible."""
    if not isinstance(value, float):
        return value
    return float(f"{value:.6g}") if math.isfinite(value) else None


def _fmt(estimate: dict | None) -> str:
    if not estimate:
        return "n/a"
    return (
        f"{estimate['value']:.2f} [{estimate['lower95']:.2f}, {estimate['upper95']:.2f}], "
        f"n={estimate['n']}"
    )


def _summary(traced, validation, params: Parameters, verdict, reasons, prompt) -> str:
    counts = traced.counts()
    stats = validation.get("statistics", {})
    text = (
        f"Attributed the logit of {params.target!r} after a {len(traced.tokens)}-token prompt"
        f"{' (chat template applied)' if params.chat else ''} through transcoders at every "
        f"layer (circuit-tracer replacement model: attention and norms frozen, error nodes). "
        f"{counts['attributed_features']} of {counts['active_features']} active features were "
        f"attributed; pruning kept {counts['kept_features']} features and "
        f"{counts['kept_error_nodes']} error nodes. Replacement score "
        f"{traced.replacement:.2f}, completeness {traced.completeness:.2f} (attribution "
        f"estimates). Position 0 (the attention sink"
        f"{', a special token circuit-tracer prepended' if prompt['prepended'] else ''}) is "
        f"left out as circuit-tracer does. "
    )
    if stats:
        text += (
            f"Validation by interventions on {stats['n_prompts']} prompts of "
            f"{validation['family']['name']}: rank correlation of predicted and measured "
            f"ablation effects {_fmt(stats['rank_correlation'])}, sign agreement "
            f"{_fmt(stats['sign_agreement'])}; random same-layer features of similar "
            f"activation moved the logit {_fmt(stats['control_to_top_ratio'])} times as much "
            f"as the top features{_unmatched(stats)}. "
        )
    hop = validation.get("two_hop")
    if hop:
        text += (
            f"Two-hop control: an intermediate-entity feature path was found in "
            f"{_fmt(hop['found_rate'])} of the two-hop prompts. "
        )
    return text + f"Verdict {verdict}: {'; '.join(reasons)}."


def _unmatched(stats: dict) -> str:
    matched, n = stats["n_controls_matched_in_size"], stats["n_controls"]
    if matched == n:
        return ""
    return (
        f" ({n - matched} of the {n} controls are the nearest in activation size, as no "
        "other active feature of their layer was within the ratio)"
    )


def _figure(graph_bytes: bytes, traced, params: Parameters) -> bytes:
    import json

    title = (
        f"circuit_trace: {params.target!r}; replacement {traced.replacement:.2f}, "
        f"completeness {traced.completeness:.2f}"
    )
    return attribution_graph_svg(json.loads(graph_bytes), title)


# The figure lives here, not in figures.py: only this check draws an attribution graph.


def attribution_graph_svg(graph: dict, title: str) -> bytes:
    """A static drawing of a graph in circuit-tracer's schema (metadata, nodes, links): one row
    per layer (embeddings at the bottom, the logit on top), one column per token position.
    Features are circles sized by activation, error nodes grey squares sized by influence,
    tokens and the logit boxes; links are coloured by the sign of their weight."""
    layers = [int(n["layer"]) for n in graph["nodes"] if n["layer"] != "E"]
    top = max(layers, default=1)  # circuit-tracer puts the logit at n_layers + 1
    tokens = graph["metadata"]["prompt_tokens"]
    nodes = [_graph_node(n, top, tokens) for n in graph["nodes"]]
    edges = [(link["source"], link["target"], float(link["weight"])) for link in graph["links"]]
    kinds = {"cross layer transcoder": 0, "mlp reconstruction error": 0}
    for n in graph["nodes"]:
        if n["feature_type"] in kinds:
            kinds[n["feature_type"]] += 1
    caption = [
        "Attribution estimates (linear direct effects in the local replacement model), not "
        "causal effects; interventions are in validation.json.",
        f"{kinds['cross layer transcoder']} feature nodes (circles), "
        f"{kinds['mlp reconstruction error']} error nodes (grey squares), {len(edges)} links; "
        "blue positive, red negative.",
        "Position 0 holds the attention sink: circuit-tracer zeroes its features and error.",
    ]
    rows = ["embeddings", *(f"layer {i}" for i in range(top - 1)), "logit"]
    columns = [f"{i}: {t!r}" for i, t in enumerate(tokens)]
    from interp_jobs.checks.figures import layered_graph_svg

    return layered_graph_svg(title, rows, columns, nodes, edges, caption)


def _graph_node(node: dict, top: int, tokens: list[str]) -> dict:
    kind = node["feature_type"]
    row = 0 if node["layer"] == "E" else min(int(node["layer"]) + 1, top)
    influence = node.get("influence") or 0.0
    if kind == "embedding":
        position = int(node["ctx_idx"])
        shape, value = "box", 1.0
        label = tokens[position] if position < len(tokens) else f"tok {position}"
    elif kind == "logit":
        clerp = node.get("clerp", "")
        shape, value = "box", 0.0
        label = clerp.split('"')[1] if clerp.count('"') >= 2 else "logit"
    elif kind == "mlp reconstruction error":
        shape, value, label = "square", influence, ""
    else:
        shape, value, label = "circle", node.get("activation") or influence, ""
    return {
        "id": node["node_id"],
        "row": row,
        "column": int(node["ctx_idx"]),
        "value": value,
        "shape": shape,
        "label": label,
        "tip": f"{node['node_id']} ({kind}): influence {influence:.3g}",
    }


def _provenance(context: Context, refs, prompt, target_id, validation, logit_gap) -> dict:
    from importlib.metadata import version

    params = context.parameters
    return {
        "method": "Ameisen et al. 2025, Circuit Tracing; circuit-tracer replacement model",
        "versions": {
            pkg: version(pkg)
            for pkg in ("circuit-tracer", "nnsight", "torch", "transformers", "sae-lens")
        },
        "model": {
            "path": context.model.path,
            "format": context.model.format,
            "weights_digest": context.model.weights_digest,
        },
        "transcoders": [{"name": r.name, "digest": r.digest, "path": r.path} for r in refs],
        "prompt": params.prompt,
        "chat": params.chat,
        "tokens": prompt["tokens"].tolist(),
        "target_token_id": target_id,
        "families": {
            "family": validation.get("family"),
            "two_hop": validation.get("two_hop", {}).get("family"),
        },
        "parameters": params.model_dump(mode="json"),
        "positions": prompt["plan"].rule.describe()["rule"],
        "max_abs_logit_difference_vs_registered_model": logit_gap,
        "device": context.device,
        "dtype": "float32",
        "seed": params.seed,
    }


# --- a transcoder set's recorded figures (circuit_figures.json) ----------------------------------

FIGURES_FILE = "circuit_figures.json"
DEMO_PARAMETERS = {"prompt": "The capital of France is", "target": " Paris"}


def figures(metrics: dict) -> dict:
    """The headline numbers of a circuit_trace run, from its metrics: what ``record_figures``
    writes into a transcoder set's record. (The README's circuit figures come from the demo's
    findings instead; tests/integration/test_demo_circuit_findings.py reruns them.)"""

    def value(name: str):
        item = metrics.get(name)
        return item["value"] if isinstance(item, dict) else item

    return {
        "replacement": metrics["replacement"],
        "completeness": metrics["completeness"],
        "target_probability": metrics["target_probability"],
        "kept_features": metrics["kept_features"],
        "family_replacement": value("family_replacement"),
        "rank_correlation": value("rank_correlation"),
        "sign_agreement": value("sign_agreement"),
        "control_to_top_ratio": value("control_to_top_ratio"),
        "two_hop_found_rate": value("two_hop_found_rate"),
        "intervals": {
            name: metrics.get(name)
            for name in (
                "rank_correlation",
                "sign_agreement",
                "control_to_top_ratio",
                "two_hop_found_rate",
                "family_replacement",
            )
        },
    }


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def record_figures(model_path: str, set_dir: str, parameters: dict | None = None) -> dict:
    """Run circuit_trace on the demo model with the shipped transcoders and write the
    figures next to them (``python -m interp_jobs.checks.circuit_trace MODEL.gguf SET_DIR``)."""
    import json

    from interp_jobs.checks.base import LensRef, ModelRef
    from interp_jobs.engine.loading.transcoders import read_set

    info = read_set(set_dir)
    refs = tuple(
        LensRef(str(info.layer_dir(i)), "", f"transcoder-{i:02d}") for i in range(info.n_layers)
    )
    parameters = parameters or DEMO_PARAMETERS
    context: Context = CheckContext(
        model=ModelRef(model_path, "gguf", "", {}, Path(model_path).name),
        parameters=Parameters.model_validate(parameters),
        thresholds=Thresholds.model_validate({}),
        lenses=refs,
        log=print,
        progress=lambda fraction, stage: print(f"{fraction:4.0%} {stage}", flush=True),
    )
    started = time.perf_counter()
    result = run(context)
    body = {
        "wall_seconds": round(time.perf_counter() - started, 1),  # model load included
        "torch_threads": torch_threads(),
        "parameters": parameters,
        "figures": figures(result.metrics),
        "metrics": result.metrics,
        "summary": result.summary,
        "versions": result.provenance["versions"],
    }
    out = Path(set_dir) / FIGURES_FILE
    out.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return body


if __name__ == "__main__":
    import sys

    if len(sys.argv) not in (3, 4):
        sys.exit(
            "usage: python -m interp_jobs.checks.circuit_trace MODEL.gguf TRANSCODER_SET_DIR "
            "[PARAMETERS_JSON]  (default: DEMO_PARAMETERS)"
        )
    import json

    chosen = json.loads(sys.argv[3]) if len(sys.argv) == 4 else None
    print(record_figures(sys.argv[1], sys.argv[2], chosen)["summary"])
