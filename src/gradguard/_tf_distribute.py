"""The TensorFlow-only part of `GradientGuard`: `tf.distribute` and stateful `tf.cond`.

Keras 3's own `clipnorm`/`global_clipnorm` clip each replica's *local* gradient
before the all-reduce (`BaseOptimizer.apply` clips, then the TF backend's
`_backend_update_step` sums), so a two-replica run is not the one-device run.
Here the guard sums first, clips the sum, then hands each replica
clipped / num_replicas; the inner optimizer's own all-reduce adds those back up
to exactly the clipped sum (for two replicas the halving is exact in floating
point). The skip decision comes from the all-reduced gradient, so every replica
takes the same branch.
"""

from __future__ import annotations

import contextlib
import functools
import sys

import keras
import tensorflow as tf
from keras import ops


def strategy_scope(distribute: str, devices: list[str] | None = None):
    """The scope to build and compile a model in for `train.distribute`.

    Args:
        distribute: "none" (the default strategy) or "mirrored"
            (`tf.distribute.MirroredStrategy` over all visible GPUs; without a
            GPU, over every logical CPU device: one on a plain machine, two in
            the tests, which split the CPU into two logical devices).
        devices: explicit devices for "mirrored"; None picks as above.
    """
    if distribute == "none":
        return contextlib.nullcontext()
    if devices is None:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
    return mirrored_strategy(tuple(devices)).scope()


@functools.cache
def mirrored_strategy(devices: tuple[str, ...]) -> tf.distribute.MirroredStrategy:
    """One `MirroredStrategy` per device set and process.

    TensorFlow's collective-op keys are process-wide: several strategies over
    the same devices in one process can pair up each other's all-reduces
    ("Shape mismatch in the collective instance"), so they are shared.
    """
    return tf.distribute.MirroredStrategy(list(devices))


def replicas() -> int:
    """How many replicas the strategy in force runs in sync (1 without one)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def apply(guard, grads: list, trainable_variables: list) -> None:
    """Apply `guard` (a `GradientGuard`) to `grads` under any `tf.distribute` strategy."""
    if tf.distribute.in_cross_replica_context():
        raise ValueError("GradientGuard.apply() must be called in a replica context")
    count = replicas()
    if count > 1:
        present = [i for i, g in enumerate(grads) if g is not None]
        summed = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, [grads[i] for i in present]
        )
        for i, g in zip(present, summed, strict=True):
            grads[i] = g
    clipped, apply_update, commit = guard.stateful_guard_step(grads, trainable_variables)
    if count > 1:
        clipped = [None if g is None else g / count for g in clipped]

    inner = guard.inner_optimizer
    if not guard.may_skip:
        inner.apply(clipped, trainable_variables)
    elif tf.__internal__.distribute.strategy_supports_no_merge_call():
        ops.cond(apply_update, lambda: inner.apply(clipped, trainable_variables), lambda: None)
    else:
        # As in keras.optimizers.LossScaleOptimizer: a cond whose branch calls
        # merge_call (every inner optimizer does) must run in cross-replica context.
        def cross_replica(distribution, clipped, apply_update):
            decision = distribution.experimental_local_results(apply_update)[0]

            def update():
                distribution.extended.call_for_each_replica(
                    inner.apply, args=(clipped, trainable_variables)
                )

            ops.cond(decision, update, lambda: None)

        tf.distribute.get_replica_context().merge_call(cross_replica, args=(clipped, apply_update))
    commit()  # the guard's statistics, after the update that needs only `apply_update`


def all_replicas(flag):
    """`flag` (a boolean scalar) held on every replica, from a replica context; else `flag`."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return flag
    failed = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(~flag, tf.float32))
    return tf.equal(failed, 0.0)


def loss_scaled_apply(scaler, grads: list, trainable_variables: list) -> None:
    """`LossScaleOptimizer._tf_apply` with the overflow decision taken from all replicas.

    The decision is made in the replica context (where `all_replicas` can
    all-reduce) and handed to the cross-replica cond, which Keras's version
    computes there from replica 0 alone.
    """
    if tf.distribute.in_cross_replica_context():
        raise ValueError("apply() must be called in a replica context.")
    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        scaler._common_apply(grads, trainable_variables=trainable_variables)
        return
    finite = scaler.check_finite(grads)  # the same on every replica

    def cross_replica(distribution, finite, grads, trainable_variables):
        decision = distribution.experimental_local_results(finite)[0]

        def apply_finite():
            distribution.extended.call_for_each_replica(
                scaler._stateful_handle_finite_grads, args=(grads, trainable_variables)
            )

        ops.cond(decision, apply_finite, scaler._stateful_handle_non_finite_grads)

    tf.distribute.get_replica_context().merge_call(
        cross_replica, args=(finite, grads, trainable_variables)
    )


def refuse_a_per_replica_loss_scale(guard) -> None:
    """Refuse, before the first step, Keras's own `LossScaleOptimizer` around the guard on
    several `tf.distribute` replicas: it decides a float16 overflow from one replica's local
    gradients, so the run skips every update, or its replicas part ways in a graph error.

    `compile()` adds that wrapper by itself under `mixed_float16`, so it is found by what
    builds the guard (the wrapper's `build`) rather than by what the user wrote.
    """
    count = replicas()
    if count < 2:
        return
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if (
            type(owner) is keras.optimizers.LossScaleOptimizer
            and getattr(owner, "inner_optimizer", None) is guard
        ):
            raise ValueError(
                f"GradientGuard on {count} replicas is wrapped in Keras's LossScaleOptimizer "
                "(compile() adds it under mixed_float16), which decides float16 overflow on "
                "one replica's gradients; write compile(optimizer=gradguard."
                "GuardedLossScaleOptimizer(GradientGuard(...)))"
            )
        frame = frame.f_back
