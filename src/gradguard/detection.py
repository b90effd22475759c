"""Spike detection on the gradient norm (or the batch loss), as a pure function over `keras.ops`."""

from __future__ import annotations

from typing import NamedTuple

from keras import ops

from gradguard.clipping import lazy_cond, window_percentile

# Levanter's floor on the window's standard deviation: without it a window of equal
# values (std 0) makes any larger value a spike, e.g. 1.000001 after (1, 1).
STD_FLOOR = 1e-6


class SpikeState(NamedTuple):
    """A ring buffer of recent finite values and how many were ever written."""

    history: object  # float32[window]
    count: object  # int32 scalar


def spike_check(state: SpikeState, norm, finite, sigma: float, warmup_factor: float | None = None):
    """Is `norm` a spike? Decide from the values before it, then add it to the window.

    Two rules, one for each phase of the window:

    - Once the window is at least half full: a spike is above
      mean + sigma * max(std, STD_FLOOR) of the window (population std).
    - Before that (warm-up, e.g. the first 64 steps of a 128-step window): a
      spike is above `warmup_factor` times the median of the values seen so far
      (only while that median is > 0), so an explosion in the first steps is an
      event too. The median, not the first or smallest value, because every
      value enters the window: after a lasting rise, the new level is half of
      what was seen after as many steps as came before it, and the median
      follows. So flags in a row last at most as many steps as preceded the
      rise (and the warm-up, window / 2 steps, caps both: about window / 4),
      where a first or smallest value would flag the rest of the warm-up.

    Every finite value enters the window after the decision, spikes included,
    as in OLMo-core and Levanter: a lasting level shift (e.g. norms 1 -> 2)
    widens the band within a few steps and then passes, where a window that
    kept spikes out would call every later step a spike and skip forever. The
    price: one admitted spike widens the band for `window` steps, so a second
    spike of the same size within them may pass. Non-finite values stay out
    (one NaN would make the band NaN for `window` steps); the guard skips them
    on their own rule.

    Args:
        state: the window.
        norm: this step's value, e.g. the pre-clip global norm (float32 scalar).
        finite: whether this step's gradients (and value) are finite (bool scalar).
        sigma: how many standard deviations above the mean make a spike.
        warmup_factor: the warm-up rule's factor; None leaves warm-up undecided.

    Returns:
        `(is_spike, new_state)`.

    References:
        Levanter, `src/levanter/optim/skipstep.py` (`SkipStepConfig.wrap`:
        window 128, 6 sigma, std floored at 1e-6, no decision before half the
        window, every value written after the decision); OLMo-core,
        `src/olmo_core/optim/skip_step_optimizer.py` (`SkipStepOptimizer`:
        `latest_grad_norm` appends every value, the z-score uses the ones
        before it); Chowdhery et al. 2022 (PaLM), section 5.1, on spikes.
    """
    window = state.history.shape[0]
    filled = ops.minimum(state.count, window)
    valid = ops.arange(window) < filled
    n = ops.cast(ops.maximum(filled, 1), "float32")
    mean = ops.sum(ops.where(valid, state.history, 0.0)) / n
    var = ops.sum(ops.where(valid, ops.square(state.history - mean), 0.0)) / n
    std = ops.maximum(ops.sqrt(var), STD_FLOOR)
    ready = filled * 2 >= window
    above = ops.logical_and(ready, norm > mean + sigma * std)
    if warmup_factor is not None:

        def early():
            median = window_percentile(state.history, filled, 50.0)
            return ops.logical_and(median > 0, norm > warmup_factor * median)

        # A cond: the sort runs in the warm-up only (~0.2 ms a step on 2 CPU cores).
        not_judged = lambda: ops.convert_to_tensor(False)  # noqa: E731
        above = ops.logical_or(above, lazy_cond(ready, not_judged, early))
    is_spike = ops.logical_and(finite, above)
    slot = ops.mod(state.count, window)
    history = ops.where(ops.logical_and(finite, ops.arange(window) == slot), norm, state.history)
    return is_spike, SpikeState(history, state.count + ops.cast(finite, "int32"))
