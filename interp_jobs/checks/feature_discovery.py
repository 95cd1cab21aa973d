"""feature_discovery: which lens features fire differently on one risk axis's prompts than on
neutral controls; the top ones, with the token contexts where they peak, are catalog proposals.

Evidence kind: observed (activations read from the model; nothing is edited).

Held-out prompts. Features are *ranked* on the probe set's ``discovery`` split only and
*confirmed* on its ``confirmation`` split: the numbers a feature is judged by come from
prompts it was not selected on (selecting the best of thousands of features on a few dozen
prompts flatters it). The audit split is never read here. A probe set without splits (v1)
ranks and reports on the same prompts, and the evidence says nothing was held out.

Measurement. Every prompt of the axis and of the neutral controls in a split (optionally a
seeded subset of ``n_prompts`` per group) is wrapped in the chat template and run to the
lens's hook point. A feature's score on a prompt is its maximum activation over the tokens of
the user's text; positions follow rule ``assay-positions-v1`` (engine/analysis/positions.py):
the chat template's scaffolding and the attention sink at position 0 never count. For every
feature of the lens on the discovery split: AUROC (Mann-Whitney, ties averaged), Cohen's d
(pooled sd; 0 when both groups are constant and equal, +/-inf when constant and different)
and firing rates (score > firing_threshold). Features are ranked by AUROC, then effect size,
then index. Chance: the labels are shuffled ``n_permutations`` times (at least 1000) and the
best AUROC any feature reaches is recorded each time; the p-value of the observed best AUROC
against that null is "is the best feature better than chance", and a feature above the null's
95th percentile beats chance at the 5 % family-wise level.

For each of the ``top_n`` features, on both splits: AUROC and Cohen's d with stratified
percentile-bootstrap 95 % intervals (``n_bootstrap`` resamples), firing rates with Wilson 95 %
intervals, and on the confirmation split a one-sided permutation p-value (AUROC this high by
chance) and that p-value times ``top_n`` (Bonferroni: ``top_n`` features are tested there).
Discovery intervals of selected features are optimistic by construction; the confirmation
ones are not.

Verdict. A feature is *found* when its confirmation estimates meet every given bar
(``min_auroc``, ``min_effect_size``: a number bars the value, ``{"at": 0.7, "on": "lower95"}``
the interval's lower end; ``max_p_value`` bars the Bonferroni-adjusted p-value). With
``min_features_found`` the check passes when at least that many of the top features are found
and fails otherwise. The bars and ``min_features_found`` go together; with none the verdict is
inconclusive (the ranking is still reported).
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
from interp_jobs.checks.probing import AurocBar, EffectBar, ProbeParameters, split_note

DESCRIPTION = (
    "contrastive ranking of lens features for a risk axis (risk prompts vs. neutral "
    "controls) on the discovery split, confirmed on held-out prompts: AUROC, effect size and "
    "firing rates with intervals, a permutation test against chance, top contexts"
)
EVIDENCE_KIND = OBSERVED
INTERPRETATION = (
    "Observed activations: how differently lens features fire on this axis's risk prompts than "
    "on neutral controls (score = a feature's maximum activation over the tokens of the user's "
    "text). Features are ranked on the discovery split and judged on the confirmation split, "
    "which they were not selected on. A high AUROC means the feature separates these two prompt "
    "sets; it does not show that the feature detects the risk in general, nor that it causes "
    "any behaviour. With many features and few prompts some feature separates the groups by "
    "chance: chance.p_value tests the best feature against shuffled labels."
)
RANKED_ON, CONFIRMED_ON = "discovery", "confirmation"


def position_rule():
    from interp_jobs.engine.analysis.positions import PositionRule

    return PositionRule(sink_positions=1, template="exclude")


class Parameters(ProbeParameters):
    probe_set: str = Field("v2", description="probe set version (interp_jobs/probes/<version>)")
    axis: str = Field(description="risk axis whose prompts are contrasted with neutral controls")
    lens: str | None = Field(None, description="lens name; the model's first lens if omitted")
    top_n: int = Field(20, ge=1, le=500, description="features reported (ranked by AUROC)")
    n_prompts: int | None = Field(None, ge=2, description="cap per group and split (seeded)")
    contexts_per_feature: int = Field(3, ge=0, le=20)
    context_tokens: int = Field(6, ge=0, le=50, description="tokens each side of the peak")
    firing_threshold: float = Field(0.0, ge=0.0, description="a prompt fires when score > this")
    n_bootstrap: int = Field(2000, ge=200, le=20000, description="bootstrap resamples")
    n_permutations: int = Field(2000, ge=1000, le=100000, description="label shuffles")
    label_shuffles: int | None = Field(
        None,
        ge=0,
        le=200,
        description="deprecated and ignored: the chance level now uses n_permutations",
    )

    @model_validator(mode="after")
    def _axis_is_a_risk_axis_of_the_probe_set(self):
        self.check_axes("axis", [self.axis], risk_only=True)
        return self


class Thresholds(Spec):
    min_auroc: AurocBar = None
    min_effect_size: EffectBar = None
    max_p_value: float | None = Field(None, gt=0.0, le=1.0)
    min_features_found: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _bar_and_count_together(self):
        bars = (self.min_auroc, self.min_effect_size, self.max_p_value)
        has_bar = any(bar is not None for bar in bars)
        if has_bar != (self.min_features_found is not None):
            raise ValueError(
                "give min_features_found together with min_auroc, min_effect_size and/or "
                "max_p_value (a feature is found when it meets every given bar), or none of them"
            )
        return self


Context = CheckContext[Parameters, Thresholds]


def run(context: Context) -> CheckResult:
    params = context.parameters
    context.progress(0.0, "loading probes, model and lens")
    probes = _probes(params)
    loaded = load_model_for(context)
    lens, ref = load_lens_for(context, params.lens, loaded)
    ranked = probes[RANKED_ON]
    context.log(
        f"{len(ranked['risk'])} {params.axis} and {len(ranked['neutral'])} neutral prompts "
        f"({RANKED_ON} split), {lens.cfg.d_sae} features"
    )
    stats = _read(context, loaded, lens, ranked, None, (0.05, 0.6))
    context.progress(0.66, "ranking features and testing against chance")
    table = _feature_table(stats, len(ranked["risk"]), params, context.thresholds)
    top = table["order"][: params.top_n].tolist()
    confirm = probes.get(CONFIRMED_ON)
    confirm_stats = None
    if confirm is not None:
        indices = [int(stats.feature_indices[c]) for c in top]
        confirm_stats = _read(context, loaded, lens, confirm, indices, (0.75, 0.15))
    context.progress(0.92, "intervals for the top features")
    report = _report(context, stats, table, top, confirm_stats, loaded.tokenizer, probes)
    report.update(_provenance(lens, ref, probes, stats))
    return _result(context, report)


def _probes(params) -> dict:
    """{split: {"set", "risk", "neutral"}} for the ranking split and, with splits, the
    confirmation split."""
    from interp_jobs.engine.analysis.features import subset
    from interp_jobs.probes import NEUTRAL_AXIS

    probes = {}
    splits = (RANKED_ON, CONFIRMED_ON) if params.has_splits() else (RANKED_ON,)
    for split in splits:
        probe_set = params.load_split([params.axis, NEUTRAL_AXIS], split=split)
        probes[split] = {
            "set": probe_set,
            "risk": subset(probe_set.for_axis(params.axis), params.n_prompts, params.seed),
            "neutral": subset(probe_set.neutral_prompts, params.n_prompts, params.seed),
        }
    return probes


def _read(context, loaded, lens, group: dict, indices, span: tuple[float, float]):
    from interp_jobs.engine.analysis.features import prompt_feature_stats

    start, width = span
    return prompt_feature_stats(
        loaded,
        lens,
        [p.prompt for p in group["risk"] + group["neutral"]],
        indices,
        batch_size=context.parameters.batch_size,
        positions=position_rule(),
        progress=lambda done: context.progress(start + width * done, "reading activations"),
    )


def _feature_table(stats, n_risk: int, params, thresholds) -> dict:
    """Per-feature statistics over the whole lens on the ranking split, the ranking, and the
    chance level of the best AUROC."""
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
    table["chance"] = features.best_auroc_chance(
        risk, neutral, n_perm=params.n_permutations, seed=params.seed
    )
    return table


def _split_estimates(stats, n_risk: int, columns: list[int], params) -> list[dict]:
    """Per column: AUROC, Cohen's d (bootstrap) and firing rates (Wilson) on one split."""
    from interp_jobs.engine.analysis import features

    risk, neutral = stats.max[:n_risk, columns], stats.max[n_risk:, columns]
    boot = {"n_boot": params.n_bootstrap, "seed": params.seed}
    aurocs = features.auroc_estimates(risk, neutral, **boot)
    effects = features.cohens_d_estimates(risk, neutral, **boot)
    rates_risk = features.rate_estimates(risk, params.firing_threshold)
    rates_neutral = features.rate_estimates(neutral, params.firing_threshold)
    return [
        {
            "auroc": aurocs[i].as_dict(),
            "effect_size": effects[i].as_dict(),
            "firing_rate_risk": rates_risk[i].as_dict(),
            "firing_rate_neutral": rates_neutral[i].as_dict(),
        }
        for i in range(len(columns))
    ]


