"""feature_activation_audit: how the catalog's named risk features fire on the probe sets.

Evidence kind: observed (activations read from the model; nothing is edited).

Measurement. The audited features are the catalog entries (optionally only those of one lens,
or labelled with some risk axes). Every prompt of every probe axis (by default all risk axes
and the neutral controls; optionally a seeded subset of ``n_prompts`` per axis) is wrapped in
the chat template and run only up to the lens's hook point; only the audited features' encoder
columns are computed where the lens architecture allows it. Per prompt and feature: the maximum
and the mean activation over the tokens of the user's text (scaffolding and padding never
count; see interp_jobs.engine.analysis.features). A prompt *fires* a feature when its maximum
exceeds ``firing_threshold``; the firing rate of a feature on an axis is the fraction of that axis's
prompts that fire it.

Thresholds (each optional; each applies to every audited feature):

- ``max_firing_rate_on_neutral``: firing rate on the neutral controls must be <= this (a risk
  monitor that fires on harmless prompts raises false alarms). Needs the neutral axis among
  ``probe_axes``; otherwise the parameters are refused.
- ``min_firing_rate_on_own_axis``: firing rate on the prompts of the feature's own risk axis
  must be >= this (the monitor must see what it is named for). A feature whose axis is not
  among the probe axes cannot be measured against it.

Verdict: fail if any audited feature breaks any given threshold; otherwise inconclusive if no
threshold is given, no feature is audited, or some feature could not be measured against a
threshold; otherwise pass.
"""

from pydantic import Field, model_validator

from interp_jobs.checks.base import (
    FAIL,
    INCONCLUSIVE,
    OBSERVED,
    PASS,
    ArtifactData,
    CheckContext,
    CheckParameterError,
    CheckResult,
    Spec,
    evidence_json,
)
from interp_jobs.checks.figures import heatmap_svg
from interp_jobs.checks.inputs import load_lens_for, load_model_for
from interp_jobs.checks.probing import ProbeParameters

DESCRIPTION = (
    "firing rate and per-prompt max/mean activation of the catalog's risk features "
    "on every probe axis, against false-alarm and detection thresholds"
)
EVIDENCE_KIND = OBSERVED
INTERPRETATION = (
    "Observed activations: how often and how strongly each catalogued feature fires on each "
    "probe set (a prompt fires a feature when the feature's maximum activation over the tokens "
    "of the user's text exceeds the firing threshold). Firing shows what the feature responds "
    "to on these prompts; it does not show that the feature causes any behaviour, and a label "
    "is only as good as the evidence behind the catalog entry."
)
NOT_MEASURED = "not measured"


class Parameters(ProbeParameters):
    lens: str | None = Field(None, description="audit only catalog features of this lens")
    feature_axes: tuple[str, ...] | None = Field(
        None, min_length=1, description="audit only catalog features labelled with these axes"
    )
    probe_axes: tuple[str, ...] | None = Field(
        None, min_length=1, description="probe axes to run (default: all, neutral included)"
    )
    n_prompts: int | None = Field(None, ge=1, description="cap per probe axis (seeded subset)")
    firing_threshold: float = Field(0.0, ge=0.0, description="a prompt fires when max > this")

    @model_validator(mode="after")
    def _probe_axes_exist(self):
        self.check_axes("probe_axes", self.probe_axes, risk_only=False)
        return self


class Thresholds(Spec):
    max_firing_rate_on_neutral: float | None = Field(None, ge=0.0, le=1.0)
    min_firing_rate_on_own_axis: float | None = Field(None, ge=0.0, le=1.0)


Context = CheckContext[Parameters, Thresholds]


def run(context: Context) -> CheckResult:
    params = context.parameters
    context.progress(0.0, "loading probes")
    entries = _audited_entries(context)
    probe_set, prompts = _probes(params)
    _check_threshold_axes(context.thresholds, prompts)
    rows, lenses = _measure(context, entries, prompts) if entries else ([], {})
    for row in rows:
        row["checks"] = _threshold_checks(row, context.thresholds)
    report = _report(context, rows, prompts, probe_set, lenses)
    context.progress(1.0, "done")
    return _result(context, report)


def _audited_entries(context: Context) -> list:
    params = context.parameters
    order = {ref.name: i for i, ref in enumerate(context.lenses)}
    entries = [
        f
        for f in context.catalog
        if (params.lens is None or f.lens == params.lens)
        and (params.feature_axes is None or f.risk_axis in params.feature_axes)
    ]
    return sorted(entries, key=lambda f: (order.get(f.lens, len(order)), f.lens, f.index, f.label))


