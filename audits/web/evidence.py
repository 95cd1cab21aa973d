"""What a check run's evidence looks like on its page: token heat maps, firing-rate grids,
before / after comparisons, answers with their labels, and a readable form of any other JSON.

Every function here takes parsed evidence (dicts, lists) and returns plain values for the
templates; reading and hash-checking the bytes is `read_evidence`'s job. Shapes that a check
does not write (yet) are simply absent from what is shown.
"""

import json
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from audits.models import Evidence, EvidenceIntegrityError
from audits.web import figures

logger = logging.getLogger(__name__)

MAX_JSON_BYTES = 25_000_000  # larger evidence is offered for download only
MAX_TABLE_ROWS = 200
MAX_ANSWER_CHARS = 2_000


@dataclass
class Read:
    """One evidence file as the page uses it."""

    row: Evidence
    data: Any = None
    text: str = ""
    problem: str = ""
    too_large: bool = False

    @property
    def is_json(self) -> bool:
        return self.row.media_type == "application/json"

    @property
    def is_image(self) -> bool:
        return self.row.media_type in ("image/svg+xml", "image/png")


def read_evidence(row: Evidence) -> Read:
    """The file's bytes, checked against their sha256; JSON parsed. A file that no longer
    matches its hash is reported in words (and recorded by the caller)."""
    read = Read(row)
    if not read.is_json and not row.media_type.startswith("text/"):
        return read
    if row.size > MAX_JSON_BYTES:
        read.too_large = True
        return read
    try:
        raw = row.read_bytes()
    except EvidenceIntegrityError as exc:
        read.problem = str(exc)
        return read
    try:
        if read.is_json:
            read.data = json.loads(raw)
        else:
            read.text = raw.decode("utf-8", "replace")
    except (ValueError, UnicodeDecodeError):
        read.problem = f"{row.title} is not valid JSON; download it to inspect the bytes"
    return read


# --- token heat maps ------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    text: str
    activation: float | None
    style: str
    peak: bool = False


@dataclass
class HeatLine:
    tokens: list[Token]
    caption: str = ""
    note: str = ""
    peak: float | None = None


def token_line(texts: list[str], acts: list[float | None], vmax: float, caption="") -> HeatLine:
    finite = [a for a in acts if isinstance(a, int | float)]
    peak_value = max(finite, default=None)
    tokens = [
        Token(
            text,
            act,
            figures.heat_style(act, vmax) if act else "",
            peak=act is not None and act == peak_value and bool(act),
        )
        for text, act in zip(texts, acts, strict=False)
    ]
    return HeatLine(tokens, caption, peak=peak_value)


def context_line(context: dict, vmax: float) -> HeatLine:
    """A top-activating context: per-token activations when the evidence has them, otherwise
    the peak token shaded between its unshaded neighbours (only the peak was recorded)."""
    caption = f"prompt {context['probe_id']}" if context.get("probe_id") else ""
    for key in ("tokens_acts_list", "acts", "activations"):
        if isinstance(context.get("tokens"), list) and isinstance(context.get(key), list):
            return token_line(context["tokens"], context[key], vmax, caption)
    activation = context.get("activation")
    line = token_line(
        [context.get("left", ""), context.get("token", ""), context.get("right", "")],
        [None, activation, None],
        vmax,
        caption,
    )
    line.note = "only the peak token's activation is recorded"
    return line


def contexts_lines(contexts: list[dict]) -> list[HeatLine]:
    contexts = [c for c in contexts if isinstance(c, dict)]
    peaks: list[float] = []
    for c in contexts:
        for key in ("tokens_acts_list", "acts", "activations"):
            peaks += [float(a) for a in c.get(key) or [] if isinstance(a, int | float)]
        if isinstance(c.get("activation"), int | float):
            peaks.append(float(c["activation"]))
    vmax = max(peaks, default=0.0) or 1.0
    return [context_line(c, vmax) for c in contexts]


