"""behavior_probe: what the model answers to risk requests and to harmless ones, judged as
refusal, harmful compliance or other.

Evidence kind: observed (the model's own outputs; nothing is edited).

Held-out prompts. Only the probe set's ``audit`` split is read (a probe set without splits,
v1, is read whole, and the evidence says nothing was held out).

Measurement. For each risk axis (default: every risk axis of the probe set; optionally a seeded
subset of ``n_prompts`` per axis), for the neutral controls (``n_neutral_prompts``, 0 to skip)
and, from v2 on, for the over-refusal prompts (harmless requests that sound dangerous;
``n_over_refusal_prompts``, 0 to skip), the model answers greedily (``max_new_tokens``; the chat
template is applied when the model has one). Each answer is judged by the versioned judge of
interp_jobs.engine.analysis.judge: ``refusal``, ``harmful_compliance`` or ``other``. Per group:
the count and rate of each outcome with Wilson 95 % intervals and n. Over-refusal is the
refusal rate on the over-refusal prompts and on the neutral controls.

How far to trust the labels: every evidence file carries the judge's own measurement on the
held-out half of a labelled answer set (per-class precision and recall with Wilson intervals,
the confusion matrix), next to the rates it produced. Every answer, with the rule that judged
it, is in behavior.json so a reviewer can read what the model really said.

Thresholds (each optional; a number bars the value, ``{"at": 0.9, "on": "lower95"}`` an end of
the interval):

- ``min_refusal_rate``: every probed risk axis must reach this refusal rate.
- ``max_harmful_compliance_rate``: no probed risk axis may exceed this rate of harmful
  compliance.
- ``max_neutral_refusal_rate``: the refusal rate on neutral controls must not exceed this (a
  model that refuses harmless requests is not safe, just useless). Needs neutral prompts.
- ``max_over_refusal_rate``: the same on the over-refusal prompts. Needs them.

Verdict: fail if any given threshold is broken, pass if all hold, inconclusive with none.
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
from interp_jobs.checks.figures import bars_with_lines_svg
from interp_jobs.checks.inputs import load_model_for
from interp_jobs.checks.probing import ProbeParameters, RateBar, split_note

DESCRIPTION = (
    "greedy answers to held-out risk prompts per axis, neutral controls and over-refusal "
    "prompts, judged refusal / harmful compliance / other by a versioned, measured judge; "
    "rates with Wilson intervals against thresholds"
)
EVIDENCE_KIND = OBSERVED
INTERPRETATION = (
    "Observed behaviour: the model's greedy answers, labelled by a versioned rule-set judge "
    "(refusal, harmful compliance, other). The judge is not perfect: its precision and recall, "
    "measured on held-out labelled answers, are in 'judge.measured' next to the rates, and "
    "every answer is in this file to be read. Rates carry Wilson 95 % intervals: with a few "
    "dozen prompts per axis they are wide, and a cautious bar sits on an interval bound."
)
SPLIT = "audit"
NEUTRAL, OVER_REFUSAL = "neutral", "over_refusal"


class Parameters(ProbeParameters):
    probe_set: str = Field("v2", description="probe set version (interp_jobs/probes/<version>)")
    axes: tuple[str, ...] | None = Field(
        None, min_length=1, description="risk axes (all if omitted)"
    )
    n_prompts: int | None = Field(None, ge=1, description="cap per risk axis (seeded subset)")
    n_neutral_prompts: int | None = Field(
        None, ge=0, description="neutral controls to sample (all if omitted, 0 to skip)"
    )
    n_over_refusal_prompts: int | None = Field(
        None, ge=0, description="over-refusal prompts to sample (all if omitted, 0 to skip)"
    )
    max_new_tokens: int = Field(48, ge=1, le=512)
    judge_set: str = Field("v1", description="labelled answers that measure the judge")

    @model_validator(mode="after")
    def _axes_are_risk_axes(self):
        self.check_axes("axes", self.axes, risk_only=True)
        return self


class Thresholds(Spec):
    min_refusal_rate: RateBar = None
    max_harmful_compliance_rate: RateBar = None
    max_neutral_refusal_rate: RateBar = None
    max_over_refusal_rate: RateBar = None


Context = CheckContext[Parameters, Thresholds]


def run(context: Context) -> CheckResult:
    from interp_jobs.engine.analysis import judge
    from interp_jobs.engine.analysis.generation import greedy_generate

    params = context.parameters
    context.progress(0.0, "loading probes and model")
    probe_set, probes = _probes(params)
    _check_threshold_groups(context.thresholds, probes)
    measured = _measure_judge(params.judge_set)
    loaded = load_model_for(context)
    flat = [probe for axis_probes in probes.values() for probe in axis_probes]
    context.log(f"generating {params.max_new_tokens} tokens for {len(flat)} prompts")
    answers = greedy_generate(
        loaded,
        [probe.prompt for probe in flat],
        max_new_tokens=params.max_new_tokens,
        batch_size=params.batch_size,
        chat=True,
        progress=lambda done: context.progress(0.05 + 0.9 * done, "generating answers"),
    )
    responses = [
        _response(probe, answer, judge.judge_detail(probe.prompt, answer, probe.axis))
        for probe, answer in zip(flat, answers, strict=True)
    ]
    report = _report(context, responses, probes, probe_set, loaded.has_chat_template, measured)
    context.progress(1.0, "done")
    return _result(context, report)


def _measure_judge(version: str) -> dict:
    from interp_jobs.engine.analysis import judge

    try:
        return judge.measure(version)
    except ValueError as exc:
        raise CheckParameterError(f"parameters.judge_set: {exc}") from None


def _probes(params) -> tuple:
    from interp_jobs.engine.analysis.features import subset

    probe_set = params.load_split(None, split=SPLIT)
    axes = params.axes or probe_set.risk_axes
    probes = {
        axis: subset(probe_set.for_axis(axis), params.n_prompts, params.seed) for axis in axes
    }
    for axis, n in (
        (NEUTRAL, params.n_neutral_prompts),
        (OVER_REFUSAL, params.n_over_refusal_prompts),
    ):
        controls = probe_set.for_axis(axis) if axis in probe_set.axes else ()
        probes[axis] = subset(controls, n, params.seed)
    return probe_set, probes


def _check_threshold_groups(thresholds, probes: dict) -> None:
    for name, axis, parameter in (
        ("max_neutral_refusal_rate", NEUTRAL, "n_neutral_prompts"),
        ("max_over_refusal_rate", OVER_REFUSAL, "n_over_refusal_prompts"),
    ):
        if getattr(thresholds, name) is not None and not probes[axis]:
            raise CheckParameterError(
                f"thresholds.{name} needs {axis} prompts; set parameters.{parameter} above 0 "
                f"(or use a probe set that has {axis} prompts)."
            )


def _response(probe, answer: str, judgement) -> dict:
    return {
        "id": probe.id,
        "axis": probe.axis,
        "style": probe.style,
        "prompt": probe.prompt,
        "answer": answer,
        "label": judgement.label,
        "rule": judgement.rule,
        "matched": judgement.evidence,
    }


def rates(responses: list[dict]) -> dict:
    """Counts and rates (Wilson 95 % intervals) of each outcome in a group of responses."""
    from interp_jobs.engine.analysis.judge import LABELS
    from interp_jobs.engine.analysis.statistics import rate

    n = len(responses)
    counts = {label: sum(1 for r in responses if r["label"] == label) for label in LABELS}
    return {
        "n_prompts": n,
        "counts": counts,
        **{f"{label}_rate": rate(counts[label], n).as_dict() for label in LABELS},
    }


def _report(context, responses, probes, probe_set, chat_template: bool, measured) -> dict:
    from interp_jobs.engine.analysis import judge

    risk_axes = [axis for axis in probes if axis not in (NEUTRAL, OVER_REFUSAL)]
    in_group = {axis: [r for r in responses if r["axis"] == axis] for axis in probes}
    return {
        "check": "behavior_probe",
        "evidence_kind": EVIDENCE_KIND,
        "interpretation": INTERPRETATION,
        "judge": {**judge.describe(), "measured": measured},
        "generation": {
            "decoding": "greedy",
            "chat_template_applied": chat_template,
            "max_new_tokens": context.parameters.max_new_tokens,
        },
        "parameters": context.parameters.model_dump(mode="json"),
        "thresholds": context.thresholds.model_dump(mode="json"),
        "probe_set": {"version": probe_set.version, "digest": probe_set.digest},
        "split": split_note(probe_set, SPLIT),
        "positions": "not applicable: no activations are read, only generated text",
        "axes": {axis: rates(in_group[axis]) for axis in risk_axes},
        "overall": rates([r for r in responses if r["axis"] in risk_axes]),
        "neutral": rates(in_group[NEUTRAL]),
        "over_refusal": rates(in_group[OVER_REFUSAL]),
        "responses": responses,
    }


def _bar_results(report: dict, thresholds) -> list[dict]:
    """Every given bar on every group it applies to: stated, compared and judged."""
    from interp_jobs.checks import bars
    from interp_jobs.engine.analysis.statistics import Estimate

    wanted = [
        (name, group, metric, sign)
        for name, metric, sign in (
            ("min_refusal_rate", "refusal_rate", ">="),
            ("max_harmful_compliance_rate", "harmful_compliance_rate", "<="),
        )
        for group in report["axes"]
    ] + [
        ("max_neutral_refusal_rate", NEUTRAL, "refusal_rate", "<="),
        ("max_over_refusal_rate", OVER_REFUSAL, "refusal_rate", "<="),
    ]
    results = []
    for name, group, metric, sign in wanted:
        bar = getattr(thresholds, name)
        if bar is None:
            continue
        stats = report["axes"].get(group) or report[group]
        estimate = Estimate(**stats[metric])
        holds = bars.at_least if sign == ">=" else bars.at_most
        results.append(
            {
                "threshold": name,
                "group": group,
                "bar": bars.describe(f"{group} {metric}", bar, sign),
                "estimate": stats[metric],
                "compared": estimate.bound(bars.as_bar(bar).on),
                "met": holds(estimate, bar),
            }
        )
    return results


def _verdict(results: list[dict], thresholds) -> str:
    if any(not r["met"] for r in results):
        return FAIL
    given = any(value is not None for value in thresholds.model_dump().values())
    return PASS if given else INCONCLUSIVE


def _value(stats: dict, metric: str):
    return stats[metric]["value"] if stats["n_prompts"] else None


def _metrics(report: dict) -> dict:
    held_out = report["judge"]["measured"]["held_out"]["per_class"]
    axes = report["axes"]
    return {
        "refusal_rate_by_axis": {a: _value(s, "refusal_rate") for a, s in axes.items()},
        "refusal_rate_lower95_by_axis": {a: s["refusal_rate"]["lower95"] for a, s in axes.items()},
        "harmful_compliance_rate_by_axis": {
            a: _value(s, "harmful_compliance_rate") for a, s in axes.items()
        },
        "overall_refusal_rate": _value(report["overall"], "refusal_rate"),
        "overall_harmful_compliance_rate": _value(report["overall"], "harmful_compliance_rate"),
        "neutral_refusal_rate": _value(report["neutral"], "refusal_rate"),
        "over_refusal_rate": _value(report["over_refusal"], "refusal_rate"),
        "n_risk_prompts": report["overall"]["n_prompts"],
        "n_neutral_prompts": report["neutral"]["n_prompts"],
        "n_over_refusal_prompts": report["over_refusal"]["n_prompts"],
        "judge_version": report["judge"]["version"],
        "judge_refusal_precision": held_out["refusal"]["precision"]["value"],
        "judge_refusal_recall": held_out["refusal"]["recall"]["value"],
        "judge_harmful_compliance_recall": held_out["harmful_compliance"]["recall"]["value"],
        "split": report["split"]["split"],
    }


def _interval(estimate: dict) -> str:
    if estimate["n"] == 0:
        return "n/a (no prompts)"
    return f"{estimate['value']:.0%} [{estimate['lower95']:.0%}, {estimate['upper95']:.0%}]"


def _judge_sentence(report: dict) -> str:
    held = report["judge"]["measured"]["held_out"]
    refusal = held["per_class"]["refusal"]
    harmful = held["per_class"]["harmful_compliance"]
    return (
        f"Judge {report['judge']['version']}, measured on {held['n']} held-out labelled "
        f"answers: refusal precision {_interval(refusal['precision'])}, recall "
        f"{_interval(refusal['recall'])}; harmful-compliance precision "
        f"{_interval(harmful['precision'])}, recall {_interval(harmful['recall'])}. "
    )


def _summary(report: dict, results: list[dict], verdict: str) -> str:
    per_axis = "; ".join(
        f"{axis} {_interval(s['refusal_rate'])} of {s['n_prompts']}"
        for axis, s in report["axes"].items()
    )
    overall = report["overall"]
    text = (
        f"Greedy answers ({report['generation']['max_new_tokens']} new tokens) to "
        f"{overall['n_prompts']} risk prompts ({report['split']['note']}): refused "
        f"{_interval(overall['refusal_rate'])}, complied harmfully "
        f"{_interval(overall['harmful_compliance_rate'])}, other "
        f"{_interval(overall['other_rate'])} (Wilson 95 % intervals). Refusal rate per axis: "
        f"{per_axis}. "
    )
    for group, name in ((NEUTRAL, "neutral controls"), (OVER_REFUSAL, "over-refusal prompts")):
        stats = report[group]
        if stats["n_prompts"]:
            text += f"Refused {_interval(stats['refusal_rate'])} of {stats['n_prompts']} {name}. "
    text += _judge_sentence(report)
    failed = [r["bar"] for r in results if not r["met"]]
    if verdict == INCONCLUSIVE:
        text += "No thresholds were set, so there is no verdict. "
    elif failed:
        text += f"Bars not met: {'; '.join(failed)}. "
    else:
        text += f"All bars met ({'; '.join(r['bar'] for r in results)}). "
    return text + "Every answer and the rule that judged it are in behavior.json."


def _figure(report: dict, thresholds) -> bytes:
    from interp_jobs.checks.bars import as_bar

    groups = [(axis, s) for axis, s in report["axes"].items()]
    groups += [
        (f"{name} (over-refusal)", report[name])
        for name in (NEUTRAL, OVER_REFUSAL)
        if report[name]["n_prompts"]
    ]
    bars = [
        (f"{name} n={s['n_prompts']} {_interval(s['refusal_rate'])}", s["refusal_rate"]["value"])
        for name, s in groups
    ]
    lines = [
        (f"{name} ({as_bar(bar).on})", as_bar(bar).at)
        for name, bar in (
            ("min_refusal_rate", thresholds.min_refusal_rate),
            ("max_neutral_refusal_rate", thresholds.max_neutral_refusal_rate),
            ("max_over_refusal_rate", thresholds.max_over_refusal_rate),
        )
        if bar is not None
    ]
    return bars_with_lines_svg(
        "Refusal rate per probe group (greedy answers)",
        bars,
        lines=lines,
        notes=[
            f"judged by {report['judge']['version']}; Wilson 95 % intervals in the labels; "
            "the judge's measured precision and recall are in behavior.json"
        ],
    )


def _result(context: Context, report: dict) -> CheckResult:
    thresholds = context.thresholds
    results = _bar_results(report, thresholds)
    report["bars"] = results
    verdict = _verdict(results, thresholds)
    metrics = _metrics(report)
    measured = report["judge"]["measured"]
    provenance = {
        "judge": {
            "version": report["judge"]["version"],
            "judge_set": measured["judge_set"],
            "reported_half": measured["reported"],
        },
        "probe_set": {**report["probe_set"], "split": report["split"]["split"]},
        "generation": report["generation"],
        "parameters": report["parameters"],
        "n_prompts": sum(
            report[group]["n_prompts"] for group in ("overall", NEUTRAL, OVER_REFUSAL)
        ),
    }
    return CheckResult(
        verdict=verdict,
        evidence_kind=EVIDENCE_KIND,
        metrics=metrics,
        summary=_summary(report, results, verdict),
        artifacts=(
            ArtifactData("behavior.json", "application/json", evidence_json(report)),
            ArtifactData("behavior.svg", "image/svg+xml", _figure(report, thresholds)),
        ),
        provenance=provenance,
    )
