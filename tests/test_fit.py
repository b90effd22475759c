"""Training's run statistics: numbers worked by hand."""

from __future__ import annotations

import math

import pytest

from gradguard.training.fit import host_global_norm, weight_growth


def test_weight_growth_is_the_largest_epoch_norm_over_the_initial_one():
    assert weight_growth(20.0, [22.0, 25.0, 23.0]) == 1.25
    assert weight_growth(20.0, []) == 1.0  # no epoch finished
    assert weight_growth(19.0, [1.12e9, 1.12e9]) == pytest.approx(5.9e7, rel=1e-2)
    assert weight_growth(20.0, [21.0, math.inf]) == math.inf
    assert weight_growth(20.0, [21.0, math.nan, 22.0]) == math.inf  # NaN anywhere


def test_host_global_norm_is_the_float64_norm_of_all_variables_together():
    # sqrt(3^2 + 4^2 + 12^2) = 13, the float32 values summed in float64.
    assert host_global_norm([[3.0, 4.0], [[12.0]]]) == 13.0
    assert host_global_norm([]) == 0.0