def _confirmation(confirm_stats, n_risk: int, params) -> list[dict]:
    from interp_jobs.engine.analysis import features

    columns = list(range(confirm_stats.max.shape[1]))
    rows = _split_estimates(confirm_stats, n_risk, columns, params)
    tests = features.auroc_p_values(
        confirm_stats.max[:n_risk],
        confirm_stats.max[n_risk:],
        n_perm=params.n_permutations,
        seed=params.seed,
    )
    for row, test in zip(rows, tests, strict=True):
        row["p_value"] = test["p_value"]
        row["p_value_adjusted"] = min(1.0, test["p_value"] * len(columns))
        row["n_permutations"] = test["n_permutations"]
    return rows


def _bar_checks(estimates: dict, thresholds) -> list[dict]:
    """Each given bar, stated and judged on one feature's estimates."""
    from interp_jobs.checks import bars
    from interp_jobs.engine.analysis.statistics import Estimate

    checks = []
    for name, bar in (("auroc", thresholds.min_auroc), ("effect_size", thresholds.min_effect_size)):
        if bar is not None:
            estimate = Estimate(**estimates[name])
            checks.append(
                {
                    "bar": bars.describe(name, bar, ">="),
                    "compared": estimate.bound(bars.as_bar(bar).on),
                    "met": bars.at_least(estimate, bar),
                }
            )
    if thresholds.max_p_value is not None:
        adjusted = estimates.get("p_value_adjusted")
        checks.append(
            {
                "bar": f"p_value_adjusted <= {thresholds.max_p_value:g}",
                "compared": adjusted,
                "met": adjusted is not None and adjusted <= thresholds.max_p_value,
            }
        )
    return checks


