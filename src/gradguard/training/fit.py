"""Training: determinism, the model and its guarded optimizer, callbacks, and a result summary."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from gradguard.kind_keys import check_kind
from gradguard.params import Params
from gradguard.training.callbacks import (
    DivergenceMonitor,
    GradientStatsLogger,
    ResumableEarlyStopping,
    read_stats,
)
from gradguard.training.families import build_model
from gradguard.training.models import build_optimizer, training_context
from gradguard.training.recovery import ExplosionRecovery
from gradguard.training.resume import ResumeState, SaveResumeState, Snapshot


def host_global_norm(variables) -> float:
    """The L2 norm of all the variables together, computed in float64 on the host."""
    return math.sqrt(sum(float(np.sum(np.square(np.asarray(v, np.float64)))) for v in variables))


def weight_growth(initial_norm: float, epoch_norms: Sequence[float]) -> float:
    """The largest epoch-end global weight norm over the initial one (inf if non-finite).

    Args:
        initial_norm: the global L2 norm of the trainable weights before training.
        epoch_norms: the same norm at each epoch's end.
    """
    if not epoch_norms:
        return 1.0
    if not all(math.isfinite(norm) for norm in epoch_norms):
        return math.inf
    return max(epoch_norms) / max(initial_norm, 1e-12)


_KIND_OF_RANK = {4: "image", 3: "sequence", 2: "table"}  # of an (x, y) pair's x


def data_shape(train, val) -> tuple[str, tuple[int, ...], int]:
    """The kind, example shape and class count of arrays or streamed shard sets."""
    if isinstance(train, keras.utils.PyDataset):
        classes = max(train.num_classes, val.num_classes)
        return train.kind, tuple(train.example_shape), classes
    x, y = train
    return _KIND_OF_RANK.get(x.ndim, "image"), x.shape[1:], int(max(y.max(), val[1].max())) + 1


@dataclasses.dataclass
class TrainResult:
    """What a training run reports beside its per-epoch curves."""

    # The fields compared most first: `dvc exp show` orders its columns as the summary does.
    diverged: bool
    max_grad_norm: float  # largest finite pre-clip global norm seen
    clip_fraction: float  # share of finite steps that clipping changed
    skipped_steps: int
    spikes: int  # gradient-norm spikes detected (see gradguard.functional.detection)
    loss_spikes: int  # batch-loss spikes detected (`train.loss_spikes`)
    collapses: int  # collapses back to the chance loss (`train.collapse_window`)
    rollbacks: int  # rollbacks made by the `rollback` policy
    # Largest epoch-end global weight norm / the initial one (see `weight_growth`).
    weight_growth: float
    first_nonfinite_step: int | None  # guard step of the first NaN/Inf gradient
    diverged_at_step: int | None  # batches seen when divergence ended the run
    epochs: int  # epochs run, resumed ones included
    best_epoch: int | None  # 1-based epoch of the best val_loss
    best_val_loss: float | None
    resumed_from_epoch: int | None
    wall_time_s: float
    recovery_events: list = dataclasses.field(default_factory=list)  # stops and rollbacks
    # Per layer, largest gradient norm first (`GradientStatsLogger.layer_summary`).
    layers: list = dataclasses.field(default_factory=list)
    # Per epoch: each layer's gradient and weight norms (`GradientStatsLogger.layer_epochs`).
    layer_epochs: list = dataclasses.field(default_factory=list)


def fit(
    params: Params,
    model: keras.Model,
    train: tuple,
    val: tuple,
    *,
    checkpoint: str | Path,
    resume: ResumeState,
    live_dir: str | Path,
    snapshot: Snapshot | None = None,
    extra_callbacks=(),
    on_step_log=None,
    verbose: int = 2,
) -> tuple[keras.Model, TrainResult]:
    """Train `model` as the params say, or go on from an interrupted run's `snapshot`.

    Args:
        params: validated params.
        model: `compiled_model`'s, or the snapshot's.
        train, val: `(x, y)` arrays, or `gradguard.data.stream.ShardSequence`s (streamed;
            the training one seeded, so that it shuffles). With
            `train.distribute: multihost`, sequences of full batches (each
            process's share), whose sample weights the loss and accuracy honour.
        checkpoint: where `ModelCheckpoint` keeps the best model by `val_loss`.
        resume: where each epoch's `Snapshot` is saved (see `gradguard.training.resume`).
        live_dir: the DVCLive folder, saved with the snapshot.
        snapshot: what `ResumeState.restore` loaded, to go on from; None for a fresh run.
        extra_callbacks: run after the gradient logger (e.g. DVCLive's callback,
            which then logs the gradient statistics too).
        on_step_log: receives each epoch's per-step gradient norms (see
            `GradientStatsLogger`).
        verbose: Keras's `fit` verbosity.

    Returns:
        The model with its best weights restored, and the `TrainResult`.
    """
    started = time.perf_counter()
    initial_norm = (
        snapshot.initial_weight_norm if snapshot else host_global_norm(model.trainable_weights)
    )
    watch = _RunCallbacks.create(params, unwrap_guard(model.optimizer), checkpoint, on_step_log)
    if snapshot:
        watch.go_on_from(snapshot)
    callbacks = [
        watch.stats,
        *extra_callbacks,
        watch.recovery,
        watch.divergence,
        watch.checkpointer,
        watch.early_stopping,
        SaveResumeState(resume, checkpoint, live_dir, lambda e: watch.snapshot(e, initial_norm)),
    ]
    initial_epoch = snapshot.epoch + 1 if snapshot else 0
    if isinstance(train, keras.utils.PyDataset):
        train.epoch = initial_epoch  # its shuffle order is a function of the epoch
        callbacks.insert(0, train.epoch_callback())
        data = {"x": train, "shuffle": False}
    else:
        data = {"x": train[0], "y": train[1], "batch_size": params.train.batch_size}
    history = model.fit(
        **data,
        validation_data=val,
        epochs=params.train.epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        verbose=verbose,
    )
    epochs = initial_epoch + len(history.history.get("loss", []))
    result = watch.result(initial_norm, initial_epoch, epochs, time.perf_counter() - started)
    return model, result


def unwrap_guard(optimizer):
    """The `GradientGuard` inside a (Keras or guarded) `LossScaleOptimizer`, or `optimizer`."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer


