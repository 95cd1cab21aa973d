"""Estimates with their uncertainty: every rate, AUROC, effect size and correlation a check
reports carries its n and a 95 % interval, and "better than chance" carries a p-value.

One shape for all of them, `Estimate`, so evidence, policies (thresholds on an interval bound)
and the dossier read them the same way:

    {"value": 0.54, "lower95": 0.35, "upper95": 0.72, "n": 24, "method": "wilson"}

Methods:
- rates: Wilson score interval (good coverage at small n and at 0 or 1, unlike the normal
  approximation); 0 of 12 is [0, 0.24].
- AUROC, Cohen's d, differences, correlations: percentile bootstrap over the observations
  (stratified by group for two-group statistics), seeded, `n_boot` resamples (default 2000).
- "better than chance": a permutation test with at least 1000 label shuffles (or the exact
  distribution when it has fewer arrangements), p = (1 + #{null >= observed}) / (1 + n_perm).

Pure numpy/torch on CPU; deterministic for a given seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

import numpy as np

Z95 = 1.959963984540054
DEFAULT_BOOTSTRAP = 2000
DEFAULT_PERMUTATIONS = 2000


@dataclass(frozen=True)
class Estimate:
    value: float
    lower95: float
    upper95: float
    n: int
    method: str

    def as_dict(self) -> dict:
        return asdict(self)

    def bound(self, on: str) -> float:
        """The value, or one end of the interval ("value", "lower95", "upper95")."""
        return {"value": self.value, "lower95": self.lower95, "upper95": self.upper95}[on]


# --- rates ----------------------------------------------------------------------------------


def wilson(successes: int, n: int) -> tuple[float, float]:
    """The Wilson score 95 % interval of a proportion; (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    if successes == 0:  # the closed form gives 0 up to rounding (2.8e-17); say 0
        return 0.0, wilson_upper_of_zero(n)
    p = successes / n
    denominator = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_upper_of_zero(n: int) -> float:
    return (Z95**2 / n) / (1 + Z95**2 / n)


def rate(successes: int, n: int) -> Estimate:
    low, high = wilson(successes, n)
    value = successes / n if n else float("nan")
    return Estimate(value, low, high, n, "wilson")


def rate_of(flags: Sequence[bool]) -> Estimate:
    return rate(int(sum(bool(f) for f in flags)), len(flags))


# --- two-group statistics -------------------------------------------------------------------


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting one half (Mann-Whitney)."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    if not len(positive) or not len(negative):
        return float("nan")
    scores = np.concatenate([positive, negative])
    ranks = _average_ranks(scores)
    rank_sum = ranks[: len(positive)].sum()
    u = rank_sum - len(positive) * (len(positive) + 1) / 2
    return float(u / (len(positive) * len(negative)))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), float)
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):  # ties share their average rank
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def cohens_d(positive: np.ndarray, negative: np.ndarray) -> float:
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    n1, n2 = len(positive), len(negative)
    if n1 < 2 or n2 < 2:
        return float("nan")
    pooled = ((n1 - 1) * positive.var(ddof=1) + (n2 - 1) * negative.var(ddof=1)) / (n1 + n2 - 2)
    difference = positive.mean() - negative.mean()
    if pooled == 0:
        return 0.0 if difference == 0 else math.copysign(math.inf, difference)
    return float(difference / math.sqrt(pooled))


def two_group(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    positive: Any,
    negative: Any,
    *,
    method: str,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> Estimate:
    """A two-group statistic with a stratified percentile-bootstrap 95 % interval."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    value = statistic(positive, negative)
    rng = np.random.default_rng(seed)
    draws = [
        statistic(
            positive[rng.integers(0, len(positive), len(positive))],
            negative[rng.integers(0, len(negative), len(negative))],
        )
        for _ in range(n_boot)
    ]
    low, high = _percentiles(draws)
    return Estimate(value, low, high, len(positive) + len(negative), f"bootstrap-{method}")


def auroc_estimate(positive, negative, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0):
    return two_group(auroc, positive, negative, method="auroc", n_boot=n_boot, seed=seed)


def cohens_d_estimate(positive, negative, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0):
    return two_group(cohens_d, positive, negative, method="cohens-d", n_boot=n_boot, seed=seed)


def rate_difference(a_hits: Any, b_hits: Any, *, seed: int = 0) -> Estimate:
    """rate(a) - rate(b), bootstrap interval (e.g. firing on the own axis minus on neutral)."""
    return two_group(
        lambda a, b: float(a.mean() - b.mean()) if len(a) and len(b) else float("nan"),
        [float(x) for x in a_hits],
        [float(x) for x in b_hits],
        method="rate-difference",
        seed=seed,
    )


def paired_rate_difference(after: Sequence[bool], before: Sequence[bool]) -> Estimate:
    """rate(after) - rate(before) on the same items, with Newcombe's (1998) method 10 interval
    (Wilson intervals of both rates, combined with the pairs' correlation). A bootstrap of the
    paired differences collapses to [0, 0] when no item changed (0 of 8 changed is not "no
    change is possible"); this interval stays honest at small n."""
    pairs = list(zip(after, before, strict=True))
    n = len(pairs)
    if not n:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, "newcombe-paired")
    both = sum(1 for a, b in pairs if a and b)
    gained = sum(1 for a, b in pairs if a and not b)
    lost = sum(1 for a, b in pairs if b and not a)
    neither = n - both - gained - lost
    p1, p2 = (both + gained) / n, (both + lost) / n
    l1, u1 = wilson(both + gained, n)
    l2, u2 = wilson(both + lost, n)
    spread = (both + gained) * (lost + neither) * (both + lost) * (gained + neither)
    phi = (both * neither - gained * lost) / math.sqrt(spread) if spread else 0.0
    theta = p1 - p2
    low = theta - math.sqrt(
        max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0)
    )
    high = theta + math.sqrt(
        max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0)
    )
    return Estimate(theta, max(low, -1.0), min(high, 1.0), n, "newcombe-paired")


