"""Numbers as people read them: estimates with their intervals, bars and heat-map colours that
pass WCAG AA contrast, key figures per check kind, states and verdicts in words.

Pure functions of values; templates only place what these return.
"""

import math
from dataclasses import dataclass
from typing import Any

# Check metrics carry estimates as {"value", "lower95", "upper95", "n", "method"}
# (interp_jobs.engine.analysis.statistics.Estimate); older ones carry a bare number, sometimes
# with a sibling "<key>_ci95" pair.
INTERVAL_SUFFIXES = ("_ci95", "_ci", "_interval")

KEY_FIGURES: dict[str, tuple[tuple[str, str], ...]] = {
    "weights_fingerprint": (("mismatched", "files differing from the registered digests"),),
    "sae_fidelity": (
        ("explained_variance", "explained variance"),
        ("fraction_loss_recovered", "loss recovered"),
    ),
    "feature_discovery": (("best_auroc", "best AUROC"), ("n_features_found", "features found")),
    "feature_activation_audit": (
        ("max_neutral_firing_rate", "worst firing rate on neutral prompts"),
        ("min_own_axis_firing_rate", "lowest firing rate on own axis"),
    ),
    "circuit_trace": (
        ("rank_correlation", "rank agreement with interventions"),
        ("rank_agreement", "rank agreement with ablations"),
        ("replacement_score", "replacement score"),
        ("error_share", "error share"),
    ),
    "feature_intervention": (
        ("control_kl_answer_start", "KL on controls (nats)"),
        ("risk_refusal_prob_after", "refusal probability after the edit"),
    ),
    "behavior_probe": (
        ("overall_refusal_rate", "refusal rate on risk prompts"),
        ("neutral_refusal_rate", "refusal rate on neutral prompts"),
    ),
    "version_drift": (("max_abs_firing_rate_change", "largest firing-rate change"),),
}

STATES: dict[str, tuple[str, str]] = {
    "draft": ("Draft", "not opened yet"),
    "checking": ("Checking", "checks are still running"),
    "in_review": ("In review", "checks finished; waiting for decisions"),
    "approved": ("Approved", "the gate answers approved"),
    "rejected": ("Rejected", "a reviewer's rejection stands"),
    "withdrawn": ("Withdrawn", "the submitter or an admin withdrew it"),
}

VERDICTS: dict[str, str] = {
    "pass": "Pass",
    "fail": "Fail",
    "inconclusive": "Inconclusive",
    "": "No verdict yet",
}

EVIDENCE_KINDS: dict[str, str] = {
    "observed": "Observed: activations or outputs measured as they are; nothing was edited.",
    "attribution": "Attribution estimate: a linear approximation of influence (gradient x "
    "activation or direct effects in a replacement model), not a measured causal effect.",
    "intervention": "Intervention result: a measured causal effect under the stated "
    "replacement (zero, mean, clamp or steer).",
    "integrity": "Integrity measurement: file hashes compared with the recorded digests.",
}


def number(value: Any, digits: int = 4) -> str:
    """A value as text: ints with thousands separators, floats to `digits` significant digits,
    None as a dash, booleans as yes / no."""
    if value is None:
        return "\u2013"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "not a number"
        if math.isinf(value):
            return "\u221e" if value > 0 else "\u2212\u221e"
        return f"{value:.{digits}g}"
    return str(value)