def compiled_model(params: Params, train, val) -> keras.Model:
    """The model of the params for this data (the user's builder's, or the family of the
    data's kind), compiled with the guarded optimizer.

    Raises:
        ParamsError: a `model` key that means nothing for the data's kind, or a
            builder that fails (see `gradguard.training.builder`).
    """
    kind, input_shape, num_classes = data_shape(train, val)
    check_kind(kind, model=params.model)
    with training_context(params.train.distribute, params.train.mixed_precision):
        model = build_model(input_shape, num_classes, params, kind)
        if params.train.distribute == "multihost":  # full batches, repeats weighted 0
            loss = keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight")
            metrics = {"weighted_metrics": ["accuracy"]}
        else:
            loss, metrics = "sparse_categorical_crossentropy", {"metrics": ["accuracy"]}
        model.compile(optimizer=build_optimizer(params, num_classes), loss=loss, **metrics)
    return model


@dataclasses.dataclass
class _RunCallbacks:
    """The callbacks that watch a run: made, continued from a `Snapshot`, saved to one, and
    read into the run's `TrainResult`."""

    guard: object
    stats: GradientStatsLogger
    divergence: DivergenceMonitor
    recovery: ExplosionRecovery
    checkpointer: keras.callbacks.ModelCheckpoint
    early_stopping: ResumableEarlyStopping

    @classmethod
    def create(cls, params: Params, guard, checkpoint, on_step_log=None) -> _RunCallbacks:
        knobs = params.train
        return cls(
            guard=guard,
            stats=GradientStatsLogger(guard, on_step_log),
            divergence=DivergenceMonitor(guard),
            recovery=ExplosionRecovery(
                guard,
                knobs.on_explosion,
                knobs.snapshot_every,
                knobs.lr_backoff,
                knobs.max_rollbacks,
                keep=knobs.snapshots_kept,
            ),
            checkpointer=keras.callbacks.ModelCheckpoint(
                checkpoint,
                monitor="val_loss",
                mode="min",
                save_best_only=True,
                initial_value_threshold=math.inf,  # a NaN first epoch is never the best
            ),
            early_stopping=ResumableEarlyStopping(
                monitor="val_loss", patience=knobs.patience, restore_best_weights=True
            ),
        )

    def go_on_from(self, snapshot: Snapshot) -> None:
        """Continue each watcher where an interrupted run's snapshot left it."""
        self.stats.restore(snapshot.gradient_stats)
        self.recovery.restore(snapshot.recovery, snapshot.arrays)
        if snapshot.checkpoint_best is not None:
            self.checkpointer.best = snapshot.checkpoint_best
        self.early_stopping.go_on_from(
            snapshot.early_stopping_wait,
            snapshot.early_stopping_best,
            snapshot.best_epoch,
            snapshot.best_weights,
        )

    def snapshot(self, epoch: int, initial_norm: float) -> Snapshot:
        """This epoch's `Snapshot` of the watchers (the saver adds the model)."""
        stopping = self.early_stopping
        return Snapshot(
            epoch=epoch,
            checkpoint_best=self.checkpointer.best,
            early_stopping_wait=stopping.wait,
            early_stopping_best=stopping.best,
            best_epoch=stopping.best_epoch,
            initial_weight_norm=initial_norm,
            gradient_stats=self.stats.state(),
            recovery=self.recovery.state(),
            arrays=self.recovery.snapshot_arrays(),
        )

    def result(self, initial_norm, initial_epoch: int, epochs: int, seconds) -> TrainResult:
        """The run's `TrainResult`, read from the guard and the watchers."""
        stats = read_stats(self.guard)
        divergence, recovery, stopping = self.divergence, self.recovery, self.early_stopping
        best_loss = stopping.best if np.isfinite(stopping.best) else None
        stopped_at = recovery.events[-1]["step"] if recovery.stopped else None
        first_nonfinite = stats["first_nonfinite_step"]
        epoch_norms = [
            math.sqrt(sum(layer["weight_norm"] ** 2 for layer in epoch["layers"].values()))
            for epoch in self.stats.layer_epochs
        ]
        return TrainResult(
            diverged=divergence.diverged or recovery.stopped,
            first_nonfinite_step=first_nonfinite if first_nonfinite >= 0 else None,
            diverged_at_step=divergence.step if divergence.diverged else stopped_at,
            epochs=epochs,
            best_epoch=None if best_loss is None else stopping.best_epoch + 1,
            best_val_loss=best_loss,
            max_grad_norm=self.stats.max_grad_norm,
            clip_fraction=self.stats.clip_fraction,
            skipped_steps=stats["skipped_steps"],
            spikes=stats["spikes"],
            loss_spikes=stats["loss_spikes"],
            collapses=stats["collapses"],
            rollbacks=recovery.rollbacks,
            weight_growth=weight_growth(initial_norm, epoch_norms),
            resumed_from_epoch=initial_epoch or None,
            wall_time_s=round(seconds, 3),
            recovery_events=recovery.events,
            layers=self.stats.layer_summary(),
            layer_epochs=self.stats.layer_epochs,
        )