def _percentiles(draws: Sequence[float]) -> tuple[float, float]:
    finite = np.asarray([d for d in draws if math.isfinite(d)], float)
    if not len(finite):
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


# --- paired statistics ----------------------------------------------------------------------


def spearman(x: Any, y: Any) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3:
        return float("nan")
    rx, ry = _average_ranks(x), _average_ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def paired(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    x: Any,
    y: Any,
    *,
    method: str,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> Estimate:
    """A statistic of paired observations with a percentile-bootstrap 95 % interval (pairs
    resampled together)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        rows = rng.integers(0, len(x), len(x))
        draws.append(statistic(x[rows], y[rows]))
    low, high = _percentiles(draws)
    return Estimate(statistic(x, y), low, high, len(x), f"bootstrap-{method}")


def spearman_estimate(x, y, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> Estimate:
    return paired(spearman, x, y, method="spearman", n_boot=n_boot, seed=seed)


def mean_estimate(values: Any, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0):
    """A mean with a percentile-bootstrap 95 % interval."""
    values = np.asarray(values, float)
    return paired(
        lambda a, _b: float(a.mean()) if len(a) else float("nan"),
        values,
        values,
        method="mean",
        n_boot=n_boot,
        seed=seed,
    )


# --- better than chance ---------------------------------------------------------------------


def permutation_p_value(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    positive: Any,
    negative: Any,
    *,
    n_perm: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> dict:
    """One-sided p-value that statistic(positive, negative) is this large by chance: labels
    shuffled n_perm times (at least 1000), or every arrangement when there are fewer."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    pooled, k = np.concatenate([positive, negative]), len(positive)
    observed = statistic(positive, negative)
    null = _null_distribution(statistic, pooled, k, max(n_perm, 1000), seed)
    exceed = int(np.sum(np.asarray(null) >= observed - 1e-12))
    exact = len(null) == math.comb(len(pooled), k)
    p = exceed / len(null) if exact else (1 + exceed) / (1 + len(null))
    return {
        "statistic": observed,
        "p_value": p,
        "n_permutations": len(null),
        "exact": exact,
        "null_mean": float(np.mean(null)),
    }


def rank_p_value(observed: float, null: Sequence[float]) -> dict:
    """One-sided Monte Carlo p-value that ``observed`` is this large by chance, given values of
    the same statistic under ``len(null)`` random draws: (1 + #{null >= observed}) / (1 + n).
    Its smallest value is 1 / (n + 1), so a bar of 0.05 needs at least 19 draws."""
    values = np.asarray(list(null), float)
    exceed = int(np.sum(values >= observed - 1e-12))
    return {
        "statistic": float(observed),
        "p_value": (1 + exceed) / (1 + len(values)),
        "n_draws": len(values),
        "null_median": float(np.median(values)) if len(values) else None,
        "null_max": float(values.max()) if len(values) else None,
    }


def _null_distribution(statistic, pooled: np.ndarray, k: int, n_perm: int, seed: int) -> list:
    if math.comb(len(pooled), k) <= n_perm:  # few enough arrangements: enumerate them
        index = np.arange(len(pooled))
        return [
            statistic(pooled[list(chosen)], pooled[np.setdiff1d(index, chosen)])
            for chosen in combinations(range(len(pooled)), k)
        ]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_perm):
        shuffled = rng.permutation(pooled)
        out.append(statistic(shuffled[:k], shuffled[k:]))
    return out
