"""feature_discovery: which lens features fire differently on one risk axis's prompts than on
neutral controls; the top ones, with the token contexts where they peak, are catalog proposals.

Evidence kind: observed (activations read from the model; nothing is edited).

Measurement. Every prompt of the axis and of the neutral controls (optionally a seeded subset of
``n_prompts`` per group) is wrapped in the chat template and run to the lens's hook point. A
feature's score on a prompt is its maximum activation over the tokens of the user's text
(scaffolding and padding never count; see interp_jobs.engine.analysis.features). For every feature
of the lens: AUROC (Mann-Whitney, ties averaged: the probability that a risk prompt scores higher
than a neutral one), Cohen's d of the scores (pooled sd; 0 when both groups are constant and
equal, +/-inf when constant and different), and the firing rates (score > firing_threshold) in
both groups. Features are ranked by AUROC, then effect size, then index. As a chance level the
prompts' labels are shuffled ``label_shuffles`` times (seeded) and the best AUROC any feature
reaches is recorded: with thousands of features and a few dozen prompts, some feature always
separates two groups a little.

Verdict. A feature is *found* when it meets every given per-feature bar (``min_auroc``,
``min_effect_size``). With ``min_features_found`` the check passes when at least that many
features are found (the lens can see the axis) and fails otherwise. The per-feature bars and
``min_features_found`` must be given together; with no thresholds the verdict is inconclusive
(the ranking is still reported).
"""

import math

from pydantic import Field, model_validator

from interp_jobs.checks.base import (
    FAIL,
    INCONCLUSIVE,
    OBSERVED,
    PASS,
    ArtifactData,
    CheckContext,
    CheckResult,
    Spec,
    evidence_json,
)
from interp_jobs.checks.figures import bars_with_lines_svg
from interp_jobs.checks.inputs import load_lens_for, load_model_for
from interp_jobs.checks.probing import ProbeParameters

DESCRIPTION = (
    "contrastive ranking of lens features for a risk axis (risk prompts vs. neutral "
    "controls): AUROC, effect size, firing rates, top-activating contexts"
)
EVIDENCE_KIND = OBSERVED
INTERPRETATION = (
    "Observed activations: how differently lens features fire on this axis's risk prompts than "
    "on neutral controls (score = a feature's maximum activation over the tokens of the user's "
    "text). A high AUROC means the feature separates these two prompt sets; it does not show "
    "that the feature detects the risk in general, nor that it causes any behaviour. With many "
    "features and few prompts some feature separates the groups by chance: compare with "
    "chance_best_auroc (labels shuffled)."
)


class Parameters(ProbeParameters):
    axis: str = Field(description="risk axis whose prompts are contrasted with neutral controls")
    lens: str | None = Field(None, description="lens name; the model's first lens if omitted")
    top_n: int = Field(20, ge=1, le=500, description="features reported (ranked by AUROC)")
    n_prompts: int | None = Field(None, ge=2, description="cap per group (seeded subset)")
    contexts_per_feature: int = Field(3, ge=0, le=20)
    context_tokens: int = Field(6, ge=0, le=50, description="tokens each side of the peak")
    firing_threshold: float = Field(0.0, ge=0.0, description="a prompt fires when score > this")
    label_shuffles: int = Field(10, ge=0, le=200, description="chance-level shuffles")

    @model_validator(mode="after")
    def _axis_is_a_risk_axis_of_the_probe_set(self):
        self.check_axes("axis", [self.axis], risk_only=True)
        return self


class Thresholds(Spec):
    min_auroc: float | None = Field(None, ge=0.5, le=1.0)
    min_effect_size: float | None = Field(None, ge=0.0)
    min_features_found: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _bar_and_count_together(self):
        has_bar = self.min_auroc is not None or self.min_effect_size is not None
        if has_bar != (self.min_features_found is not None):
            raise ValueError(
                "give min_features_found together with min_auroc and/or min_effect_size (a "
                "feature is found when it meets every given bar), or none of them"
            )
        return self


Context = CheckContext[Parameters, Thresholds]


def run(context: Context) -> CheckResult:
    from interp_jobs.engine.analysis import features

    params = context.parameters
    context.progress(0.0, "loading probes, model and lens")
    probe_set, risk, neutral = _probes(params)
    loaded = load_model_for(context)
    lens, ref = load_lens_for(context, params.lens, loaded)
    context.log(
        f"{len(risk)} {params.axis} and {len(neutral)} neutral prompts, {lens.cfg.d_sae} features"
    )
    stats = features.prompt_feature_stats(
        loaded,
        lens,
        [p.prompt for p in risk + neutral],
        batch_size=params.batch_size,
        progress=lambda done: context.progress(0.05 + 0.85 * done, "reading feature activations"),
    )
    context.progress(0.92, "ranking features")
    table = _feature_table(stats, len(risk), params, context.thresholds)
    report = _report(context, stats, table, loaded.tokenizer, risk, neutral)
    report.update(_provenance(lens, ref, probe_set, stats))
    return _result(context, report)


