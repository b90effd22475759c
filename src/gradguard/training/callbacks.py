"""Keras callbacks: reading a `GradientGuard` (per-epoch gradient logs, divergence), epoch logs."""

from __future__ import annotations

import math
import time

import keras
import numpy as np


def read_stats(guard) -> dict:
    """The guard's statistics as Python numbers (one host transfer per variable)."""
    return {
        key: np.asarray(keras.ops.convert_to_numpy(var.value)).item()
        for key, var in guard.stats.items()
        if var.shape == ()
    }


def read_mid_epoch(model, guard, key: str) -> int:
    """One of the guard's scalar statistics, read inside an epoch (one host transfer).

    The JAX trainer holds the state outside the variables mid-epoch, so on JAX the
    model's state is synced back first.
    """
    if model is not None and keras.backend.backend() == "jax":
        model.jax_state_sync()
    return int(keras.ops.convert_to_numpy(guard.stats[key].value))


class GradientStatsLogger(keras.callbacks.Callback):
    """Adds the epoch's gradient statistics to the epoch logs.

    The guard accumulates on the device every step; this callback zeroes the
    accumulators at each epoch's start and reads them once at its end, so it
    adds no per-step host synchronisation. Logged keys (picked up by any later
    callback, e.g. DVCLive's): `grad_norm_max`, `grad_norm_mean` (pre-clip,
    finite steps), `clip_fraction` (share of the epoch's finite steps that
    clipping changed), `skipped_steps` (running total).

    Per layer it keeps, each epoch, the mean and max pre-clip gradient norm, the
    weight norm and the layers ranked by mean gradient norm (`layer_epochs`),
    and the largest gradient norm of each layer over the run (`layer_max`).

    Args:
        guard: the `GradientGuard` the model trains with.
        on_step_log: called at each epoch's end with the epoch's per-step rows
            (`gradguard.guard.StepRow`), read from the device in one transfer
            (`GradientGuard.read_step_log`).
    """

    def __init__(self, guard, on_step_log=None):
        super().__init__()
        self.guard = guard
        self.on_step_log = on_step_log
        self.max_grad_norm = 0.0
        self.clipped_steps = 0
        self.steps = 0
        self.layer_epochs: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        if self.guard.built:
            self.guard.reset_window()

    def on_epoch_end(self, epoch, logs=None):
        stats = read_stats(self.guard)
        steps = stats["window_steps"]
        epoch_logs = {
            "grad_norm_max": stats["window_norm_max"],
            "grad_norm_mean": stats["window_norm_sum"] / max(steps, 1),
            "clip_fraction": stats["window_clipped"] / max(steps, 1),
            "skipped_steps": stats["skipped_steps"],
        }
        self.max_grad_norm = max(self.max_grad_norm, epoch_logs["grad_norm_max"])
        self.clipped_steps += stats["window_clipped"]
        self.steps += steps
        layers = self.guard.read_layer_stats()
        ranked = sorted(layers, key=lambda name: -layers[name]["grad_norm_mean"])
        self.layer_epochs.append({"epoch": epoch, "largest": ranked, "layers": layers})
        if logs is not None:
            logs.update(epoch_logs)
        if self.on_step_log is not None:
            self.on_step_log(self.guard.read_step_log())

    def state(self) -> dict:
        """Running totals, to carry across an interrupted run (see `restore`)."""
        return {
            "max_grad_norm": self.max_grad_norm,
            "clipped_steps": self.clipped_steps,
            "steps": self.steps,
            "layer_epochs": self.layer_epochs,
        }

    def restore(self, state: dict) -> None:
        """Continue the running totals of `state()` (an empty dict changes nothing)."""
        for key in ("max_grad_norm", "clipped_steps", "steps", "layer_epochs"):
            if key in state:
                setattr(self, key, state[key])

    @property
    def layer_max(self) -> dict[str, float]:
        """Each layer's largest pre-clip gradient norm over the run's epochs."""
        peaks: dict[str, float] = {}
        for epoch in self.layer_epochs:
            for name, values in epoch["layers"].items():
                peaks[name] = max(peaks.get(name, 0.0), values["grad_norm_max"])
        return peaks

    def layer_summary(self) -> list[dict]:
        """Per layer, largest gradient norm first: the run's max, last epoch's mean, weight norm."""
        if not self.layer_epochs:
            return []
        last, peaks = self.layer_epochs[-1]["layers"], self.layer_max
        rows = [
            {
                "layer": name,
                "grad_norm_max": peaks[name],
                "grad_norm_mean": values["grad_norm_mean"],
                "weight_norm": values["weight_norm"],
            }
            for name, values in last.items()
        ]
        return sorted(rows, key=lambda row: -row["grad_norm_max"])

    @property
    def clip_fraction(self) -> float:
        """Share of all steps so far that clipping changed."""
        return self.clipped_steps / max(self.steps, 1)