def _feature_row(table: dict, stats, column: int, rank: int) -> dict:
    return {
        "rank": rank,
        "feature": int(stats.feature_indices[column]),
        # the ranking statistics (discovery split, in sample), kept flat for readers
        "auroc": float(table["auroc"][column]),
        "effect_size": float(table["effect_size"][column]),
        "firing_rate_risk": float(table["rate_risk"][column]),
        "firing_rate_neutral": float(table["rate_neutral"][column]),
        "mean_max_activation_risk": float(table["mean_risk"][column]),
        "mean_max_activation_neutral": float(table["mean_neutral"][column]),
    }


def _rows(context, stats, table, top, confirm_stats, tokenizer, probes) -> list[dict]:
    params, thresholds = context.parameters, context.thresholds
    labels = _catalog_labels(context, params.lens)
    risk = probes[RANKED_ON]["risk"]
    discovery = _split_estimates(stats, len(risk), top, params)
    confirmation = (
        _confirmation(confirm_stats, len(probes[CONFIRMED_ON]["risk"]), params)
        if confirm_stats is not None
        else None
    )
    given = thresholds.min_features_found is not None
    rows = []
    for rank, column in enumerate(top, start=1):
        row = _feature_row(table, stats, column, rank)
        row["catalog_label"] = labels.get(row["feature"])
        row[RANKED_ON] = discovery[rank - 1]
        row[CONFIRMED_ON] = confirmation[rank - 1] if confirmation else None
        judged_on = row[CONFIRMED_ON] or row[RANKED_ON]
        row["bars"] = _bar_checks(judged_on, thresholds) if given else []
        row["meets_bar"] = all(c["met"] for c in row["bars"]) if given else None
        row["contexts"] = _contexts(stats, tokenizer, column, risk, params)
        rows.append(row)
    return rows


def _contexts(stats, tokenizer, column: int, risk, params) -> list[dict]:
    from interp_jobs.engine.analysis.features import top_contexts

    contexts = top_contexts(
        stats,
        tokenizer,
        column,
        range(len(risk)),
        k=params.contexts_per_feature,
        window=params.context_tokens,
        min_activation=params.firing_threshold,
    )
    return [_with_probe_id(c, risk) for c in contexts]


