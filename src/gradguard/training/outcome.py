"""A run's verdict from a training script of the user's own (not the pipeline's).

Two pieces: `RunRecord`, a Keras callback that follows the weights' global norm and
the `GradientGuard`'s statistics through `model.fit` (TensorFlow, JAX or PyTorch);
and `write_verdict`, called after the user's own evaluation, which applies the
pipeline's verdict rules (`gradguard.verdict`) and writes the verdict into a JSON
metrics file, or through DVCLive. `gradguard compare`'s `verdict:` key can then
point at it: `verdict: metrics/verdict.json:verdict`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras

from gradguard.guard import GradientGuard
from gradguard.io import write_json
from gradguard.training.callbacks import read_stats
from gradguard.training.fit import host_global_norm, weight_growth
from gradguard.verdict import VerdictRules, run_verdict


class RunRecord(keras.callbacks.Callback):
    """Records what the verdict needs while `model.fit` runs.

    The model's optimizer must be a `GradientGuard` (or a loss-scale optimizer around
    one): its `diverged` flag, skipped and clipped steps and largest pre-clip norm are
    read at each epoch's end, with the global L2 norm of the trainable weights.
    """

    def __init__(self):
        super().__init__()
        self.initial_norm: float | None = None
        self.epoch_norms: list[float] = []
        self.stats: dict[str, Any] = {}
        self.max_grad_norm = 0.0  # the largest finite pre-clip global norm seen
        self.lowest_loss = math.inf  # the lowest finite epoch training loss (`unlearned`)

    def _guard(self):
        optimizer = self.model.optimizer
        for candidate in (optimizer, getattr(optimizer, "inner_optimizer", None)):
            if isinstance(candidate, GradientGuard):
                return candidate
        raise ValueError(
            "RunRecord needs a model compiled with a gradguard.GradientGuard optimizer; "
            f"this one has {type(optimizer).__name__}"
        )

    def on_train_begin(self, logs=None):
        self._guard()
        if self.initial_norm is None:  # a second fit continues the same run
            self.initial_norm = host_global_norm(self.model.trainable_weights)

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and math.isfinite(float(loss)):
            self.lowest_loss = min(self.lowest_loss, float(loss))
        self.epoch_norms.append(host_global_norm(self.model.trainable_weights))
        self.stats = read_stats(self._guard())
        self.max_grad_norm = max(self.max_grad_norm, float(self.stats["window_norm_max"]))

    @property
    def diverged(self) -> bool:
        return bool(self.stats.get("diverged", 0))

    @property
    def weight_growth(self) -> float:
        return weight_growth(self.initial_norm or 0.0, self.epoch_norms)


def write_verdict(
    target,
    record: RunRecord,
    *,
    accuracy: float,
    class_shares: Sequence[float],
    rules: VerdictRules | None = None,
) -> str:
    """Judge the run and write the verdict; returns it (`gradguard.verdict.VERDICTS`).

    Args:
        target: a JSON file's path (written atomically, parent folders made), or a
            `dvclive.Live`, whose summary gets the same keys (`live.summary`).
        record: the `RunRecord` that followed the run's `fit`.
        accuracy: the kept model's test accuracy, from the user's own evaluation.
        class_shares: each class's share of the test set (chance is the largest).
        rules: the thresholds (`VerdictRules()`, the pipeline's defaults, if None).

    Written keys: verdict, accuracy, diverged, weight_growth, and the guard's
    skipped_steps, clipped_steps, max_grad_norm (largest finite pre-clip norm of an
    epoch's steps), first_nonfinite_step.
    """
    verdict = run_verdict(
        diverged=record.diverged,
        weight_growth=record.weight_growth,
        accuracy=float(accuracy),
        class_shares=list(class_shares),
        rules=rules or VerdictRules(),
        lowest_loss=record.lowest_loss if math.isfinite(record.lowest_loss) else None,
    )
    stats = record.stats
    values = {
        "verdict": verdict,
        "accuracy": float(accuracy),
        "diverged": record.diverged,
        "weight_growth": record.weight_growth,
        "skipped_steps": stats.get("skipped_steps"),
        "clipped_steps": stats.get("clipped_steps"),
        "max_grad_norm": record.max_grad_norm,
        "first_nonfinite_step": stats.get("first_nonfinite_step"),
    }
    if hasattr(target, "summary") and hasattr(target, "make_summary"):  # a dvclive.Live
        target.summary.update({k: _plain(v) for k, v in values.items()})
        target.make_summary()
    else:
        write_json(target, values)  # atomically, its folders made
    return verdict


def _plain(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value
