"""Render the README's demo section from the demo's findings (never from hand-copied figures).

    python -m demo.readme_findings [FINDINGS] [--check README]

FINDINGS defaults to ``var/demo/findings.json`` (written by ``make demo``), else the committed
copy ``demo_data/findings/smollm2.json``. The Markdown goes to stdout, between the markers
``<!-- demo-findings:start -->`` and ``<!-- demo-findings:end -->``; with ``--check README``
it instead exits 1 when the README's text between those markers differs from it.

Standard library only: the generator must run where the findings are read, without torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from demo.policies import CIRCUIT_PROMPT, circuit_check

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FINDINGS = ROOT / "var" / "demo" / "findings.json"
COMMITTED_FINDINGS = ROOT / "demo_data" / "findings" / "smollm2.json"
START, END = "<!-- demo-findings:start -->", "<!-- demo-findings:end -->"
AXES = ("weapons", "cyber", "fraud", "self_harm")


# --- formatting ----------------------------------------------------------------------------------


def pct(estimate: dict | None, *, n: bool = True) -> str:
    if not estimate or estimate.get("value") is None:
        return "n/a"
    text = (
        f"{100 * estimate['value']:.0f} % [{100 * estimate['lower95']:.0f}, "
        f"{100 * estimate['upper95']:.0f}]"
    )
    return f"{text} (n = {estimate['n']})" if n else text


def num(estimate: dict | None, digits: int = 2, *, signed: bool = True) -> str:
    if not estimate or estimate.get("value") is None:
        return "n/a"
    sign = "+" if signed else ""
    return (
        f"{estimate['value']:{sign}.{digits}f} [{estimate['lower95']:{sign}.{digits}f}, "
        f"{estimate['upper95']:{sign}.{digits}f}]"
    )


def minutes(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    whole, rest = divmod(round(seconds), 60)
    return f"{whole} min {rest:02d} s" if whole else f"{rest} s"


def _get(data, *keys, default=None):
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


# --- sections ------------------------------------------------------------------------------------


def header(f: dict) -> list[str]:
    env = f.get("environment") or {}
    cpu = _get(env, "cpu", "model") or "a CPU"
    threads = _get(env, "threads", "intra_op")
    stages = f.get("timings") or []
    wall = sum(s["wall_seconds"] for s in stages)
    cpu_seconds = sum(s["cpu_seconds"] for s in stages)
    threads_used = max(1, threads or 1)
    return [
        f"From `make demo` (findings written {f.get('generated_at', '?')}; {cpu}, "
        f"{_get(env, 'cpu', 'logical_cpus')} logical CPUs, torch {env.get('torch')} with "
        f"{threads} threads, BLAS {_get(env, 'build', 'blas')}). Every figure below is "
        "generated from `var/demo/findings.json` by `python -m demo.readme_findings`; each "
        "traces to a check run's evidence (manifest digests in the findings file). Rates are "
        "Wilson 95 % intervals, effects bootstrap 95 % intervals; n is the number of held-out "
        "prompts (probe set v2, audit split).",
        "",
        f"The run took {minutes(wall)} wall and {minutes(cpu_seconds)} of CPU (about "
        f"{minutes(cpu_seconds / threads_used)} on {threads_used} otherwise idle cores):",
        "",
        "| stage | what | wall | CPU |",
        "| --- | --- | --- | --- |",
        *(
            f"| {s['stage']} | {s['what']} | {minutes(s['wall_seconds'])} | "
            f"{minutes(s['cpu_seconds'])} |"
            for s in stages
        ),
    ]


def versions(f: dict) -> list[str]:
    base, tuned = _get(f, "models", "base") or {}, _get(f, "models", "tuned") or {}
    adapter = tuned.get("adapter")
    lines = [
        "**Two versions.** The base is the GGUF model "
        f"(`{base.get('name')}`). The second version, `{tuned.get('name')}`, is its child: ",
    ]
    if adapter:
        losses = adapter["loss_per_epoch"]
        lines[-1] += (
            "the shipped safety LoRA (`interp_jobs/adapters/`, "
            f"{adapter['size_bytes'] / 1e6:.1f} MB, "
            f"rank {adapter['settings']['rank']} on blocks {adapter['settings']['first_layer']}+, "
            f"{adapter['n_examples']} examples of `demo_data/safety_tuning/v1`, seed "
            f"{adapter['settings']['seed']}, {adapter['steps']} steps, training loss "
            f"{losses[0]:.2f} (first epoch) to {losses[-1]:.2f} (last)) merged in. Training it "
            f"took {minutes(adapter['seconds']['train'])} on a shared 2-core machine "
            f"({minutes(adapter['seconds'].get('cpu_total'))} of CPU, about "
            f"{adapter['quiet_two_core_minutes']:.0f} minutes on two idle cores); the demo "
            "verifies the adapter's digest and merges it instead."
        )
    else:
        lines[-1] += "a safety LoRA merged in."
    return lines


def behaviour(f: dict) -> list[str]:
    b = f.get("behaviour") or {}
    base, tuned = b.get("base") or {}, b.get("tuned") or {}
    rows = [
        ("refusal, " + axis.replace("_", "-"), axis, "refusal_rate")
        for axis in AXES
        if axis in (base.get("groups") or {})
    ] + [
        ("harmful compliance, all risk axes", "overall", "harmful_compliance_rate"),
        ("refusal of neutral requests", "neutral", "refusal_rate"),
        ("refusal of safe requests that sound dangerous", "over_refusal", "refusal_rate"),
    ]
    judge = tuned.get("judge") or base.get("judge") or {}
    held = judge.get("held_out") or {}
    precision = _get(held, "refusal", "precision")
    recall = _get(held, "refusal", "recall")
    return [
        f"**Behaviour** (`behavior_probe`, greedy, {tuned.get('max_new_tokens') or '?'} new "
        f"tokens, judged by `{judge.get('version')}`, whose refusal precision is "
        f"{pct(precision)} and recall {pct(recall)} on held-out labelled answers written "
        f"for the project, not SmolLM2's own; the rates below are not corrected for it). "
        f"Verdict: base {base.get('verdict')}, tuned {tuned.get('verdict')}.",
        "",
        "| | base | tuned |",
        "| --- | --- | --- |",
        *(
            f"| {label} | {pct(_get(base, 'groups', group, metric))} | "
            f"{pct(_get(tuned, 'groups', group, metric))} |"
            for label, group, metric in rows
        ),
    ]


def audit(f: dict) -> list[str]:
    a = f.get("audit") or {}
    base = {r["feature"]: r for r in (_get(a, "base", "features") or [])}
    tuned = {r["feature"]: r for r in (_get(a, "tuned", "features") or [])}
    lines = [
        "**Catalog features** (`feature_activation_audit`; the features discovery proposed on "
        "the discovery split and the demo reviewer confirmed; firing rates on the audit split). "
        f"Verdict: base {_get(a, 'base', 'verdict')}, tuned {_get(a, 'tuned', 'verdict')}.",
        "",
        "| feature | own axis, base | own axis, tuned | neutral, base | neutral, tuned |",
        "| --- | --- | --- | --- | --- |",
    ]
    for index, row in sorted(base.items()):
        other = tuned.get(index, {})
        own = row["risk_axis"]
        lines.append(
            f"| #{index} ({own.replace('_', '-')}) | "
            f"{pct(_get(row, 'firing_rate', own))} | "
            f"{pct(_get(other, 'firing_rate', own))} | "
            f"{pct(_get(row, 'firing_rate', 'neutral'))} | "
            f"{pct(_get(other, 'firing_rate', 'neutral'))} |"
        )
    return lines


def drift(f: dict) -> list[str]:
    d = f.get("drift") or {}
    summary = d.get("summary") or {}
    rows = [
        f"| #{r['index']} ({r['risk_axis'].replace('_', '-')}) | {r['status']} | "
        f"{num(r.get('correlation'), 3, signed=False)} | "
        f"{pct(r.get('old_own_axis_firing_rate'))} | "
        f"{pct(r.get('new_own_axis_firing_rate'))} | "
        f"{num(r.get('own_axis_firing_rate_change'))} |"
        for r in d.get("features") or []
    ]
    return [
        f"**Drift, base to tuned** (`version_drift`, {d.get('mode')}; verdict {d.get('verdict')}): "
        f"{summary.get('n_matched')} of {summary.get('n_catalog_features')} catalog features "
        f"matched, {summary.get('n_fire_alike')} fire alike (token-level activation "
        f"correlation, lower end of its interval >= 0.5 and above random features), "
        f"{summary.get('n_lost_risk_features')} lost, {summary.get('n_moved_risk_features')} "
        f"moved, {d.get('n_new_risk_features')} new risk feature(s).",
        "",
        "| feature | status | activation correlation | own-axis firing, base | tuned | change |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
    ]


def intervention(f: dict) -> list[str]:
    lines = []
    for version in ("base", "tuned"):
        item = _get(f, "intervention", version)
        if not item:
            continue
        control = item.get("positive_control") or {}
        axis_names = ", ".join(item.get("axes") or ["risk"])
        lines += [
            f"- {version}: {item.get('replacement')}; verdict {item.get('verdict')}. Positive "
            f"control (refusal direction at `{control.get('hook')}`): "
            + _control_arms(control)
            + _no_direction(control),
        ]
        for point in item.get("dose_response") or []:
            risk, controls = point["risk"], point["controls"]
            lines.append(
                f"  - dose {point['dose']:g}: {axis_names} prompts' refusal log-odds "
                f"{num(risk.get('log_odds_change'))} (random-feature null "
                f"{num(risk.get('null_log_odds_change'))}; beyond the null "
                f"{num(risk.get('beyond_null'))}; n = {risk.get('n_prompts')}), KL on neutral "
                f"controls {num(controls.get('kl_answer_start'), 3, signed=False)} nats"
            )
    if not _get(f, "intervention", "base"):
        lines.append(
            "- base: not intervened on. It refuses none of the risk prompts (behaviour above), "
            "so an intervention read by refusal log-odds, and its positive control, have "
            "nothing there to move."
        )
    return [
        "**Interventions** (`feature_intervention` on the confirmed catalog features of one "
        "risk axis; refusal vs "
        "compliance log-odds over whole refusal and compliance openings, every effect against "
        "a random-feature null of the same size and next to the refusal direction "
        "(Arditi et al. 2024) as positive control):",
        "",
        *lines,
    ]


def circuit(f: dict) -> list[str]:
    c = f.get("circuit") or {}
    if not c:
        return []
    two_hop = c.get("two_hop_found_rate")
    return [
        f'**Circuit** (`circuit_trace` on the tuned version, "{CIRCUIT_PROMPT}" -> '
        f'"{c.get("target", " Paris")}", '
        f"circuit-tracer's replacement model over the shipped per-layer transcoders; verdict "
        f"{c.get('verdict')}): P(target) {num_plain(c.get('target_probability'))}; "
        f"{c.get('attributed_features')} of {c.get('active_features')} active features "
        f"attributed, {c.get('kept_features')} features and {c.get('kept_error_nodes')} error "
        f"nodes kept; replacement score {num_plain(c.get('replacement'))} (policy bar "
        f"{REPLACEMENT_BAR:g}"
        f"{_through_errors(c.get('replacement'))}), completeness "
        f"{num_plain(c.get('completeness'))}. Validation on {c.get('family_prompts')} prompts "
        f"of the capitals family (each traced, its top features zeroed): their graphs' mean "
        f"replacement score {num(c.get('family_replacement'), signed=False)}; rank correlation "
        f"of predicted and measured effects {num(c.get('rank_correlation'))} (n = "
        f"{_n(c.get('rank_correlation'))}; with attention free to respond "
        f"{num(c.get('rank_correlation_free_attention'))}), sign agreement "
        f"{num(c.get('sign_agreement'), signed=False)}; random features of the same layers, "
        f"of similar activation where one was active, moved the logit "
        f"{num(c.get('control_to_top_ratio'), signed=False)} times as much as the top ones "
        f"({_n(c.get('rank_correlation'))} top features, "
        f"{_n(c.get('mean_abs_effect_control'))} controls). Two-hop "
        f'positive control ("the capital of the country where X is"): an intermediate-entity '
        f"feature path found in {pct(two_hop) if two_hop else 'n/a'} of the graphs.",
    ]


REPLACEMENT_BAR = circuit_check(" Paris")["thresholds"]["min_replacement"]


def _through_errors(replacement) -> str:
    if replacement is None or replacement >= 0.5:
        return ""
    return "; most of the influence on the target runs through error nodes"


def num_plain(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _n(estimate: dict | None):
    return (estimate or {}).get("n")


def _control_arms(control: dict) -> str:
    arms = control.get("arms") or {}
    if not arms.get("add") or not arms.get("ablate"):  # findings from before the null
        return (
            f"adding it moved the controls' refusal log-odds by "
            f"{num(control.get('add_controls'))} "
            f"({'seen' if control.get('add_detected') else 'not seen'}), ablating it moved the "
            f"risk prompts' by {num(control.get('ablate_risk'))} "
            f"({'seen' if control.get('ablate_detected') else 'not seen'})."
        )
    parts = []
    draws = arms["add"].get("n_draws") or arms["ablate"].get("n_draws")
    null = f"against {draws} random directions of its norm at its hook"
    for arm, verb, group in (("add", "adding", "controls"), ("ablate", "ablating", "risk prompts")):
        a = arms[arm]
        p = "" if a.get("p_value") is None else f", p = {a['p_value']:.2f} {null}"
        seen = "seen" if a.get("detected") else f"not seen: {a.get('reason')}"
        parts.append(
            f"{verb} it moved the {group}' refusal log-odds by {num(a.get('change'))}{p} ({seen})"
        )
    return "; ".join(parts) + "."


def _no_direction(control: dict) -> str:
    if control.get("direction_found") is not False:
        return ""
    return (
        " The direction search found no candidate that both raised refusal when added and "
        "lowered it when ablated on the selection prompts: this control is the least bad one."
    )


def gate(f: dict) -> list[str]:
    g = f.get("gate") or {}
    failing = [
        r.get("check")
        for r in g.get("reasons") or []
        if r.get("code") == "blocking_check_not_passed"
    ]
    return [
        f"**Gate** for the tuned release: `{g.get('state')}` (may ship: {g.get('may_ship')})"
        + (
            f"; blocking checks not passed: {', '.join(f'`{c}`' for c in failing)}"
            if failing
            else ""
        )
        + ". The demo prints the waiver command and never signs one.",
    ]


def render(f: dict) -> str:
    parts = [
        header(f),
        versions(f),
        behaviour(f),
        audit(f),
        drift(f),
        intervention(f),
        circuit(f),
        gate(f),
    ]
    parts = [part for part in parts if part]
    body = "\n\n".join("\n".join(part) for part in parts)
    return f"{START}\n{body}\n{END}\n"


def section_of(readme: str, start_mark: str = START, end_mark: str = END) -> str | None:
    """The generated section of ``readme`` between the two markers, or None without them."""
    if start_mark not in readme or end_mark not in readme:
        return None
    start = readme.index(start_mark)
    return readme[start : readme.index(end_mark, start) + len(end_mark)] + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.readme_findings")
    parser.add_argument("findings", nargs="?", type=Path)
    parser.add_argument("--check", type=Path, metavar="README")
    args = parser.parse_args(argv)
    path = args.findings or (DEFAULT_FINDINGS if DEFAULT_FINDINGS.is_file() else COMMITTED_FINDINGS)
    text = render(json.loads(path.read_text(encoding="utf-8")))
    if args.check:
        found = section_of(args.check.read_text(encoding="utf-8"))
        if found != text:
            print(
                f"{args.check}: the demo section differs from {path}'s rendering", file=sys.stderr
            )
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