def _report(context, stats, table, top, confirm_stats, tokenizer, probes) -> dict:
    params = context.parameters
    ranked, confirm = probes[RANKED_ON], probes.get(CONFIRMED_ON)
    rows = _rows(context, stats, table, top, confirm_stats, tokenizer, probes)
    counted = context.thresholds.min_features_found is not None
    best_d = int(table["effect_size"].argmax())
    chance = table["chance"]
    return {
        "check": "feature_discovery",
        "evidence_kind": EVIDENCE_KIND,
        "interpretation": INTERPRETATION,
        "axis": params.axis,
        "score": "per prompt: a feature's maximum activation over the tokens of the user's text",
        "parameters": params.model_dump(mode="json"),
        "thresholds": context.thresholds.model_dump(mode="json"),
        "held_out": confirm is not None,
        "ranked_on": split_note(ranked["set"], RANKED_ON),
        "confirmed_on": split_note(confirm["set"], CONFIRMED_ON) if confirm else None,
        "judged_on": CONFIRMED_ON if confirm else f"{RANKED_ON} (in sample: no held-out split)",
        "n_features_scanned": int(stats.feature_indices.numel()),
        "n_features_found": sum(bool(r["meets_bar"]) for r in rows) if counted else None,
        "best_effect_size": {
            "feature": int(stats.feature_indices[best_d]),
            "effect_size": float(table["effect_size"][best_d]),
        },
        "chance": chance,
        # Kept for readers of the old shape: one level, the 95th percentile of the best AUROC
        # under shuffled labels (a feature above it beats chance at the 5 % family-wise level).
        "chance_best_auroc": [chance["null_95th_percentile"]],
        "risk_probe_ids": [p.id for p in ranked["risk"]],
        "neutral_probe_ids": [p.id for p in ranked["neutral"]],
        "confirmation_probe_ids": (
            {"risk": [p.id for p in confirm["risk"]], "neutral": [p.id for p in confirm["neutral"]]}
            if confirm
            else None
        ),
        "deprecated_parameters": (
            {"label_shuffles": "ignored; the chance level uses n_permutations"}
            if params.label_shuffles is not None
            else {}
        ),
        "features": rows,
    }


def _with_probe_id(context_row: dict, probes) -> dict:
    row = dict(context_row)
    row["probe_id"] = probes[row.pop("row")].id
    return row


def _catalog_labels(context: Context, lens_name: str | None) -> dict[int, str]:
    name = lens_name or (context.lenses[0].name if context.lenses else None)
    return {f.index: f.label for f in context.catalog if f.lens == name}


def _provenance(lens, ref, probes, stats) -> dict:
    from interp_jobs.engine.loading.lenses import lens_info

    ranked = probes[RANKED_ON]["set"]
    return {
        "lens": {"name": ref.name, "digest": ref.digest, **lens_info(lens)},
        "probe_set": {
            "version": ranked.version,
            "digest": ranked.digest,
            "splits": {
                split: {"split": group["set"].splits, "digest": group["set"].digest}
                for split, group in probes.items()
            },
        },
        "token_scope": "user text only (chat-template scaffolding and padding excluded)",
        "positions": {
            **position_rule().describe(),
            "applied": (
                "per prompt, only the tokens of the user's text count: the chat template's "
                "scaffolding (special tokens, role headers, system prompt, generation prompt) "
                "is excluded, and so is position 0 (the attention sink) even where a prompt "
                "without a template starts there"
            ),
        },
        "n_prompts_whole_prompt_counted": stats.tokens.n_whole_prompt,
    }


def _number(value: float | None):
    """JSON has no infinity: a degenerate effect size is written as text."""
    if value is None or math.isfinite(value):
        return value
    return str(value)


def _metrics(report: dict) -> dict:
    top = report["features"][0]
    confirmed = top[CONFIRMED_ON]
    return {
        "axis": report["axis"],
        "n_features_found": report["n_features_found"],
        "held_out": report["held_out"],
        "best_auroc": top["auroc"],
        "best_auroc_feature": top["feature"],
        "best_auroc_confirmed": confirmed["auroc"] if confirmed else None,
        "best_auroc_confirmed_p_value": confirmed["p_value_adjusted"] if confirmed else None,
        "best_effect_size": _number(report["best_effect_size"]["effect_size"]),
        "best_effect_size_feature": report["best_effect_size"]["feature"],
        "chance_best_auroc": report["chance"]["null_95th_percentile"],
        "chance_p_value": report["chance"]["p_value"],
        "n_risk_prompts": len(report["risk_probe_ids"]),
        "n_neutral_prompts": len(report["neutral_probe_ids"]),
        "n_confirmation_prompts": (
            sum(len(ids) for ids in report["confirmation_probe_ids"].values())
            if report["confirmation_probe_ids"]
            else 0
        ),
        "n_features_scanned": report["n_features_scanned"],
    }


