"""Dynamic loss scaling whose overflow decision is the same on every replica.

Keras's `LossScaleOptimizer` checks each replica's *local* gradients for
Inf/NaN and, under `tf.distribute` strategies that need a merge call
(`MirroredStrategy`), takes replica 0's answer for all of them. A float16
overflow in replica 1's rows alone then goes unseen: the loss scale never
drops, and the guard, which sees the all-reduced (non-finite) gradient, skips
every step. `GuardedLossScaleOptimizer` decides from all replicas together
(an all-reduce of the local flags, the same sum the gradients get), so the
scale and the skip follow the one-device run. On one device, and on JAX, where
the gradient is already the global one, it is Keras's optimizer unchanged.

`gradguard.training.models.build_optimizer` wraps the guard in it when
`train.mixed_precision` is set; Keras's `compile` then leaves it as it is.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="gradguard")
class GuardedLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """`keras.optimizers.LossScaleOptimizer` with a cross-replica overflow decision."""

    def check_finite(self, grads):
        finite = super().check_finite(grads)
        if keras.backend.backend() == "tensorflow":
            from gradguard._tf_distribute import all_replicas

            finite = all_replicas(finite)
        return finite

    def _tf_apply(self, grads, trainable_variables=None):
        from gradguard._tf_distribute import loss_scaled_apply

        loss_scaled_apply(self, grads, trainable_variables)