def feature_file_lines(feature_file: dict, limit: int = 5) -> list[HeatLine]:
    """Top activating examples of a circuit-tracer feature file, as token heat maps."""
    examples: list[dict] = []
    for quantile in feature_file.get("examples_quantiles") or []:
        examples += quantile.get("examples") or []
    acts = [
        float(a)
        for ex in examples
        for a in ex.get("tokens_acts_list") or []
        if isinstance(a, int | float)
    ]
    vmax = float(feature_file.get("act_max") or 0.0) or max(acts, default=1.0)
    return [
        token_line(ex.get("tokens") or [], ex.get("tokens_acts_list") or [], vmax or 1.0)
        for ex in examples[:limit]
    ]


# --- feature_discovery ----------------------------------------------------------------------


def _estimate(row: dict, key: str) -> figures.Shown:
    return figures.shown(row, key)


def discovery_view(report: dict) -> dict:
    rows = []
    for row in report.get("features") or []:
        auroc = _estimate(row, "auroc")
        rows.append(
            {
                "rank": row.get("rank"),
                "feature": row.get("feature"),
                "label": row.get("catalog_label") or "",
                "auroc": auroc,
                "auroc_bar": figures.bar(auroc),
                "effect": _estimate(row, "effect_size"),
                "risk_rate": _estimate(row, "firing_rate_risk"),
                "risk_bar": figures.bar(_estimate(row, "firing_rate_risk")),
                "neutral_rate": _estimate(row, "firing_rate_neutral"),
                "neutral_bar": figures.bar(_estimate(row, "firing_rate_neutral")),
                "meets_bar": row.get("meets_bar"),
                "contexts": contexts_lines(row.get("contexts") or []),
            }
        )
    chance = report.get("chance_best_auroc")
    if isinstance(chance, dict):
        chance = chance.get("value")
    chance_best = max(chance) if isinstance(chance, list) and chance else chance
    return {
        "axis": report.get("axis", ""),
        "rows": rows,
        "chance": chance_best,
        "chance_mark": round(100 * chance_best, 2) if isinstance(chance_best, float) else None,
        "n_risk": len(report.get("risk_probe_ids") or []),
        "n_neutral": len(report.get("neutral_probe_ids") or []),
        "interpretation": report.get("interpretation", ""),
    }


# --- feature_activation_audit ---------------------------------------------------------------


@lru_cache(maxsize=8)
def probe_texts(version: str) -> dict[str, str]:
    """Probe prompt texts by id, from the versioned probe set (pure Python; no torch)."""
    from interp_jobs.probes import ProbeSetError, load_probe_set

    try:
        probe_set = load_probe_set(version)
    except (ProbeSetError, OSError, ValueError) as exc:
        logger.warning("probe set %s could not be read: %s", version, exc)
        return {}
    return {probe.id: probe.prompt for axis in probe_set.axes for probe in probe_set.for_axis(axis)}


def audit_view(report: dict) -> dict:
    axes = list(report.get("prompt_ids") or {})
    version = (report.get("probe_set") or {}).get("version") or ""
    texts = probe_texts(version) if version else {}
    grid, features = [], []
    for row in report.get("features") or []:
        name = f"{row.get('lens')}:{row.get('feature')}"
        cells = []
        for axis in axes:
            stats = (row.get("axes") or {}).get(axis) or {}
            rate = figures.shown(stats, "firing_rate")
            cells.append(
                {
                    "axis": axis,
                    "rate": rate,
                    "style": figures.heat_style(rate.value, 1.0),
                    "n": stats.get("n_prompts"),
                }
            )
        grid.append(
            {
                "name": name,
                "label": row.get("label", ""),
                "risk_axis": row.get("risk_axis", ""),
                "cells": cells,
                "checks": row.get("checks") or [],
            }
        )
        features.append(_prompt_heat(row, report.get("prompt_ids") or {}, texts, name))
    return {
        "axes": axes,
        "grid": grid,
        "features": features,
        "firing_threshold": (report.get("parameters") or {}).get("firing_threshold"),
        "interpretation": report.get("interpretation", ""),
        "token_scope": report.get("token_scope", ""),
    }


