"""The guarded step as pure functions of the guard's settings and state.

`GradientGuard` (gradguard.guard) keeps the state in optimizer variables and
calls `guard_step` on their values, inside TensorFlow's stateful apply or
JAX's `stateless_apply` alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from keras import ops

from gradguard.functional import clipping, detection, thresholds
from gradguard.functional.detection import CollapseState, SpikeState
from gradguard.functional.state import STEP_LOG_COLUMNS
from gradguard.functional.thresholds import AutoClipState, ZScoreState
from gradguard.settings import (
    BOUNDS,
    CLIP_MODES,
    EVENT_CODES,
    MODE_BOUND,
    resolve_clip_mode,
    setting_error,
)


@dataclasses.dataclass(frozen=True)
class GuardConfig:
    """Every setting of a `GradientGuard` (see its docstring); validated on creation."""

    mode: str = "auto"
    clip_norm: float | None = None
    clip_value: float | None = None
    agc_lambda: float = 0.01
    agc_exclude_last: bool = True
    autoclip_percentile: float = 10.0
    autoclip_window: int = 1000
    zscore_threshold: float = 2.5
    zscore_alpha: float = 0.97
    zscore_warmup: int = 25
    zscore_max_norm: float | None = None
    skip_nonfinite: bool = True
    max_consecutive_skips: int = 10
    step_log_size: int = 1024
    spike_window: int = 128
    spike_sigma: float = 6.0
    spike_warmup_factor: float | None = 100.0
    spike_factor: float | None = 10.0
    skip_spikes: bool = False
    loss_spikes: bool = False
    collapse_loss: float | None = None
    collapse_window: int = 50
    collapse_level: float = 0.9
    collapse_learned: float = 0.5

    def __post_init__(self):
        object.__setattr__(
            self, "mode", resolve_clip_mode(self.mode, self.clip_norm, self.clip_value)
        )
        if self.mode not in CLIP_MODES:
            raise ValueError(
                f"GradientGuard mode={self.mode!r}; expected one of {('auto', *CLIP_MODES)}"
            )
        bound = MODE_BOUND.get(self.mode)
        if bound and (getattr(self, bound) is None or getattr(self, bound) <= 0):
            raise ValueError(
                f"GradientGuard mode={self.mode!r} needs {bound} > 0; "
                f"received {bound}={getattr(self, bound)!r}"
            )
        for key in BOUNDS:
            allowed = setting_error(key, getattr(self, key))
            if allowed is not None:
                raise ValueError(f"GradientGuard {key}={getattr(self, key)!r}; expected {allowed}")


@dataclasses.dataclass(frozen=True)
class Layout:
    """What the guard knows of the trainable variables: which layer each belongs to.

    A layer is a variable's path without its last part ("sequential/conv2d" for
    "sequential/conv2d/kernel"); its name drops the outermost model's prefix.
    """

    layer_of: tuple[int, ...]  # index of each variable's layer in `layer_names`
    layer_names: tuple[str, ...]
    agc_excluded: tuple[bool, ...]  # variables AGC leaves alone (the last layer's)
    agc_axes: tuple | None = None  # per variable: AGC's unit-norm axes (`clipping.unit_axes`)

    @classmethod
    def of(cls, variables: Sequence, agc_exclude_last: bool = True) -> Layout:
        keys = [v.path.rsplit("/", 1)[0] if "/" in v.path else v.path for v in variables]
        unique = list(dict.fromkeys(keys))
        names = [k.split("/", 1)[1] if k.count("/") else k for k in unique]
        if len(set(names)) < len(names):  # stripping the prefix made two alike
            names = unique
        return cls(
            layer_of=tuple(unique.index(k) for k in keys),
            layer_names=tuple(names),
            agc_excluded=tuple(agc_exclude_last and k == keys[-1] for k in keys),
            agc_axes=tuple(clipping.unit_axes(v.path, len(v.shape)) for v in variables),
        )


def clip(
    config: GuardConfig,
    state: dict,
    grads: list,
    weights: Sequence,
    pre_clip_norm,
    layout: Layout,
    tensor_norms=None,
):
    """Clip as `config.mode` says: (clipped gradients, threshold, mode-state updates).

    `layout`: AGC's exclusions and unit axes. `tensor_norms`: each tensor's norm,
    which "norm" mode uses where given.
    """
    inf = ops.convert_to_tensor(float("inf"), "float32")
    if config.mode == "value":
        return clipping.clip_by_value(grads, config.clip_value), inf, {}
    if config.mode == "norm":
        return clipping.clip_by_norm(grads, config.clip_norm, tensor_norms), inf, {}
    if config.mode == "global_norm":
        bound = ops.convert_to_tensor(config.clip_norm, "float32")
        return clipping.scale_to_norm(grads, pre_clip_norm, bound), bound, {}
    if config.mode == "agc":
        clipped = clipping.adaptive_clip(
            grads, weights, config.agc_lambda, layout.agc_excluded, axes=layout.agc_axes
        )
        return clipped, inf, {}
    if config.mode == "autoclip":
        old = AutoClipState(state["autoclip_history"], state["autoclip_count"])
        bound, new = thresholds.autoclip_threshold(old, pre_clip_norm, config.autoclip_percentile)
        updates = {"autoclip_history": new.history, "autoclip_count": new.count}
    elif config.mode == "zscore":
        old = ZScoreState(state["zscore_count"], state["zscore_mean"], state["zscore_var"])
        bound, new = thresholds.zscore_threshold(
            old, pre_clip_norm, config.zscore_threshold, config.zscore_alpha, config.zscore_warmup
        )
        updates = {"zscore_count": new.count, "zscore_mean": new.mean, "zscore_var": new.var}
        if config.zscore_max_norm is not None:  # ZClip's max_grad_norm: warm-up steps too;
            bound = ops.minimum(bound, config.zscore_max_norm)  # the EMAs never see the cap
    else:
        return list(grads), inf, {}
    return clipping.scale_to_norm(grads, pre_clip_norm, bound), bound, updates


def post_clip_norm(config: GuardConfig, clipped: list, pre, threshold, tensor_norms):
    """The global norm after clipping, and whether clipping changed the gradient.

    Derived where the mode says what it did: modes that scale every gradient by one
    factor (none, global_norm, autoclip, zscore) give min(pre, threshold); "norm"
    gives each tensor's min(norm, clip_norm). Value and AGC clipping are summed again,
    as `pre` was, so an unchanged gradient gives post == pre exactly.
    """
    if config.mode == "norm":
        kept = ops.minimum(tensor_norms, config.clip_norm)
        return ops.sqrt(ops.sum(ops.square(kept))), ops.any(tensor_norms > config.clip_norm)
    if config.mode not in ("value", "agc"):
        bound = ops.cast(threshold, "float32")
        return ops.minimum(pre, bound), pre > bound
    post = ops.sqrt(ops.sum(clipping.tensor_square_sums(clipped)))
    return post, post < pre


def guard_step(
    config: GuardConfig,
    layout: Layout,
    state: dict,
    grads: Sequence,
    weights: Sequence,
    step,
):
    """One step of the guard on plain tensors.

    Args:
        layout: the variables' layers.
        state: current values of `stats` (and the mode's own state) by name;
            `batch_loss` is this step's loss where the trainer recorded it.
        grads: the (already all-reduced) gradients.
        weights: the current values of the trainable variables.
        step: how many updates the guard saw before this one (skipped ones too).

    Returns:
        `(clipped_grads, apply_update, new_state)`: apply_update is a boolean
        scalar, False when this update must be skipped.
    """
    grads = list(grads)
    n_layers = len(layout.layer_names)
    # Overflow-safe: a finite gradient of norm 5e19 is clipped, not skipped as non-finite.
    # One pass for the layers' norms (and, for "norm", each tensor's).
    groupings = [(layout.layer_of, n_layers)]
    if config.mode == "norm":
        groupings.append((range(len(grads)), len(grads)))
    norms, pre = clipping.grouped_norms(grads, groupings)
    layer_norms, tensor_norms = norms[0], norms[1] if config.mode == "norm" else None
    # A NaN or Inf entry makes the overflow-safe norm NaN or Inf, so a finite norm means
    # finite gradients: no second pass over them (`clipping.all_finite`) is needed.
    finite = ops.isfinite(pre)
    clipped, threshold, mode_updates = clip(
        config, state, grads, weights, pre, layout, tensor_norms
    )
    post, was_clipped = post_clip_norm(config, clipped, pre, threshold, tensor_norms)
    was_clipped = ops.logical_and(finite, was_clipped)

    new = dict(state)
    for key, value in mode_updates.items():  # a NaN norm must not poison the history
        new[key] = ops.where(finite, value, state[key])
    is_spike, is_loss_spike, detector_state = _detect(config, state, pre, finite)
    new.update(detector_state)
    any_spike = ops.logical_or(is_spike, is_loss_spike)
    skip = _skip(config, finite, any_spike)
    is_collapse = _collapse(config, state, new)
    new.update(_counters(config, state, finite, skip, was_clipped, ops.cast(step, "int32")))
    new.update(_window(state, pre, layer_norms, finite, was_clipped))
    event = _event_code(finite, is_spike, is_loss_spike, is_collapse)
    event_flag = any_spike if is_collapse is None else ops.logical_or(any_spike, is_collapse)
    columns = {
        "pre_clip_norm": pre,
        "post_clip_norm": post,
        "threshold": ops.cast(threshold, "float32"),
        "event": event,
        "batch_loss": new["batch_loss"],
    }
    row = ops.concatenate([ops.stack([columns[name] for name in STEP_LOG_COLUMNS]), layer_norms])
    slot = ops.mod(state["step_log_count"], config.step_log_size)
    new.update(
        pre_clip_norm=pre,
        post_clip_norm=post,
        threshold=threshold,
        step_log=ops.slice_update(state["step_log"], (slot, 0), ops.expand_dims(row, 0)),
        step_log_count=state["step_log_count"] + 1,
        spikes=state["spikes"] + _as_int(is_spike),
        loss_spikes=state["loss_spikes"] + _as_int(is_loss_spike),
        events=state["events"] + _as_int(ops.logical_or(event_flag, ops.logical_not(finite))),
    )
    return clipped, ops.logical_not(skip), new


def _event_code(finite, is_spike, is_loss_spike, is_collapse):
    """The step log's event code (`EVENT_CODES`): the first that holds of non-finite, a
    gradient-norm spike, a batch-loss spike, a collapse; 0 for none."""
    code = 0.0
    if is_collapse is not None:
        code = ops.where(is_collapse, float(EVENT_CODES["collapse"]), code)
    code = ops.where(is_loss_spike, float(EVENT_CODES["loss_spike"]), code)
    code = ops.where(is_spike, float(EVENT_CODES["spike"]), code)
    return ops.where(ops.logical_not(finite), float(EVENT_CODES["nonfinite"]), code)


def _collapse(config: GuardConfig, state: dict, new: dict):
    """The collapse check on the batch loss (`collapse_loss` set): writes its state into
    `new` and returns whether this step ends a collapse (None when there is no check)."""
    if config.collapse_loss is None:
        return None
    is_collapse, collapse_state = detection.collapse_check(
        CollapseState(state["collapse_count"], state["collapse_learned"]),
        new["batch_loss"],
        config.collapse_loss,
        config.collapse_level,
        config.collapse_learned,
        config.collapse_window,
    )
    new.update(
        collapse_count=collapse_state.count,
        collapse_learned=collapse_state.learned,
        collapses=state["collapses"] + _as_int(is_collapse),
    )
    return is_collapse


def _skip(config: GuardConfig, finite, any_spike):
    """Whether to skip this update, from the settings in Python: the decision depends on
    the spike check only with `skip_spikes`, so the update need not wait for it."""
    skip = ops.logical_not(finite) if config.skip_nonfinite else ops.convert_to_tensor(False)
    if config.skip_spikes:
        skip = ops.logical_or(skip, any_spike)
    return skip


def _as_int(flag):
    return ops.cast(flag, "int32")


def _detect(config: GuardConfig, state: dict, pre, finite):
    """Spike checks on the norm (and the batch loss): (is_spike, is_loss_spike, state updates)."""
    warmup = config.spike_warmup_factor
    is_spike, spike_state = detection.spike_check(
        SpikeState(state["spike_history"], state["spike_count"]),
        pre,
        finite,
        config.spike_sigma,
        warmup,
        config.spike_factor,
    )
    updates = {
        "spike_history": spike_state.history,
        "spike_count": spike_state.count,
        "batch_loss": ops.cast(state["batch_loss"], "float32"),
    }
    is_loss_spike = ops.convert_to_tensor(False)
    if config.loss_spikes:
        loss = updates["batch_loss"]
        is_loss_spike, loss_state = detection.spike_check(
            SpikeState(state["loss_spike_history"], state["loss_spike_count"]),
            loss,
            ops.logical_and(finite, ops.isfinite(loss)),
            config.spike_sigma,
            warmup,
            config.spike_factor,
        )
        updates.update(loss_spike_history=loss_state.history, loss_spike_count=loss_state.count)
    return is_spike, is_loss_spike, updates


def _counters(config: GuardConfig, state: dict, finite, skip, was_clipped, step) -> dict:
    """The run's counters: clipped, skipped (in a row too), first non-finite step, diverged."""
    not_finite = ops.logical_not(finite)
    # Every skipped update counts, spikes too: a run that skips spike after spike ends as
    # diverged after max_consecutive_skips, as one that skips NaN after NaN does.
    consecutive = ops.where(skip, state["consecutive_skips"] + 1, 0)
    first = state["first_nonfinite_step"]
    diverging = ops.logical_or(
        ops.logical_and(not_finite, not config.skip_nonfinite),
        consecutive >= config.max_consecutive_skips,
    )
    return {
        "clipped_steps": state["clipped_steps"] + _as_int(was_clipped),
        "skipped_steps": state["skipped_steps"] + _as_int(skip),
        "consecutive_skips": consecutive,
        "first_nonfinite_step": ops.where(ops.logical_and(not_finite, first < 0), step, first),
        "diverged": ops.maximum(state["diverged"], _as_int(diverging)),
    }


def _window(state: dict, pre, layer_norms, finite, was_clipped) -> dict:
    """The window's accumulators (reset each epoch): finite steps' norms, sums and maxima."""
    return {
        "window_norm_sum": state["window_norm_sum"] + ops.where(finite, pre, 0.0),
        "window_norm_max": ops.maximum(state["window_norm_max"], ops.where(finite, pre, 0.0)),
        "window_steps": state["window_steps"] + _as_int(finite),
        "window_clipped": state["window_clipped"] + _as_int(was_clipped),
        "window_layer_norm_sum": state["window_layer_norm_sum"]
        + ops.where(finite, layer_norms, 0.0),
        "window_layer_norm_max": ops.maximum(
            state["window_layer_norm_max"], ops.where(finite, layer_norms, 0.0)
        ),
    }
