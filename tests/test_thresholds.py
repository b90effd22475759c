"""gradguard.functional.thresholds: AutoClip's and ZClip's bounds over known norms, by hand."""

from __future__ import annotations

import math

import pytest
from keras import ops

from gradguard.functional import thresholds
from gradguard.functional.thresholds import AutoClipState, ZScoreState


def _autoclip(norms, window, percentile):
    state = AutoClipState(ops.zeros((window,), "float32"), ops.convert_to_tensor(0, "int32"))
    bounds = []
    for norm in norms:
        threshold, state = thresholds.autoclip_threshold(
            state, ops.convert_to_tensor(norm, "float32"), percentile
        )
        bounds.append(float(threshold))
    return bounds


def test_autoclip_percentile_over_a_known_history():
    # History after each step: [4] -> 4; [4, 1] -> 1 + 0.5*3 = 2.5 (median);
    # [4, 1, 3] -> sorted [1, 3, 4], median 3; [4, 1, 3, 2] -> 2 + 0.5 = 2.5.
    assert _autoclip([4, 1, 3, 2], window=8, percentile=50) == pytest.approx([4, 2.5, 3, 2.5])
    # 10th percentile of [1, 2, 3, 4, 5]: position 0.1 * 4 = 0.4 -> 1 + 0.4 * (2 - 1) = 1.4.
    assert _autoclip([1, 2, 3, 4, 5], window=8, percentile=10)[-1] == pytest.approx(1.4)


def test_autoclip_window_forgets_old_norms():
    # Window 3, median. After [10, 10, 10, 1] the ring holds [1, 10, 10] -> 10; then
    # [1, 1, 10] -> 1 and [1, 1, 1] -> 1. A memory of all six would give median 5.5.
    assert _autoclip([10, 10, 10, 1, 1, 1], window=3, percentile=50) == pytest.approx(
        [10, 10, 10, 10, 1, 1]
    )
    assert _autoclip([10, 10, 10, 1, 1, 1], window=8, percentile=50)[-1] == pytest.approx(5.5)


def _zscore(norms, threshold=2.5, alpha=0.97, warmup=3):
    state = ZScoreState(
        *(
            ops.convert_to_tensor(v, d)
            for v, d in ((0, "int32"), (0.0, "float32"), (0.0, "float32"))
        )
    )
    out = []
    for norm in norms:
        bound, state = thresholds.zscore_threshold(
            state, ops.convert_to_tensor(norm, "float32"), threshold, alpha, warmup
        )
        out.append((float(bound), float(state.mean), float(state.var)))
    return out


def test_zscore_warmup_collects_mean_and_population_variance():
    steps = _zscore([1.0, 2.0, 3.0])
    assert all(math.isinf(bound) for bound, _, _ in steps)  # no clipping in warm-up
    assert steps[-1][1:] == pytest.approx((2.0, 2.0 / 3.0))  # mean 2, var ((1+0+1)/3)


def test_zscore_spike_gets_the_adaptive_bound_and_the_ema_absorbs_it():
    # After warm-up: mean 2, std sqrt(2/3). Norm 10: z = 8 / sqrt(2/3) = 9.798 > 2.5,
    # bound = mean + 2.5^2 * std / z = 2 + 6.25 * (2/3) / 8 = 2.520833.
    bound, mean, var = _zscore([1.0, 2.0, 3.0, 10.0])[-1]
    assert bound == pytest.approx(2.520833, rel=1e-5)
    # EMA of the clipped norm: 0.97 * 2 + 0.03 * 2.520833 = 2.015625;
    # var = 0.97 * 2/3 + 0.03 * (2.520833 - 2.015625)^2 = 0.654324.
    assert mean == pytest.approx(2.015625, rel=1e-5)
    assert var == pytest.approx(0.654324, rel=1e-5)


def test_zscore_ordinary_norm_is_not_clipped_but_updates_the_ema():
    # Norm 2.5: z = 0.5 / 0.8165 = 0.61 < 2.5 -> no bound; mean 0.97*2 + 0.03*2.5 = 2.015.
    bound, mean, _ = _zscore([1.0, 2.0, 3.0, 2.5])[-1]
    assert math.isinf(bound)
    assert mean == pytest.approx(2.015, rel=1e-6)