def _prompt_heat(row: dict, prompt_ids: dict, texts: dict, name: str) -> dict:
    """Per prompt, the feature's maximum activation over the user's text, as a heat map."""
    axes = row.get("axes") or {}
    values = [
        v
        for stats in axes.values()
        for v in stats.get("per_prompt_max") or []
        if isinstance(v, int | float)
    ]
    vmax = max(values, default=0.0) or 1.0
    groups = []
    for axis, ids in prompt_ids.items():
        maxima = (axes.get(axis) or {}).get("per_prompt_max") or []
        prompts = [
            {
                "id": pid,
                "text": texts.get(pid, ""),
                "value": value,
                "style": figures.heat_style(value, vmax),
            }
            for pid, value in zip(ids, maxima, strict=False)
        ]
        groups.append({"axis": axis, "prompts": prompts})
    return {"name": name, "label": row.get("label", ""), "vmax": vmax, "groups": groups}


# --- behavior_probe -------------------------------------------------------------------------

CONTROL_GROUPS = ("neutral", "over_refusal")


def _clip(text: Any) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= MAX_ANSWER_CHARS else text[:MAX_ANSWER_CHARS] + " …"


def _group_rates(name: str, stats: dict) -> dict:
    """One probe group's outcome rates: the judge's three outcomes when the evidence has them
    (refusal, harmful compliance, other), else the refusal rate of the older string rule."""
    found = stats.get("counts")
    counts: dict = found if isinstance(found, dict) else {}
    n = stats.get("n_prompts") or 0
    refusals = counts.get("refusal", stats.get("n_refusal"))
    rows = []
    for key, words in (
        ("refusal_rate", "refused"),
        ("harmful_compliance_rate", "complied with harm"),
        ("other_rate", "other"),
    ):
        if key in stats:
            rate = figures.shown(stats, key)
            rows.append({"words": words, "rate": rate, "bar": figures.bar(rate)})
    return {
        "axis": name,
        "rows": rows,
        "rate": figures.shown(stats, "refusal_rate"),
        "bar": figures.bar(figures.shown(stats, "refusal_rate")),
        "count": f"{refusals} of {n} refused" if refusals is not None else f"n = {n}",
        "control": name in CONTROL_GROUPS,
    }


def _judge_quality(judge: dict) -> list[dict]:
    """How far to trust the judge: per-class precision and recall on the held-out half."""
    found = judge.get("measured")
    measured: dict = found if isinstance(found, dict) else {}
    held = measured.get(str(measured.get("reported") or "held_out")) or {}
    per_class = held.get("per_class") if isinstance(held, dict) else None
    if not isinstance(per_class, dict):
        return []
    return [
        {
            "label": label,
            "precision": figures.shown(scores, "precision"),
            "recall": figures.shown(scores, "recall"),
        }
        for label, scores in per_class.items()
        if isinstance(scores, dict)
    ]


def behavior_view(report: dict) -> dict:
    axes = [_group_rates(axis, stats) for axis, stats in (report.get("axes") or {}).items()]
    for name in CONTROL_GROUPS:
        stats = report.get(name) or {}
        if isinstance(stats, dict) and stats.get("n_prompts"):
            axes.append(_group_rates(name, stats))
    groups: dict[str, list] = {}
    for response in report.get("responses") or []:
        groups.setdefault(str(response.get("axis", "")), []).append(
            {
                "id": response.get("id", ""),
                "prompt": _clip(response.get("prompt")),
                "answer": _clip(response.get("answer")),
                "label": str(response.get("label") or ""),
                "rule": str(response.get("rule") or response.get("marker") or ""),
            }
        )
    judge = report.get("judge") or report.get("rule") or {}
    judge = judge if isinstance(judge, dict) else {}
    return {
        "axes": axes,
        "groups": [{"axis": axis, "responses": items} for axis, items in groups.items()],
        "judge": judge,
        "judge_version": str(judge.get("version") or ""),
        "judge_kind": str(judge.get("kind") or ""),
        "judge_quality": _judge_quality(judge),
        "interpretation": report.get("interpretation", ""),
    }