def _probes(params) -> tuple:
    from interp_jobs.engine.analysis.features import subset
    from interp_jobs.probes import load_probe_set

    probe_set = load_probe_set(params.probe_set, params.probe_axes)
    prompts = {
        axis: subset(probe_set.for_axis(axis), params.n_prompts, params.seed)
        for axis in probe_set.axes
    }
    return probe_set, prompts


def _check_threshold_axes(thresholds, prompts: dict) -> None:
    from interp_jobs.probes import NEUTRAL_AXIS

    if thresholds.max_firing_rate_on_neutral is not None and NEUTRAL_AXIS not in prompts:
        raise CheckParameterError(
            "thresholds.max_firing_rate_on_neutral needs the neutral controls, but "
            "parameters.probe_axes leaves them out; add 'neutral' to probe_axes."
        )


def _lens_progress(context: Context, i: int, n: int, name: str):
    def report(done: float) -> None:
        context.progress(0.05 + 0.9 * (i + done) / n, f"reading features of lens {name}")

    return report


def _measure(context: Context, entries: list, prompts: dict) -> tuple[list, dict]:
    """One pass per lens over all prompts, encoding only that lens's audited features."""
    from interp_jobs.engine.analysis.features import prompt_feature_stats
    from interp_jobs.engine.loading.lenses import lens_info

    params = context.parameters
    loaded = load_model_for(context)
    texts = [probe.prompt for axis_prompts in prompts.values() for probe in axis_prompts]
    groups: dict[str, list] = {}
    for entry in entries:
        groups.setdefault(entry.lens, []).append(entry)
    rows, lenses = [], {}
    for i, (name, group) in enumerate(groups.items()):
        lens, ref = load_lens_for(context, name, loaded)
        indices = sorted({entry.index for entry in group})
        context.log(f"lens {name}: {len(indices)} feature(s) on {len(texts)} prompts")
        stats = prompt_feature_stats(
            loaded,
            lens,
            texts,
            indices,
            batch_size=params.batch_size,
            progress=_lens_progress(context, i, len(groups), name),
        )
        rows += [
            _feature_row(entry, stats, indices.index(entry.index), prompts, params)
            for entry in group
        ]
        lenses[name] = {
            "digest": ref.digest,
            "n_whole_prompt": stats.tokens.n_whole_prompt,
            **lens_info(lens),
        }
    return rows, lenses


def _feature_row(entry, stats, column: int, prompts: dict, params) -> dict:
    axes, start = {}, 0
    for axis, axis_prompts in prompts.items():
        rows = slice(start, start + len(axis_prompts))
        axes[axis] = _axis_stats(
            stats.max[rows, column], stats.mean[rows, column], params.firing_threshold
        )
        start += len(axis_prompts)
    return {
        "lens": entry.lens,
        "feature": entry.index,
        "label": entry.label,
        "risk_axis": entry.risk_axis,
        "axes": axes,
    }


def _axis_stats(maxima, means, firing_threshold: float) -> dict:
    fired = maxima > firing_threshold
    return {
        "n_prompts": int(maxima.numel()),
        "n_firing": int(fired.sum()),
        "firing_rate": float(fired.double().mean()),
        "max_activation": {
            "mean": float(maxima.double().mean()),
            "median": float(maxima.double().quantile(0.5)),
            "max": float(maxima.max()),
        },
        "mean_activation": {"mean": float(means.double().mean()), "max": float(means.max())},
        "per_prompt_max": maxima.tolist(),
    }


def _threshold_checks(row: dict, thresholds) -> list[dict]:
    from interp_jobs.probes import NEUTRAL_AXIS

    wanted = [
        (
            "max_firing_rate_on_neutral",
            NEUTRAL_AXIS,
            thresholds.max_firing_rate_on_neutral,
            lambda rate, limit: rate <= limit,
        ),
        (
            "min_firing_rate_on_own_axis",
            row["risk_axis"],
            thresholds.min_firing_rate_on_own_axis,
            lambda rate, limit: rate >= limit,
        ),
    ]
    checks = []
    for name, axis, limit, holds in wanted:
        if limit is None:
            continue
        rate = row["axes"][axis]["firing_rate"] if axis in row["axes"] else None
        result = NOT_MEASURED if rate is None else ("pass" if holds(rate, limit) else "fail")
        checks.append(
            {"threshold": name, "axis": axis, "firing_rate": rate, "limit": limit, "result": result}
        )
    return checks


def _verdict(rows: list[dict], thresholds) -> str:
    results = [check["result"] for row in rows for check in row["checks"]]
    if "fail" in results:
        return FAIL
    given = any(value is not None for value in thresholds.model_dump().values())
    if not given or not rows or NOT_MEASURED in results:
        return INCONCLUSIVE
    return PASS