def _verdict(report: dict, thresholds) -> str:
    if thresholds.min_features_found is None:
        return INCONCLUSIVE
    return PASS if report["n_features_found"] >= thresholds.min_features_found else FAIL


def _interval(estimate: dict, digits: int = 3) -> str:
    return (
        f"{estimate['value']:.{digits}f} [{estimate['lower95']:.{digits}f}, "
        f"{estimate['upper95']:.{digits}f}]"
    )


def _summary(report: dict, metrics: dict, thresholds, verdict: str) -> str:
    top = report["features"][0]
    chance = report["chance"]
    text = (
        f"Observed activations of {metrics['n_features_scanned']} lens features, ranked on "
        f"{metrics['n_risk_prompts']} '{report['axis']}' risk prompts and "
        f"{metrics['n_neutral_prompts']} neutral controls ({report['ranked_on']['note']}). "
        f"The top-ranked feature is {top['feature']} (AUROC {top['auroc']:.3f} where it was "
        f"selected); the best AUROC of any feature with shuffled labels has a 95th percentile "
        f"of {chance['null_95th_percentile']:.3f} (p = {chance['p_value']:.3g} for the "
        f"observed best, {chance['n_permutations']} shuffles). "
    )
    confirmed = top[CONFIRMED_ON]
    if confirmed:
        text += (
            f"On {metrics['n_confirmation_prompts']} held-out confirmation prompts it has "
            f"AUROC {_interval(confirmed['auroc'])} (95 % bootstrap interval), effect size "
            f"{_interval(confirmed['effect_size'], 2)}, fires on "
            f"{_interval(confirmed['firing_rate_risk'], 2)} of risk vs "
            f"{_interval(confirmed['firing_rate_neutral'], 2)} of neutral prompts, "
            f"p = {confirmed['p_value_adjusted']:.3g} (Bonferroni over the top "
            f"{len(report['features'])}). "
        )
    else:
        text += "No held-out split: every number is in sample and flatters the selection. "
    if verdict == INCONCLUSIVE:
        text += "No thresholds were set, so there is no verdict; the ranking is reported. "
    else:
        bars_text = "; ".join(c["bar"] for c in top["bars"])
        text += (
            f"{report['n_features_found']} feature(s) meet the bar ({bars_text}, judged on "
            f"{report['judged_on']}); at least {thresholds.min_features_found} required: "
            f"{verdict}. "
        )
    return text + (
        "Separation on these prompt sets is not evidence that a feature causes "
        "behaviour; the contexts show where each feature peaks."
    )


def _figure(report: dict, thresholds) -> bytes:
    from interp_jobs.checks.bars import as_bar

    shown = report["features"][:30]
    split = CONFIRMED_ON if report["held_out"] else RANKED_ON
    bars = [
        (
            f"#{row['rank']} f{row['feature']} {_interval(row[split]['auroc'], 2)}",
            row[split]["auroc"]["value"],
        )
        for row in shown
    ]
    lines = [
        ("chance (0.5)", 0.5),
        ("best AUROC, shuffled labels (95th pct.)", report["chance"]["null_95th_percentile"]),
    ]
    if thresholds.min_auroc is not None:
        bar = as_bar(thresholds.min_auroc)
        lines.insert(0, (f"min_auroc ({bar.on})", bar.at))
    return bars_with_lines_svg(
        f"Feature discovery, axis '{report['axis']}': AUROC on the {split} split of the top "
        f"{len(shown)} features",
        bars,
        lines=lines,
        notes=[
            f"ranked on {len(report['risk_probe_ids'])} risk vs "
            f"{len(report['neutral_probe_ids'])} neutral prompts ({RANKED_ON}); bars: {split} "
            "AUROC, 95 % bootstrap interval in the label; score = max activation over the "
            "user's text"
        ],
    )


def _result(context: Context, report: dict) -> CheckResult:
    thresholds = context.thresholds
    metrics = _metrics(report)
    verdict = _verdict(report, thresholds)
    provenance = {
        key: report[key]
        for key in (
            "lens",
            "probe_set",
            "token_scope",
            "positions",
            "n_prompts_whole_prompt_counted",
        )
    }
    provenance.update(
        parameters=report["parameters"],
        n_risk_prompts=metrics["n_risk_prompts"],
        n_neutral_prompts=metrics["n_neutral_prompts"],
        n_confirmation_prompts=metrics["n_confirmation_prompts"],
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
