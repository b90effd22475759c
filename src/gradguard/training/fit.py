"""Training: determinism, the model and its guarded optimizer, callbacks, and a result summary."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from gradguard.io import fingerprint
from gradguard.params import Params
from gradguard.training.callbacks import DivergenceMonitor, GradientStatsLogger, read_stats
from gradguard.training.models import build_cnn, build_optimizer, load_model
from gradguard.training.recovery import ExplosionRecovery
from gradguard.training.resume import (
    ResumableEarlyStopping,
    ResumeState,
    SaveResumeState,
    restore_random_states,
)


def configure_determinism(seed: int) -> None:
    """Seed Python, NumPy and the backend; make TensorFlow's ops deterministic.

    Uses the GPU when TensorFlow sees one: nothing here pins a device.
    """
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


@contextlib.contextmanager
def training_context(distribute: str, mixed_precision: bool):
    """Build and compile inside this: the distribution scope and the dtype policy.

    The global dtype policy is restored on exit; the model keeps the policy it
    was built with.

    `distribute="multihost"` needs the distribution `gradguard.training.multihost.initialize`
    set.

    Raises:
        ValueError: `distribute="mirrored"` on a backend other than TensorFlow;
            `"multihost"` without the JAX backend's distribution.
    """
    backend = keras.backend.backend()
    if distribute == "mirrored" and backend != "tensorflow":
        raise ValueError(
            f"train.distribute={distribute!r} needs the TensorFlow backend; this is {backend!r}"
        )
    distributed = backend == "jax" and keras.distribution.distribution() is not None
    if distribute == "multihost" and not distributed:
        raise ValueError(
            "train.distribute='multihost' needs the JAX backend and "
            "gradguard.training.multihost.initialize() called first"
        )
    previous = keras.config.dtype_policy()
    if mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        if distribute in ("none", "multihost"):  # multihost: Keras's global distribution
            yield
        else:
            from gradguard._tf_distribute import strategy_scope

            with strategy_scope(distribute):
                yield
    finally:
        keras.config.set_dtype_policy(previous)


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


def _shape_and_classes(train, val) -> tuple[tuple[int, ...], int]:
    """The image shape and the class count of arrays or streamed shard sets."""
    if isinstance(train, keras.utils.PyDataset):
        return tuple(train.image_shape), max(train.num_classes, val.num_classes)
    return train[0].shape[1:], int(max(train[1].max(), val[1].max())) + 1


def run_fingerprint(params: Params, *arrays: np.ndarray) -> str:
    """Identifies a training run: the params it reads and the data it sees."""
    train_params = dataclasses.asdict(params)
    for section in ("data", "augment", "evaluate"):
        train_params.pop(section)
    blob = json.dumps(train_params, sort_keys=True).encode()
    return fingerprint(np.frombuffer(blob, np.uint8), *arrays)


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
    train: tuple,
    val: tuple,
    *,
    checkpoint: str | Path,
    resume: ResumeState,
    live_dir: str | Path,
    extra_callbacks=(),
    on_step_log=None,
    verbose: int = 2,
) -> tuple[keras.Model, TrainResult]:
    """Train the CNN the params describe, resuming an interrupted run of the same params.

    Args:
        params: validated params.
        train, val: `(x, y)` arrays, or `gradguard.data.stream.ShardSequence`s (streamed;
            the training one seeded, so that it shuffles). With
            `train.distribute: multihost`, sequences of full batches (each
            process's share), whose sample weights the loss and accuracy honour.
        checkpoint: where `ModelCheckpoint` keeps the best model by `val_loss`.
        resume: the resume state of this run (see `gradguard.training.resume`); the caller
            restores it (files) before and clears it after.
        live_dir: the DVCLive folder, saved with the resume state.
        extra_callbacks: run after the gradient logger (e.g. DVCLive's callback,
            which then logs the gradient statistics too).
        on_step_log: receives each epoch's per-step gradient norms (see
            `GradientStatsLogger`).
        verbose: Keras's `fit` verbosity.

    Returns:
        The model with its best weights restored, and the `TrainResult`.
    """
    started = time.perf_counter()
    state_file = resume.folder / "state.json"
    saved = json.loads(state_file.read_text()) if state_file.is_file() else {}
    model = _compiled_model(params, train, val, resume if saved else None)
    if saved:  # model.save does not keep dropout's seed generators
        restore_random_states(model, resume.load_arrays())
    best_weights = (
        load_model(checkpoint).get_weights() if saved and Path(checkpoint).is_file() else None
    )
    initial_norm = saved.get("initial_weight_norm") or host_global_norm(model.trainable_weights)
    guard = unwrap_guard(model.optimizer)
    watch = _Watchers.create(params, guard, checkpoint, saved, best_weights, on_step_log)
    watch.recovery.restore(saved.get("recovery", {}), resume.load_arrays() if saved else {})
    callbacks = [
        watch.stats,
        *extra_callbacks,
        watch.recovery,
        watch.divergence,
        watch.checkpointer,
        watch.early_stopping,
        watch.saver(resume, checkpoint, live_dir, initial_norm),
    ]
    initial_epoch = saved["epoch"] + 1 if saved else 0
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


def _compiled_model(params: Params, train, val, resume: ResumeState | None) -> keras.Model:
    """The resumed model, or the CNN of the params compiled with the guarded optimizer."""
    with training_context(params.train.distribute, params.train.mixed_precision):
        if resume is not None:
            return resume.load_model()
        input_shape, num_classes = _shape_and_classes(train, val)
        model = build_cnn(
            input_shape, num_classes, params.model, params.init, params.init_scale, params.seed
        )
        if params.train.distribute == "multihost":  # full batches, repeats weighted 0
            loss = keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight")
            metrics = {"weighted_metrics": ["accuracy"]}
        else:
            loss, metrics = "sparse_categorical_crossentropy", {"metrics": ["accuracy"]}
        model.compile(optimizer=build_optimizer(params, num_classes), loss=loss, **metrics)
    return model


@dataclasses.dataclass
class _Watchers:
    """The callbacks that watch a run, each continued from the saved state of a resumed one."""

    guard: object
    stats: GradientStatsLogger
    divergence: DivergenceMonitor
    recovery: ExplosionRecovery
    checkpointer: keras.callbacks.ModelCheckpoint
    early_stopping: ResumableEarlyStopping

    @classmethod
    def create(
        cls, params: Params, guard, checkpoint, saved: dict, best_weights, on_step_log=None
    ) -> _Watchers:
        knobs = params.train
        stats = GradientStatsLogger(guard, on_step_log)
        stats.restore(saved.get("gradient_stats", {}))
        return cls(
            guard=guard,
            stats=stats,
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
                initial_value_threshold=saved.get("checkpoint_best") or float("inf"),
            ),
            early_stopping=ResumableEarlyStopping(
                monitor="val_loss",
                patience=knobs.patience,
                restore_best_weights=True,
                initial_wait=saved.get("early_stopping_wait", 0),
                initial_best=saved.get("early_stopping_best"),
                initial_best_epoch=saved.get("best_epoch"),
                initial_weights=best_weights,
            ),
        )

    def saver(self, resume: ResumeState, checkpoint, live_dir, initial_norm) -> SaveResumeState:
        """The callback that saves everything these watchers need to go on after a kill."""
        return SaveResumeState(
            resume,
            checkpoint,
            live_dir,
            self.checkpointer,
            self.early_stopping,
            extras=lambda: {
                "gradient_stats": self.stats.state(),
                "recovery": self.recovery.state(),
                "initial_weight_norm": initial_norm,
            },
            arrays=self.recovery.snapshot_arrays,
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
