"""The adaptive modes' bounds: AutoClip's percentile of past norms, ZClip's z-score rule.

Each takes its state as plain tensors and this step's pre-clip global norm, and
returns the bound and the new state, over `keras.ops`, so the same code runs
eagerly, inside `tf.function` and under `jax.jit`. `gradguard.functional.step`
applies the bound (`gradguard.functional.clipping.scale_to_norm`);
`gradguard.GradientGuard` keeps the state in optimizer variables.
"""

from __future__ import annotations

from typing import NamedTuple

from keras import ops

_SMALLEST_Z = 1e-12  # a spike's z-score is > z_threshold > 0; this only guards the division


def window_percentile(history, filled, percentile: float):
    """The `percentile`-th percentile of a ring buffer's first `filled` entries.

    numpy's default (linear interpolation between closest ranks). Unfilled
    slots sort after every real entry and are never indexed; with nothing
    filled the result is +inf.

    Args:
        history: float32[window], the ring buffer.
        filled: int32 scalar, how many of its slots hold values (<= window).
        percentile: in [0, 100].
    """
    window = history.shape[0]
    ordered = ops.sort(ops.where(ops.arange(window) < filled, history, float("inf")))
    position = ops.cast(ops.maximum(filled - 1, 0), "float32") * (percentile / 100.0)
    lower = ops.cast(ops.floor(position), "int32")
    upper = ops.minimum(lower + 1, ops.maximum(filled - 1, 0))
    low_value, high_value = ops.take(ordered, lower), ops.take(ordered, upper)
    weight = position - ops.floor(position)
    value = low_value + (high_value - low_value) * weight
    return ops.where(filled > 0, value, float("inf"))  # inf - inf would give NaN


class AutoClipState(NamedTuple):
    """A ring buffer of past global norms and how many were ever written."""

    history: object  # float32[window]
    count: object  # int32 scalar


def autoclip_threshold(state: AutoClipState, norm, percentile: float):
    """AutoClip: record `norm`, return the percentile of the norms seen so far.

    The bound is the `percentile`-th percentile (numpy's linear interpolation)
    of the last `window` norms, the current one included. The authors' code
    (pseeth/autoclip: `history.append(norm); clip = np.percentile(history, p)`)
    keeps every norm since step 1; this keeps a window (`autoclip_window`, 1000
    by default), so the two agree for the first `window` steps and then the
    bound follows the recent norms. A full history is not offered: the buffer is
    an optimizer variable of fixed shape (compiled steps need one, and it is
    saved with the model), and a history of every step grows without bound
    (4 bytes a step in every checkpoint, a sort of all of it every step).

    Args:
        state: the ring buffer.
        norm: this step's pre-clip global norm (a float32 scalar).
        percentile: in (0, 100].

    Returns:
        `(threshold, new_state)`.

    References:
        Seetharaman, Wichern, Pardo and Le Roux 2020, "AutoClip: Adaptive
        Gradient Clipping for Source Separation Networks".
    """
    window = state.history.shape[0]
    slot = ops.mod(state.count, window)
    history = ops.slice_update(state.history, (slot,), ops.reshape(norm, (1,)))
    count = state.count + 1
    threshold = window_percentile(history, ops.minimum(count, window), percentile)
    return threshold, AutoClipState(history, count)


class ZScoreState(NamedTuple):
    """EMA statistics of the global norm (Welford sums during warm-up)."""

    count: object  # int32 scalar: steps observed
    mean: object  # float32 scalar
    var: object  # float32 scalar; during warm-up the running sum of squared deviations


def zscore_threshold(state: ZScoreState, norm, z_threshold: float, alpha: float, warmup: int):
    """ZClip: the bound for this step's norm, and the updated statistics.

    During the first `warmup` steps the norm only feeds the statistics (mean and
    population variance) and the bound is +inf. After that, a norm whose z-score
    z = (g - mean) / std exceeds `z_threshold` gets the bound
    mean + z_threshold^2 * std / z (the reference's "adaptive_scaling": larger
    outliers are pulled further in), and the EMAs absorb the clipped norm so a
    spike does not inflate them.

    Returns:
        `(threshold, new_state)`; threshold is +inf when no clipping applies.

    References:
        Kumar, Owen, Chowdhury and Güra 2025, "ZClip: Adaptive Spike Mitigation
        for LLM Pre-Training" (arXiv:2504.02507), and its reference code.
    """
    count = state.count + 1
    in_warmup = state.count < warmup
    # Welford's update for the warm-up; the last warm-up step turns M2 into a variance.
    delta = norm - state.mean
    warm_mean = state.mean + delta / ops.cast(count, "float32")
    warm_m2 = state.var + delta * (norm - warm_mean)
    warm_var = ops.where(ops.equal(count, warmup), warm_m2 / float(warmup), warm_m2)

    std = ops.sqrt(ops.maximum(state.var, 0.0))
    z = (norm - state.mean) / (std + 1e-6)
    spike = ops.logical_and(ops.logical_not(in_warmup), z > z_threshold)
    bound = state.mean + (z_threshold * z_threshold) * std / ops.maximum(z, _SMALLEST_Z)
    effective = ops.where(spike, bound, norm)
    ema_mean = alpha * state.mean + (1.0 - alpha) * effective
    ema_var = alpha * state.var + (1.0 - alpha) * ops.square(effective - ema_mean)

    threshold = ops.where(spike, bound, float("inf"))
    new_state = ZScoreState(
        count,
        ops.where(in_warmup, warm_mean, ema_mean),
        ops.where(in_warmup, warm_var, ema_var),
    )
    return threshold, new_state