def _probes(params):
    from interp_jobs.engine.analysis.features import subset
    from interp_jobs.probes import load_probe_set

    probe_set = load_probe_set(params.probe_set)
    risk = subset(probe_set.for_axis(params.axis), params.n_prompts, params.seed)
    neutral = subset(probe_set.neutral_prompts, params.n_prompts, params.seed)
    return probe_set, risk, neutral


def _feature_table(stats, n_risk: int, params, thresholds) -> dict:
    """Per-feature statistics over the whole lens, the ranking, and who meets the bar."""
    import torch

    from interp_jobs.engine.analysis import features

    risk, neutral = stats.max[:n_risk], stats.max[n_risk:]
    table = {
        "auroc": features.auroc(risk, neutral),
        "effect_size": features.cohens_d(risk, neutral),
        "rate_risk": features.firing_rate(risk, params.firing_threshold),
        "rate_neutral": features.firing_rate(neutral, params.firing_threshold),
        "mean_risk": risk.double().mean(dim=0),
        "mean_neutral": neutral.double().mean(dim=0),
    }
    by_effect = torch.sort(-table["effect_size"], stable=True).indices
    table["order"] = by_effect[torch.sort(-table["auroc"][by_effect], stable=True).indices]
    table["found"] = _meets_bar(table, thresholds)
    table["chance"] = features.shuffled_best_auroc(
        risk, neutral, shuffles=params.label_shuffles, seed=params.seed
    )
    return table


def _meets_bar(table: dict, thresholds):
    if thresholds.min_features_found is None:
        return None
    found = table["auroc"] >= (thresholds.min_auroc if thresholds.min_auroc is not None else 0)
    if thresholds.min_effect_size is not None:
        found &= table["effect_size"] >= thresholds.min_effect_size
    return found


def _feature_row(table: dict, stats, column: int, rank: int) -> dict:
    found = table["found"]
    return {
        "rank": rank,
        "feature": int(stats.feature_indices[column]),
        "auroc": float(table["auroc"][column]),
        "effect_size": float(table["effect_size"][column]),
        "firing_rate_risk": float(table["rate_risk"][column]),
        "firing_rate_neutral": float(table["rate_neutral"][column]),
        "mean_max_activation_risk": float(table["mean_risk"][column]),
        "mean_max_activation_neutral": float(table["mean_neutral"][column]),
        "meets_bar": None if found is None else bool(found[column]),
    }


def _report(context, stats, table, tokenizer, risk, neutral) -> dict:
    from interp_jobs.engine.analysis.features import top_contexts

    params = context.parameters
    labels = _catalog_labels(context, params.lens)
    rows = []
    for rank, column in enumerate(table["order"][: params.top_n].tolist(), start=1):
        row = _feature_row(table, stats, column, rank)
        row["catalog_label"] = labels.get(row["feature"])
        contexts = top_contexts(
            stats,
            tokenizer,
            column,
            range(len(risk)),
            k=params.contexts_per_feature,
            window=params.context_tokens,
            min_activation=params.firing_threshold,
        )
        row["contexts"] = [_with_probe_id(c, risk) for c in contexts]
        rows.append(row)
    found = table["found"]
    best_d = int(table["effect_size"].argmax())
    return {
        "check": "feature_discovery",
        "evidence_kind": EVIDENCE_KIND,
        "interpretation": INTERPRETATION,
        "axis": params.axis,
        "score": "per prompt: a feature's maximum activation over the tokens of the user's text",
        "parameters": params.model_dump(mode="json"),
        "thresholds": context.thresholds.model_dump(mode="json"),
        "n_features_scanned": int(stats.feature_indices.numel()),
        "n_features_found": None if found is None else int(found.sum()),
        "best_effect_size": {
            "feature": int(stats.feature_indices[best_d]),
            "effect_size": float(table["effect_size"][best_d]),
        },
        "chance_best_auroc": table["chance"],
        "risk_probe_ids": [p.id for p in risk],
        "neutral_probe_ids": [p.id for p in neutral],
        "features": rows,
    }


def _with_probe_id(context_row: dict, probes) -> dict:
    row = dict(context_row)
    row["probe_id"] = probes[row.pop("row")].id
    return row


def _catalog_labels(context: Context, lens_name: str | None) -> dict[int, str]:
    name = lens_name or (context.lenses[0].name if context.lenses else None)
    return {f.index: f.label for f in context.catalog if f.lens == name}