class DivergenceMonitor(keras.callbacks.Callback):
    """Ends training cleanly when the run diverges, and remembers where.

    Diverged means: the guard flagged it (a non-finite update was applied, or
    `max_consecutive_skips` updates in a row were skipped), or, without a guard,
    the batch loss is NaN or Inf (as `keras.callbacks.TerminateOnNaN`). It reads
    one scalar every `check_every` batches and at each epoch's end.

    Attributes:
        diverged: whether the run diverged.
        step: the global step (batches seen) at which divergence was detected.
    """

    def __init__(self, guard=None, check_every: int = 1):
        super().__init__()
        self.guard = guard
        self.check_every = max(1, check_every)
        self.diverged = False
        self.step = None
        self._seen = 0

    def _check(self, logs) -> None:
        if self.diverged:
            return
        if self.guard is not None and self.guard.built:
            flag = bool(read_mid_epoch(self.model, self.guard, "diverged"))
        else:
            loss = (logs or {}).get("loss")
            flag = loss is not None and not math.isfinite(float(loss))
        if flag:
            # With a guard: its count of updates, which carries across resumed runs.
            seen = self.guard.updates_seen if self.guard is not None else self._seen
            self.diverged, self.step = True, seen
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        self._seen += 1
        if self._seen % self.check_every == 0:
            self._check(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._check(None if self.guard is not None else logs)


class EpochMetricsLogger(keras.callbacks.Callback):
    """Logs Keras's epoch logs as `train/<name>` and `val/<name>`, then ends the step.

    `live` is any logger with `log_metric(name, value)` and `next_step()`, such
    as DVCLive's `Live`.

    DVCLive's own Keras callback names validation metrics `eval/...`, which reads
    like the test metrics of `metrics/eval.json`; these are validation metrics.
    """

    def __init__(self, live):
        super().__init__()
        self.live = live

    def on_epoch_end(self, epoch, logs=None):
        for name, value in (logs or {}).items():
            split, metric = ("val", name[4:]) if name.startswith("val_") else ("train", name)
            self.live.log_metric(f"{split}/{metric}", value)
        self.live.next_step()


class Progress(keras.callbacks.Callback):
    """A line every `every_s` seconds within an epoch (Keras's own line comes at its end)."""

    def __init__(self, steps: int, every_s: float = 30.0):
        super().__init__()
        self.steps, self.every_s = steps, every_s

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.last = epoch, time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            print(f"train: epoch {self.epoch + 1}, step {batch + 1}/{self.steps}", flush=True)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` on a quantity to minimise that can start from a saved state.

    Its best value starts at +inf rather than None, so a NaN first epoch (a
    diverged run) never counts as an improvement, as in `ModelCheckpoint` with
    `initial_value_threshold=inf`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, mode="min", **kwargs)
        self._initial = (0, math.inf, 0, None)

    def go_on_from(self, wait: int, best: float | None, best_epoch: int, weights) -> None:
        """Start from an interrupted run's counter, best value, epoch and weights."""
        self._initial = (wait, math.inf if best is None else best, best_epoch, weights)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.wait, self.best, self.best_epoch, self.best_weights = self._initial
