"""Spike detection on the gradient norm (or the batch loss), as a pure function over `keras.ops`."""

from __future__ import annotations

from typing import NamedTuple

from keras import ops

from gradguard.functional.clipping import lazy_cond
from gradguard.functional.thresholds import window_percentile

# Levanter's floor on the window's standard deviation: without it a window of equal
# values (std 0) makes any larger value a spike, e.g. 1.000001 after (1, 1).
STD_FLOOR = 1e-6


class SpikeState(NamedTuple):
    """A ring buffer of recent finite values and how many were ever written."""

    history: object  # float32[window]
    count: object  # int32 scalar


def spike_check(
    state: SpikeState,
    norm,
    finite,
    sigma: float,
    warmup_factor: float | None = None,
    factor: float | None = None,
):
    """Is `norm` a spike? Decide from the values before it, then add it to the window.

    Once the window is half full, a spike is above mean + sigma * max(std,
    STD_FLOOR) of the window and, with `factor`, also above `factor` times the
    window's mean; before that, above `warmup_factor` times the median of the
    values so far. The factor keeps late training's bumps out: when the norms
    are small and tight, a norm a few times their mean clears a 6-sigma band
    (the default pipeline's seed 42 flagged 3.52 over a window of mean 0.71,
    std 0.46: 4.95x the mean), while an explosion is orders of magnitude.
    Every finite value enters the window after the decision, spikes included,
    so a lasting level shift passes (why, and what it costs: docs/guard.md,
    "Spike detection").

    Args:
        state: the window.
        norm: this step's value, e.g. the pre-clip global norm (float32 scalar).
        finite: whether this step's gradients (and value) are finite (bool scalar).
        sigma: how many standard deviations above the mean make a spike.
        warmup_factor: the warm-up rule's factor; None leaves warm-up undecided.
        factor: a spike must also exceed this multiple of the window's mean; None: off.

    Returns:
        `(is_spike, new_state)`.

    References:
        Levanter, `src/levanter/optim/skipstep.py`; OLMo-core,
        `src/olmo_core/optim/skip_step_optimizer.py`; Chowdhery et al. 2022
        (PaLM), section 5.1.
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
    if factor is not None:
        above = ops.logical_and(above, norm > factor * mean)
    if warmup_factor is not None:

        def early():
            median = window_percentile(state.history, filled, 50.0)
            return ops.logical_and(median > 0, norm > warmup_factor * median)

        # A cond: the sort runs in the warm-up only (its cost: docs/benchmarks.md).
        not_judged = lambda: ops.convert_to_tensor(False)  # noqa: E731
        above = ops.logical_or(above, lazy_cond(ready, not_judged, early))
    is_spike = ops.logical_and(finite, above)
    slot = ops.mod(state.count, window)
    history = ops.where(ops.logical_and(finite, ops.arange(window) == slot), norm, state.history)
    return is_spike, SpikeState(history, state.count + ops.cast(finite, "int32"))


class CollapseState(NamedTuple):
    """Steps in a row at the chance level, and whether the run has learned since the last
    collapse."""

    count: object  # int32 scalar
    learned: object  # int32 scalar, 0 or 1


def collapse_check(
    state: CollapseState, loss, chance: float, level: float, learned: float, window: int
):
    """Has the run collapsed back to chance? Decide from this step's batch loss.

    A run has learned once a finite batch loss is at most `learned` x `chance` (well
    below the chance level, e.g. ln K for K balanced classes). After that, a finite
    batch loss of at least `level` x `chance` is a step at chance, and `window` of
    them in a row make a collapse: the event fires on the last of them, the count
    starts again and the run must learn again (a loss back below `learned` x
    `chance`) before it can collapse again, so one collapse is one event. A loss
    that is not finite (NaN, or the +Inf of a trainer that did not record it) is
    not at chance and breaks the run of steps.

    A gradient-norm rule cannot tell a collapse from convergence: in a healthy run
    the norm falls towards zero too (the late preset's seed 100: 0.02 at step 1320,
    loss 0.0005); the loss can.

    Returns:
        `(is_collapse, new_state)`.
    """
    finite = ops.isfinite(loss)
    has_learned = ops.logical_or(
        state.learned > 0, ops.logical_and(finite, loss <= learned * chance)
    )
    at_chance = ops.logical_and(has_learned, ops.logical_and(finite, loss >= level * chance))
    count = ops.where(at_chance, state.count + 1, 0)
    is_collapse = count >= window
    return is_collapse, CollapseState(
        ops.where(is_collapse, 0, count),
        ops.cast(ops.logical_and(has_learned, ops.logical_not(is_collapse)), "int32"),
    )