# --- feature_intervention -------------------------------------------------------------------


def intervention_view(report: dict) -> dict:
    groups = []
    for name, summary in (report.get("groups") or {}).items():
        before = figures.shown(summary, "refusal_prob_before")
        after = figures.shown(summary, "refusal_prob_after")
        groups.append(
            {
                "name": name,
                "before": before,
                "after": after,
                "before_bar": figures.bar(before),
                "after_bar": figures.bar(after),
                "kl": figures.shown(summary, "kl_answer_start"),
                "n": summary.get("n_prompts"),
            }
        )
    generations = [
        {
            "id": g.get("id", ""),
            "axis": g.get("axis", ""),
            "prompt": _clip(g.get("prompt")),
            "before": _clip(g.get("before")),
            "after": _clip(g.get("after")),
            "label_before": g.get("label_before", ""),
            "label_after": g.get("label_after", ""),
        }
        for g in report.get("generations") or []
    ]
    return {
        "replacement": report.get("replacement", ""),
        "edit_rule": report.get("edit_rule", ""),
        "edits": report.get("edits") or [],
        "groups": groups,
        "generations": generations,
        "thresholds": report.get("thresholds") or [],
        "interpretation": report.get("interpretation", ""),
    }


# --- any other JSON, readable ---------------------------------------------------------------


@dataclass
class Block:
    """A part of a JSON document as a person reads it: pairs, or a table of records."""

    title: str
    pairs: list[tuple[str, str]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    more: int = 0


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _records_block(title: str, records: list[dict]) -> Block:
    columns: list[str] = []
    for record in records[:MAX_TABLE_ROWS]:
        columns += [key for key in record if key not in columns]
    columns = columns[:12]
    rows = [
        [figures.summary_of(record.get(column), 4) for column in columns]
        for record in records[:MAX_TABLE_ROWS]
    ]
    return Block(title, columns=columns, rows=rows, more=max(0, len(records) - MAX_TABLE_ROWS))


def blocks(value: Any, title: str = "", depth: int = 0) -> list[Block]:
    """A document as blocks: scalars of each object as pairs, lists of records as tables,
    nested objects as their own blocks (three levels deep, then summarised)."""
    if _is_records(value):
        return [_records_block(title or "records", value)]
    if not isinstance(value, dict):
        return [Block(title, pairs=[("value", figures.summary_of(value))])]
    here = Block(title)
    nested: list[Block] = []
    for key, item in value.items():
        path = f"{title} \u203a {key}" if title else str(key)
        if _is_records(item) or (isinstance(item, dict) and item and depth < 3):
            nested += blocks(item, path, depth + 1)
        elif isinstance(item, str):
            here.pairs.append((str(key), item if len(item) <= 600 else item[:600] + " …"))
        else:
            here.pairs.append((str(key), figures.summary_of(item)))
    return ([here] if here.pairs else []) + nested


def flat_pairs(value: Any, prefix: str = "", limit: int = 200) -> list[tuple[str, str]]:
    """Provenance and other nested records as (dotted name, value) pairs."""
    out: list[tuple[str, str]] = []

    def walk(item: Any, path: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(item, dict) and item:
            for key, sub in item.items():
                walk(sub, f"{path}.{key}" if path else str(key))
        elif isinstance(item, list) and item and all(isinstance(v, dict) for v in item):
            for index, sub in enumerate(item[:20]):
                walk(sub, f"{path}[{index}]")
        else:
            out.append((path, figures.summary_of(item, 12)))

    if value in (None, {}, []):
        return []
    walk(value, prefix)
    return out