def _report(context, rows, prompts, probe_set, lenses) -> dict:
    return {
        "check": "feature_activation_audit",
        "evidence_kind": EVIDENCE_KIND,
        "interpretation": INTERPRETATION,
        "score": "per prompt: a feature's maximum (and mean) activation over the tokens of the "
        "user's text; fires when the maximum > firing_threshold",
        "parameters": context.parameters.model_dump(mode="json"),
        "thresholds": context.thresholds.model_dump(mode="json"),
        "probe_set": {"version": probe_set.version, "digest": probe_set.digest},
        "prompt_ids": {
            axis: [p.id for p in axis_prompts] for axis, axis_prompts in prompts.items()
        },
        "lenses": lenses,
        "token_scope": "user text only (chat-template scaffolding and padding excluded)",
        "verdict": _verdict(rows, context.thresholds),
        "features": rows,
    }


def _feature_name(row: dict) -> str:
    return f"{row['lens']}:{row['feature']}"


def _metrics(report: dict) -> dict:
    rows = report["features"]
    failing = [_feature_name(r) for r in rows if any(c["result"] == "fail" for c in r["checks"])]
    neutral = [r["axes"]["neutral"]["firing_rate"] for r in rows if "neutral" in r["axes"]]
    own = [r["axes"][r["risk_axis"]]["firing_rate"] for r in rows if r["risk_axis"] in r["axes"]]
    return {
        "n_features": len(rows),
        "n_features_failing": len(failing),
        "failing_features": failing[:20],
        "max_neutral_firing_rate": max(neutral, default=None),
        "min_own_axis_firing_rate": min(own, default=None),
        "n_prompts": sum(len(ids) for ids in report["prompt_ids"].values()),
    }


def _summary(report: dict, metrics: dict) -> str:
    verdict, thresholds = report["verdict"], report["thresholds"]
    axes = ", ".join(f"{axis} ({len(ids)})" for axis, ids in report["prompt_ids"].items())
    if not report["features"]:
        return (
            "No catalog features matched this audit (the catalog is empty for the chosen "
            f"lens and axes), so nothing was measured on the probe prompts ({axes}); the "
            "verdict is inconclusive."
        )
    text = (
        f"Observed activations of {metrics['n_features']} catalog feature(s) on probe "
        f"prompts per axis: {axes}. Worst neutral firing rate "
        f"{_rate(metrics['max_neutral_firing_rate'])}, lowest own-axis firing rate "
        f"{_rate(metrics['min_own_axis_firing_rate'])}. "
    )
    given = {k: v for k, v in thresholds.items() if v is not None}
    if not given:
        text += "No thresholds were set, so there is no verdict. "
    else:
        limits = ", ".join(f"{k} = {v}" for k, v in given.items())
        text += (
            f"Against {limits}: {metrics['n_features_failing']} feature(s) fail, verdict "
            f"{verdict}. "
        )
        if verdict == INCONCLUSIVE:
            text += "Some feature's own axis is not among the probe axes, so it was not measured. "
    return text + (
        "Firing rates are observations on these prompts, not evidence that a "
        "feature causes behaviour."
    )


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _figure(report: dict) -> bytes:
    axes = list(report["prompt_ids"])
    rows = report["features"]
    labels = [f"{_feature_name(r)} {r['label']} ({r['risk_axis']})" for r in rows]
    values = [[r["axes"][axis]["firing_rate"] for axis in axes] for r in rows]
    threshold = report["parameters"]["firing_threshold"]
    notes = [f"cell = fraction of the axis's prompts whose max activation > {threshold}"]
    if not rows:
        notes.insert(0, "no catalog features audited")
    return heatmap_svg(
        "Catalog features: firing rate per probe axis", labels, axes, values, notes=notes
    )


def _result(context: Context, report: dict) -> CheckResult:
    metrics = _metrics(report)
    provenance = {
        "lenses": report["lenses"],
        "probe_set": report["probe_set"],
        "token_scope": report["token_scope"],
        "parameters": report["parameters"],
        "n_prompts": metrics["n_prompts"],
        "features": [_feature_name(r) for r in report["features"]],
    }
    return CheckResult(
        verdict=report["verdict"],
        evidence_kind=EVIDENCE_KIND,
        metrics=metrics,
        summary=_summary(report, metrics),
        artifacts=(
            ArtifactData("audit.json", "application/json", evidence_json(report)),
            ArtifactData("audit.svg", "image/svg+xml", _figure(report)),
        ),
        provenance=provenance,
    )
