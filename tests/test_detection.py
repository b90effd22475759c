"""spike_check on scripted sequences of norms, every band worked out by hand."""

from __future__ import annotations

import math

import pytest
from keras import ops

from gradguard.functional import detection
from gradguard.functional.detection import SpikeState


def spikes(norms, window=4, sigma=2.0, warmup_factor=None, factor=None):
    """Indices of the norms spike_check flags, and the final state."""
    state = SpikeState(ops.zeros((window,), "float32"), ops.convert_to_tensor(0, "int32"))
    flagged = []
    for i, norm in enumerate(norms):
        value = ops.convert_to_tensor(norm, "float32")
        is_spike, state = detection.spike_check(
            state, value, ops.isfinite(value), sigma, warmup_factor, factor
        )
        if bool(is_spike):
            flagged.append(i)
    return flagged, state


def test_a_level_shift_is_one_spike_then_passes():
    # Window 4, 2 sigma. [1, 1.1, 1, 1.1]: mean 1.05, std 0.05 -> bound 1.15: 2 is a spike,
    # but enters the window: [2, 1.1, 1, 1.1]: mean 1.3, var 0.66 / 4 = 0.165, std 0.4062
    # -> bound 2.112: the next 2 passes, and so do the rest ([2, 2, 1, 1.1]: bound 2.478;
    # [2, 2, 2, 1.1]: 2.554; [2, 2, 2, 2]: std 0 floored to 1e-6 -> 2.000002).
    flagged, _ = spikes([1.0, 1.1, 1.0, 1.1] + [2.0] * 20)
    assert flagged == [4]


def test_the_factor_keeps_a_late_bump_out_and_an_explosion_in():
    # Window 4, 6 sigma, factor 10. [0.5, 0.9, 0.5, 0.9]: mean 0.7, std 0.2 -> band 1.9.
    # 3.5 clears the band but is 5x the mean (< 10 x 0.7 = 7): no spike with the factor, a
    # spike without it (seed 42's late bump was 4.95x its window's mean).
    late = [0.5, 0.9, 0.5, 0.9, 3.5]
    assert spikes(late, sigma=6.0)[0] == [4]
    assert spikes(late, sigma=6.0, factor=10.0)[0] == []
    # 7.5 > 7 and > 1.9: a spike either way.
    assert spikes([0.5, 0.9, 0.5, 0.9, 7.5], sigma=6.0, factor=10.0)[0] == [4]
    # The bump still enters the window: [3.5, 0.9, 0.5, 0.9] has mean 1.45, std 1.19 -> band
    # 8.62, 10x mean 14.5; an explosion to 1e4 is flagged next.
    assert spikes([*late, 1e4], sigma=6.0, factor=10.0)[0] == [5]


def test_std_of_a_constant_window_is_floored_at_1e_minus_6():
    # [1, 1]: mean 1, std 0 -> floored: bound 1 + 6 * 1e-6 = 1.000006 (6 sigma).
    # 1.000001 (float32: 1.00000095) is under it; 1.00001 is above.
    assert spikes([1.0, 1.0, 1.000001], sigma=6.0)[0] == []
    assert spikes([1.0, 1.0, 1.00001], sigma=6.0)[0] == [2]
    assert detection.STD_FLOOR == 1e-6


def test_no_band_decision_before_the_window_is_half_full():
    # Window 8: the band decides from the 4th value on; 1000 at index 2 passes unjudged
    # without the warm-up rule.
    assert spikes([1.0, 1.0, 1000.0], window=8)[0] == []


def test_warmup_flags_a_value_100_times_the_median_so_far():
    # Window 128 (decides from 64 values on). Median of [0.5] is 0.5: 500 > 100 * 0.5.
    assert spikes([0.5, 500.0], window=128, warmup_factor=100.0)[0] == [1]
    # 40 < 50 passes; median of [0.5, 40] is 20.25, so 1000 < 2025 passes too.
    assert spikes([0.5, 40.0, 1000.0], window=128, warmup_factor=100.0)[0] == []
    # Off with None.
    assert spikes([0.5, 500.0], window=128)[0] == []


def test_warmup_lets_a_lasting_rise_pass_after_as_many_steps_as_came_before():
    # Three norms of 1, then 1000 for good. Medians: [1, 1, 1] -> 1 (flag),
    # [1, 1, 1, 1000] -> 1 (flag), [1, 1, 1, 1000, 1000] -> 1 (flag),
    # [1, 1, 1, 1000, 1000, 1000] -> 500.5: 1000 < 50050 passes, and so on.
    flagged, _ = spikes([1.0] * 3 + [1000.0] * 10, window=128, warmup_factor=100.0)
    assert flagged == [3, 4, 5]


def test_warmup_needs_a_positive_median():
    # A first gradient of exactly 0 (e.g. a zero-initialised net): nothing is 100 x 0.
    assert spikes([0.0, 5.0], window=128, warmup_factor=100.0)[0] == []


def test_non_finite_values_stay_out_of_the_window():
    # [1, NaN, 3, Inf]: only 1 and 3 are written; a NaN is never a spike (the guard
    # handles it on its own rule).
    flagged, state = spikes([1.0, math.nan, 3.0, math.inf])
    assert flagged == [] and int(state.count) == 2
    assert ops.convert_to_numpy(state.history).tolist()[:2] == pytest.approx([1.0, 3.0])


def collapses(losses, chance=1.0, level=0.9, learned=0.5, window=3):
    """Indices of the batch losses collapse_check flags, and the final state."""
    zero = ops.convert_to_tensor(0, "int32")
    state = detection.CollapseState(zero, zero)
    flagged = []
    for i, loss in enumerate(losses):
        value = ops.convert_to_tensor(loss, "float32")
        is_collapse, state = detection.collapse_check(state, value, chance, level, learned, window)
        if bool(is_collapse):
            flagged.append(i)
    return flagged, state


def test_a_collapse_is_window_steps_at_chance_after_the_run_learned():
    # Chance 1.0, level 0.9, learned 0.5, window 3. Steps 0-3 at chance before any loss
    # <= 0.5: not a collapse (the run has not learned yet). Step 4 (0.5) learns. Steps 5-6
    # at chance, 7 (0.8 < 0.9) breaks the run; 8, 9, 10 at chance: the event on 10. Then
    # 11-14 at chance again: no event until the run learns again (15: 0.3); 16-18: event on 18.
    losses = [1.0] * 4 + [0.5, 1.0, 0.95, 0.8] + [1.0, 2.0, 0.9] + [1.0] * 4 + [0.3] + [1.0] * 3
    flagged, state = collapses(losses)
    assert flagged == [10, 18]
    assert (int(state.count), int(state.learned)) == (0, 0)


def test_a_non_finite_or_unrecorded_loss_is_not_at_chance():
    # A NaN, or the +Inf a trainer leaves when it does not record the loss (JAX), breaks
    # the run of steps at chance: [0.1, 1, 1, NaN, 1, 1] never has 3 in a row.
    flagged, state = collapses([0.1, 1.0, 1.0, math.nan, 1.0, 1.0])
    assert flagged == []
    assert (int(state.count), int(state.learned)) == (2, 1)
    assert collapses([math.inf] * 10)[0] == []


def test_convergence_is_no_collapse():
    # Losses falling to 0, as in a healthy run whose gradient norm also falls to 0.
    assert collapses([2.3 * 0.8**i for i in range(60)], chance=math.log(10), window=3)[0] == []
