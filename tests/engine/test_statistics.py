"""Intervals and p-values checked against worked examples and against their definitions."""

import math

import numpy as np
import pytest

from interp_jobs.checks import bars
from interp_jobs.engine.analysis import statistics as st


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (0, 12, 0.0, 0.2425),
        (13, 24, 0.3508, 0.7211),
        (12, 12, 0.7575, 1.0),
        (50, 100, 0.4038, 0.5962),
    ],
)
def test_wilson_intervals_match_worked_examples(k, n, low, high):
    got = st.rate(k, n)
    assert got.lower95 == pytest.approx(low, abs=1e-3)
    assert got.upper95 == pytest.approx(high, abs=1e-3)
    assert (got.n, got.method) == (n, "wilson")


def test_wilson_covers_about_95_percent():
    rng = np.random.default_rng(0)
    p, n, covered = 0.3, 40, 0
    for _ in range(2000):
        k = rng.binomial(n, p)
        low, high = st.wilson(k, n)
        covered += low <= p <= high
    assert 0.93 <= covered / 2000 <= 0.97


def test_auroc_is_the_mann_whitney_probability_with_ties_halved():
    pos, neg = [3, 2, 2], [2, 1]
    pairs = [(a > b) + 0.5 * (a == b) for a in pos for b in neg]
    assert st.auroc(pos, neg) == pytest.approx(sum(pairs) / len(pairs))


def test_a_clear_separation_has_a_tight_interval_and_a_tiny_p_value():
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(2, 1, 60), rng.normal(0, 1, 60)
    estimate = st.auroc_estimate(pos, neg, seed=0)
    assert estimate.lower95 > 0.8
    assert estimate.lower95 <= estimate.value <= estimate.upper95
    test = st.permutation_p_value(st.auroc, pos, neg, n_perm=1000, seed=0)
    assert test["n_permutations"] == 1000
    assert test["p_value"] == pytest.approx(1 / 1001)


def test_no_difference_gives_an_interval_around_one_half_and_a_large_p_value():
    rng = np.random.default_rng(2)
    pos, neg = rng.normal(0, 1, 50), rng.normal(0, 1, 50)
    estimate = st.auroc_estimate(pos, neg, seed=0)
    assert estimate.lower95 < 0.5 < estimate.upper95
    assert st.permutation_p_value(st.auroc, pos, neg, seed=0)["p_value"] > 0.05


def test_small_groups_get_the_exact_permutation_distribution():
    test = st.permutation_p_value(st.auroc, [5, 6, 7], [1, 2, 3], seed=0)
    assert test["exact"]
    assert test["n_permutations"] == math.comb(6, 3)
    assert test["p_value"] == pytest.approx(1 / 20)


def test_estimates_are_deterministic_for_a_seed():
    a = st.cohens_d_estimate([1, 2, 3, 4, 5], [2, 3, 4, 5, 9], seed=3)
    assert a == st.cohens_d_estimate([1, 2, 3, 4, 5], [2, 3, 4, 5, 9], seed=3)


def test_spearman_of_a_monotone_relation_is_one():
    assert st.spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)


def test_a_bar_on_the_lower_bound_is_stricter_than_on_the_value():
    estimate = st.rate(11, 12)  # 0.92, but [0.65, 0.99]
    assert bars.at_least(estimate, 0.9)
    assert not bars.at_least(estimate, bars.Bar(at=0.9, on="lower95"))
    assert bars.describe("refusal_rate", bars.Bar(at=0.9, on="lower95"), ">=") == (
        "refusal_rate.lower95 >= 0.9"
    )


def test_a_rank_p_value_counts_the_draws_at_least_as_large_plus_one():
    assert st.rank_p_value(5.0, [1.0] * 19)["p_value"] == pytest.approx(0.05)
    assert st.rank_p_value(5.0, [1.0] * 18 + [5.0])["p_value"] == pytest.approx(0.10)
    assert st.rank_p_value(0.0, [1.0] * 19)["p_value"] == 1.0
    # with 9 draws even the largest statistic cannot reach 0.05
    assert st.rank_p_value(1e9, [0.0] * 9)["p_value"] == pytest.approx(0.1)


def test_a_paired_rate_difference_matches_newcombes_worked_example():
    """Newcombe (1998), Statistics in Medicine 17:2635, method 10 on 36 / 12 / 2 / 0 pairs."""
    after = [True] * 36 + [True] * 12 + [False] * 2
    before = [True] * 36 + [False] * 12 + [True] * 2
    estimate = st.paired_rate_difference(after, before)
    assert estimate.value == pytest.approx(0.2)
    assert (estimate.lower95, estimate.upper95) == pytest.approx((0.0569, 0.3404), abs=1e-4)


def test_no_change_in_a_few_pairs_is_not_an_interval_of_zero_width():
    """A bootstrap of eight unchanged pairs gives 0 [0, 0]; eight pairs cannot rule out a
    change of a third either way."""
    estimate = st.paired_rate_difference([False] * 8, [False] * 8)
    assert estimate.value == 0
    assert estimate.lower95 < -0.3
    assert estimate.upper95 > 0.3
