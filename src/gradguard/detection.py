"""Spike detection on the gradient norm, as a pure function over `keras.ops`."""

from __future__ import annotations

from typing import NamedTuple

from keras import ops


class SpikeState(NamedTuple):
    """A ring buffer of recent non-spike norms and how many were ever written."""

    history: object  # float32[window]
    count: object  # int32 scalar


def spike_check(state: SpikeState, norm, finite, sigma: float):
    """Is `norm` a spike: above mean + sigma * std of the rolling window?

    No decision is made before the window is half full. Spikes and non-finite
    norms are kept out of the window, so one spike does not widen the band
    that should catch the next.

    Args:
        state: the window.
        norm: this step's pre-clip global norm (float32 scalar).
        finite: whether this step's gradients are finite (bool scalar).
        sigma: how many standard deviations above the mean make a spike.

    Returns:
        `(is_spike, new_state)`.

    References:
        The loss- and gradient-spike rules of OLMo-core and Levanter (window
        128, 6 sigma); Chowdhery et al. 2022 (PaLM), section 5.1, on spikes.
    """
    window = state.history.shape[0]
    filled = ops.minimum(state.count, window)
    valid = ops.arange(window) < filled
    n = ops.cast(ops.maximum(filled, 1), "float32")
    mean = ops.sum(ops.where(valid, state.history, 0.0)) / n
    var = ops.sum(ops.where(valid, ops.square(state.history - mean), 0.0)) / n
    ready = filled * 2 >= window
    is_spike = ops.logical_and(ops.logical_and(finite, ready), norm > mean + sigma * ops.sqrt(var))
    keep = ops.logical_and(finite, ops.logical_not(is_spike))
    slot = ops.mod(state.count, window)
    history = ops.where(ops.logical_and(keep, ops.arange(window) == slot), norm, state.history)
    return is_spike, SpikeState(history, state.count + ops.cast(keep, "int32"))