def _provenance(lens, ref, probe_set, stats) -> dict:
    from interp_jobs.engine.loading.lenses import lens_info

    return {
        "lens": {"name": ref.name, "digest": ref.digest, **lens_info(lens)},
        "probe_set": {"version": probe_set.version, "digest": probe_set.digest},
        "token_scope": "user text only (chat-template scaffolding and padding excluded)",
        "n_prompts_whole_prompt_counted": stats.tokens.n_whole_prompt,
    }


def _number(value: float | None):
    """JSON has no infinity: a degenerate effect size is written as text."""
    if value is None or math.isfinite(value):
        return value
    return str(value)


def _metrics(report: dict) -> dict:
    top = report["features"][0]
    return {
        "axis": report["axis"],
        "n_features_found": report["n_features_found"],
        "best_auroc": top["auroc"],
        "best_auroc_feature": top["feature"],
        "best_effect_size": _number(report["best_effect_size"]["effect_size"]),
        "best_effect_size_feature": report["best_effect_size"]["feature"],
        "chance_best_auroc": max(report["chance_best_auroc"], default=None),
        "n_risk_prompts": len(report["risk_probe_ids"]),
        "n_neutral_prompts": len(report["neutral_probe_ids"]),
        "n_features_scanned": report["n_features_scanned"],
    }


def _verdict(report: dict, thresholds) -> str:
    if thresholds.min_features_found is None:
        return INCONCLUSIVE
    return PASS if report["n_features_found"] >= thresholds.min_features_found else FAIL


def _summary(report: dict, metrics: dict, thresholds, verdict: str) -> str:
    top = report["features"][0]
    chance = metrics["chance_best_auroc"]
    text = (
        f"Observed activations of {metrics['n_features_scanned']} lens features on "
        f"{metrics['n_risk_prompts']} '{report['axis']}' risk prompts and "
        f"{metrics['n_neutral_prompts']} neutral controls (score: maximum activation over the "
        f"user's text). The best-separating feature is {top['feature']} (AUROC "
        f"{top['auroc']:.3f}, effect size {top['effect_size']:.2f}, firing on "
        f"{top['firing_rate_risk']:.0%} of risk vs {top['firing_rate_neutral']:.0%} of neutral "
        "prompts)"
    )
    text += f"; with shuffled labels the best AUROC reached {chance:.3f}. " if chance else ". "
    if verdict == INCONCLUSIVE:
        text += "No thresholds were set, so there is no verdict; the ranking is reported. "
    else:
        text += (
            f"{report['n_features_found']} feature(s) meet the bar ({_bar(thresholds)}); "
            f"at least {thresholds.min_features_found} required: {verdict}. "
        )
    return text + (
        "Separation on these prompt sets is not evidence that a feature causes "
        "behaviour; the contexts show where each feature peaks."
    )


def _bar(thresholds) -> str:
    parts = []
    if thresholds.min_auroc is not None:
        parts.append(f"AUROC >= {thresholds.min_auroc}")
    if thresholds.min_effect_size is not None:
        parts.append(f"effect size >= {thresholds.min_effect_size}")
    return " and ".join(parts)


def _figure(report: dict, thresholds) -> bytes:
    shown = report["features"][:30]
    bars = [
        (f"#{row['rank']} f{row['feature']} (d={row['effect_size']:.2f})", row["auroc"])
        for row in shown
    ]
    lines = [("chance (0.5)", 0.5)]
    if report["chance_best_auroc"]:
        lines.append(("best AUROC, shuffled labels", max(report["chance_best_auroc"])))
    if thresholds.min_auroc is not None:
        lines.insert(0, ("min_auroc", thresholds.min_auroc))
    return bars_with_lines_svg(
        f"Feature discovery, axis '{report['axis']}': AUROC of the top {len(shown)} features",
        bars,
        lines=lines,
        notes=[
            f"{len(report['risk_probe_ids'])} risk vs {len(report['neutral_probe_ids'])} "
            "neutral prompts; score = max activation over the user's text"
        ],
    )


def _result(context: Context, report: dict) -> CheckResult:
    thresholds = context.thresholds
    metrics = _metrics(report)
    verdict = _verdict(report, thresholds)
    provenance = {
        key: report[key]
        for key in ("lens", "probe_set", "token_scope", "n_prompts_whole_prompt_counted")
    }
    provenance.update(
        parameters=report["parameters"],
        n_risk_prompts=metrics["n_risk_prompts"],
        n_neutral_prompts=metrics["n_neutral_prompts"],
    )
    context.progress(1.0, "done")
    return CheckResult(
        verdict=verdict,
        evidence_kind=EVIDENCE_KIND,
        metrics=metrics,
        summary=_summary(report, metrics, thresholds, verdict),
        artifacts=(
            ArtifactData("discovery.json", "application/json", evidence_json(report)),
            ArtifactData("discovery.svg", "image/svg+xml", _figure(report, thresholds)),
        ),
        provenance=provenance,
    )
