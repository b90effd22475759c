"""The guard's state: what it keeps, how it is laid out in variables, what a step-log row is.

Pure layout, no math: `gradguard.functional.step` computes the new state, and
`gradguard.guard` keeps it in optimizer variables as laid out here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from gradguard.functional.step import GuardConfig, Layout

# Statistics every mode keeps: name -> (dtype, initial value).
STATS = {
    "pre_clip_norm": ("float32", 0.0),  # last step's global norm before clipping
    "post_clip_norm": ("float32", 0.0),  # ... and after clipping
    "threshold": ("float32", float("inf")),  # global-norm bound in force (inf: none)
    "clipped_steps": ("int32", 0),  # finite steps whose gradients clipping changed
    "skipped_steps": ("int32", 0),  # updates skipped (non-finite, or spikes with skip_spikes)
    "consecutive_skips": ("int32", 0),  # skipped updates in a row, reset by an applied one
    "first_nonfinite_step": ("int32", -1),  # step of the first NaN/Inf gradient
    "diverged": ("int32", 0),  # 1 once an update went non-finite or skips ran out
    "spikes": ("int32", 0),  # finite steps whose norm was a spike (functional.detection)
    "loss_spikes": ("int32", 0),  # steps whose batch loss was a spike (`loss_spikes=True`)
    "collapses": ("int32", 0),  # collapses back to chance (`collapse_loss` set)
    # The batch loss the trainer handed to `scale_loss`; +Inf where it does not (JAX). Not NaN:
    # JAX's multi-process device_put checks that every process holds equal values.
    "batch_loss": ("float32", float("inf")),
    "events": ("int32", 0),  # spikes + non-finite steps + collapses: what recovery reacts to
    # Window accumulators, reset by `reset_window` (e.g. each epoch): no host sync per step.
    "window_norm_sum": ("float32", 0.0),
    "window_norm_max": ("float32", 0.0),
    "window_steps": ("int32", 0),  # finite steps in the window
    "window_clipped": ("int32", 0),
}


class StepRow(NamedTuple):
    """One step of `GradientGuard.read_step_log`."""

    step: int  # the guard's global step (skipped updates count)
    pre_clip_norm: float
    post_clip_norm: float
    threshold: float  # the global-norm bound in force (inf: none)
    event: int  # 0 ordinary, 1 gradient-norm spike, 2 non-finite, 3 batch-loss spike, 4 collapse
    batch_loss: float  # +Inf where the trainer does not hand the loss over (JAX)
    layer_norms: dict  # layer name -> its pre-clip gradient norm


# Columns of the step log, before one column per layer (that layer's gradient norm):
# StepRow's fields but the step (counted on the host) and the layer norms.
STEP_LOG_COLUMNS = StepRow._fields[1:-1]


# Packed variables of the guard's scalar statistics, by dtype; the batch loss keeps its own
# (under tf.distribute it is the mean over replicas, the others are replica 0's).
PACKS = {"counters": "int32", "scalars": "float32"}
UNPACKED = frozenset({"batch_loss"})
# The window's accumulators, zeroed at each epoch's start (`reset_window`).
WINDOW = frozenset(
    {
        "window_norm_sum",
        "window_norm_max",
        "window_steps",
        "window_clipped",
        "step_log_count",
        "window_layer_norm_sum",
        "window_layer_norm_max",
    }
)


class PackedStat:
    """One scalar statistic of a packed variable: `.value` reads it (a view, read-only)."""

    shape = ()

    def __init__(self, variable, index: int):
        self.variable, self.index = variable, index

    @property
    def value(self):
        return self.variable.value[self.index]

    @property
    def dtype(self):
        return self.variable.dtype


def state_specs(config: GuardConfig, layout: Layout) -> dict:
    """The guard's variables: name -> (dtype, initial value[, shape])."""
    specs = dict(STATS)
    n_layers = len(layout.layer_names)
    # Per-step rows of STEP_LOG_COLUMNS + per-layer norms for the current window, a ring.
    width = len(STEP_LOG_COLUMNS) + n_layers
    specs["step_log"] = ("float32", 0.0, (config.step_log_size, width))
    # Per-layer pre-clip gradient norm over the window's finite steps: sum and max.
    specs["window_layer_norm_sum"] = ("float32", 0.0, (n_layers,))
    specs["window_layer_norm_max"] = ("float32", 0.0, (n_layers,))
    specs["spike_history"] = ("float32", 0.0, (config.spike_window,))
    specs["spike_count"] = ("int32", 0)
    if config.loss_spikes:
        specs["loss_spike_history"] = ("float32", 0.0, (config.spike_window,))
        specs["loss_spike_count"] = ("int32", 0)
    if config.collapse_loss is not None:
        specs.update(collapse_count=("int32", 0), collapse_learned=("int32", 0))
    specs["step_log_count"] = ("int32", 0)
    if config.mode == "autoclip":
        specs["autoclip_history"] = ("float32", 0.0, (config.autoclip_window,))
        specs["autoclip_count"] = ("int32", 0)
    if config.mode == "zscore":
        specs.update(
            zscore_count=("int32", 0), zscore_mean=("float32", 0.0), zscore_var=("float32", 0.0)
        )
    return specs
