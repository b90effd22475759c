"""Statistics over paired seeds: numbers worked by hand, and the bootstrap's invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradguard.evaluation import stats
from gradguard.evaluation.stats import (
    failure_share,
    iqm,
    paired_difference,
    probability_of_improvement,
    seeds_to_decide,
)


def test_clopper_pearson_against_its_closed_forms():
    # 0 of n: the upper bound solves (1 - p)^n = 0.025, so p = 1 - 0.025^(1/n).
    none = failure_share(0, 5)
    assert (none.estimate, none.low) == (0.0, 0.0)
    assert none.high == pytest.approx(1 - 0.025 ** (1 / 5), abs=1e-9)  # 0.52182
    # n of n, by symmetry: the lower bound is 0.025^(1/n).
    every = failure_share(5, 5)
    assert every.low == pytest.approx(0.025 ** (1 / 5), abs=1e-9) and every.high == 1.0
    # 1 of 10, the textbook value (Clopper and Pearson 1934 tables): [0.0025, 0.4450].
    one = failure_share(1, 10)
    assert (round(one.low, 4), round(one.high, 4)) == (0.0025, 0.4450)
    with pytest.raises(ValueError, match="failures=6, runs=5"):
        failure_share(6, 5)


def test_interquartile_mean_is_the_mean_of_the_middle_half():
    assert iqm([1, 2, 3, 4, 5, 6, 7, 8]) == 4.5  # (3 + 4 + 5 + 6) / 4
    assert iqm([1, 2, 3, 4, 100]) == 3.0  # one cut each side of five: (2 + 3 + 4) / 3
    assert iqm([0.9, 0.9]) == 0.9


def test_a_constant_difference_is_its_own_interval():
    found = paired_difference([0.95, 0.90, 0.85], [0.94, 0.89, 0.84])
    assert found.low == found.estimate == found.high == pytest.approx(0.01)


def test_the_paired_bootstrap_is_seeded_and_bounded_by_the_differences():
    first, second = [0.9, 0.8, 0.95, 0.85, 0.9], [0.8, 0.8, 0.9, 0.8, 0.9]
    found = paired_difference(first, second)  # differences 0.1, 0, 0.05, 0.05, 0
    assert found.estimate == pytest.approx(0.04)
    # Every resampled mean lies between the smallest and the largest difference.
    assert 0.0 <= found.low < found.estimate < found.high <= 0.1
    assert paired_difference(first, second) == found  # the fixed seed: the same bytes
    assert paired_difference(second, first).estimate == pytest.approx(-0.04)
    wider = paired_difference(first, second, confidence=0.99)
    assert wider.low <= found.low and wider.high >= found.high
    with pytest.raises(ValueError, match="lengths 2 and 3"):
        paired_difference([1.0, 2.0], [1.0, 2.0, 3.0])


def test_probability_of_improvement_counts_ties_half():
    # Pairs (1,1) tie, (1,0) (2,1) (2,0) greater: 3/4 + 1/8.
    assert probability_of_improvement([1, 2], [1, 0]) == 0.875
    assert probability_of_improvement([1, 1], [1, 1]) == 0.5
    assert probability_of_improvement([0, 0], [1, 1]) == 0.0


def test_seeds_to_decide_scales_the_half_width_as_one_over_root_n():
    # Differences 0.01 and 0.03: mean 0.02, sample std 0.01414, t(0.975, 1) = 12.706,
    # half-width 12.706 * 0.01414 / sqrt(2) = 0.1271; 2 * (0.1271 / 0.02)^2 = 80.7 -> 81.
    assert seeds_to_decide([0.01, 0.03], margin=0.0, seeds_now=2) == 81
    assert seeds_to_decide([0.01, 0.03], margin=0.02, seeds_now=2) is None  # on the margin
    # Already clear of the margin: one more seed at least, never fewer than now.
    assert seeds_to_decide([0.5, 0.5001, 0.4999], margin=0.0, seeds_now=3) == 4
    assert math.isclose(np.mean([0.01, 0.03]), 0.02)


def test_decide_places_the_interval_against_the_tolerance():
    # A constant difference is its own interval: -0.05 is beyond a tolerance of 0.01 ...
    beyond = stats.decide([0.90, 0.85, 0.80], [0.95, 0.90, 0.85], tolerance=0.01)
    assert beyond.outcome == "beyond" and beyond.interval.high == pytest.approx(-0.05)
    # ... and within one of 0.06; no difference at all is within any tolerance.
    assert stats.decide([0.90, 0.85, 0.80], [0.95, 0.90, 0.85], tolerance=0.06).outcome == "within"
    assert stats.decide([0.9, 0.8], [0.9, 0.8], tolerance=0.0).outcome == "within"
    # Differences -0.03, +0.01, -0.02, 0.00 (mean -0.01): resampled means reach from -0.03 to
    # +0.01, so a tolerance of 0.005 lies inside the interval: more seeds are needed.
    straddle = stats.decide([0.92, 0.96, 0.93, 0.95], [0.95, 0.95, 0.95, 0.95], tolerance=0.005)
    assert straddle.outcome == "straddles" and straddle.seeds == 4
    assert -0.03 <= straddle.interval.low < -0.005 <= straddle.interval.high <= 0.01
    assert straddle.seeds_to_decide > 4