def percent(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return number(value)
    return f"{100 * value:.3g} %"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Shown:
    """A measured value as shown: the number, its 95 % interval when it has one, and its n."""

    value: float | None
    low: float | None = None
    high: float | None = None
    n: int | None = None
    method: str = ""
    percent: bool = False  # a rate or probability: shown as a percentage

    def _format(self, value: float | None) -> str:
        return percent(value) if self.percent and value is not None else number(value)

    @property
    def text(self) -> str:
        return self._format(self.value)

    @property
    def interval(self) -> str:
        if self.low is None or self.high is None:
            return ""
        return f"95 % CI [{self._format(self.low)}, {self._format(self.high)}]"

    @property
    def n_text(self) -> str:
        return "" if self.n is None else f"n = {self.n:,}"


def _bounds(found: Any) -> tuple[float, float] | None:
    if isinstance(found, dict):
        found = [
            found.get("lower95", found.get("low", found.get("lower"))),
            found.get("upper95", found.get("high", found.get("upper"))),
        ]
    if isinstance(found, list | tuple) and len(found) == 2 and all(map(_is_number, found)):
        return float(found[0]), float(found[1])
    return None


PROPORTION_WORDS = ("rate", "_prob", "precision", "recall", "accuracy", "share", "fraction")


def is_rate(key: str) -> bool:
    """Rates, shares and probabilities (shown as percentages) by their names in the evidence."""
    return (
        any(word in key for word in PROPORTION_WORDS)
        or key.endswith("prob")
        or key == "sign_agreement"
    )


def shown(metrics: dict, key: str) -> Shown:
    """metrics[key] as a Shown: an Estimate dict, or a number with a sibling interval."""
    raw = metrics.get(key)
    if isinstance(raw, dict):
        value = raw.get("value", raw.get("estimate"))
        bounds = _bounds(raw)
        n = raw.get("n")
        method = str(raw.get("method") or "")
    else:
        value, n, method = raw, None, ""
        bounds = None
        for suffix in INTERVAL_SUFFIXES:
            bounds = bounds or _bounds(metrics.get(key + suffix))
    measured = float(value) if isinstance(value, int | float) and _is_number(value) else None
    low, high = bounds if bounds else (None, None)
    return Shown(
        measured, low, high, n if isinstance(n, int) else None, method, percent=is_rate(key)
    )


@dataclass(frozen=True)
class KeyFigure:
    label: str
    value: Shown


def key_figures(kind: str, metrics: dict, limit: int = 2) -> list[KeyFigure]:
    """The numbers a reviewer looks at first for a check kind (those the run reported)."""
    found = [
        KeyFigure(label, shown(metrics, key))
        for key, label in KEY_FIGURES.get(kind, ())
        if key in metrics and shown(metrics, key).value is not None
    ]
    if not found:
        found = [
            KeyFigure(key.replace("_", " "), shown(metrics, key))
            for key, raw in metrics.items()
            if (_is_number(raw) or (isinstance(raw, dict) and "value" in raw))
            and not key.endswith(INTERVAL_SUFFIXES)
        ]
    return found[:limit]


@dataclass(frozen=True)
class MetricRow:
    name: str
    value: str
    interval: str
    n: str


def metric_rows(metrics: dict, limit: int = 60) -> list[MetricRow]:
    """Every metric as a row (nested dicts one level deep, long lists cut short)."""
    rows = []
    for key, raw in metrics.items():
        if key.endswith(INTERVAL_SUFFIXES):
            continue
        if isinstance(raw, dict) and "value" not in raw and "estimate" not in raw:
            for sub in raw:
                rows.append(_row(f"{key} · {sub}", raw, sub))
        else:
            rows.append(_row(key, metrics, key))
    return rows[:limit]


def _row(name: str, container: dict, key: str) -> MetricRow:
    raw = container.get(key)
    if isinstance(raw, list):
        text = ", ".join(number(item) for item in raw[:8]) + (" …" if len(raw) > 8 else "")
        return MetricRow(name.replace("_", " "), text, "", "")
    if isinstance(raw, dict) and "value" not in raw and "estimate" not in raw:
        return MetricRow(name.replace("_", " "), summary_of(raw), "", "")
    value = shown(container, key)
    text = value.text if value.value is not None or raw is None else number(raw)
    return MetricRow(name.replace("_", " "), text, value.interval, value.n_text)


def summary_of(value: Any, limit: int = 6) -> str:
    """A short one-line text for a nested value (never the raw JSON)."""
    if isinstance(value, dict):
        parts = [f"{k}: {summary_of(v, 3)}" for k, v in list(value.items())[:limit]]
        return "; ".join(parts) + (" …" if len(value) > limit else "")
    if isinstance(value, list):
        parts = [summary_of(v, 3) for v in value[:limit]]
        return ", ".join(parts) + (" …" if len(value) > limit else "")
    return number(value)


# --- bars and colours ----------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """A horizontal bar on a 0..scale axis, in percent of the track (CSS widths)."""

    value: float
    width: float
    low: float | None = None
    high: float | None = None

    @property
    def whisker_left(self) -> float | None:
        return self.low

    @property
    def whisker_width(self) -> float | None:
        if self.low is None or self.high is None:
            return None
        return max(0.0, self.high - self.low)


def _clip(value: float) -> float:
    return round(min(100.0, max(0.0, value)), 2)


def bar(value: Shown | float | None, scale: float = 1.0) -> Bar | None:
    """A bar for a value on [0, scale] (rates, AUROC, probabilities), with its interval."""
    item = value if isinstance(value, Shown) else Shown(value)
    if item.value is None or scale <= 0 or not math.isfinite(item.value):
        return None
    low = _clip(100 * item.low / scale) if item.low is not None else None
    high = _clip(100 * item.high / scale) if item.high is not None else None
    return Bar(item.value, _clip(100 * item.value / scale), low, high)


_BLUE = (8, 48, 107)  # positive / activation
_RED = (103, 0, 13)  # negative


def _luminance(rgb: tuple[int, int, int]) -> float:
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def heat_colours(value: float, vmax: float) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(background, text) for a value on a white-to-dark scale (blue for positive, red for
    negative); the text colour is whichever of black or white contrasts more (always >= 4.5)."""
    if not vmax or not math.isfinite(value) or not math.isfinite(vmax):
        return (255, 255, 255), (0, 0, 0)
    strength = min(1.0, abs(value) / abs(vmax))
    dark = _BLUE if value >= 0 else _RED
    background = tuple(round(255 + (d - 255) * strength) for d in dark)
    rgb = (background[0], background[1], background[2])
    text = (0, 0, 0) if contrast(rgb, (0, 0, 0)) >= contrast(rgb, (255, 255, 255)) else (255,) * 3
    return rgb, (text[0], text[1], text[2])


def heat_style(value: float | None, vmax: float) -> str:
    """An inline style for a heat-map cell (style-src allows inline styles; no script)."""
    if value is None:
        return ""
    background, text = heat_colours(float(value), vmax)
    return "background-color:rgb({},{},{});color:rgb({},{},{})".format(*background, *text)
