"""gradguard.loss_scale: on one device, the guarded loss scaler is Keras's own, step for step.

(Its cross-replica decision, under MirroredStrategy, is in tests/test_tf_distribute.py.)
"""

from __future__ import annotations

import keras
import numpy as np

from gradguard import GradientGuard
from gradguard.loss_scale import GuardedLossScaleOptimizer
from gradguard.training.callbacks import read_stats
from tests.parallel_cases import GLOBAL_BATCH, data, mlp


def overflow_run(scaler_class):
    """4 steps under mixed_float16 whose second batch overflows float16 once scaled."""
    x, y = data()
    y[12:16] = 3e4  # a loss gradient beyond 65504 at any scale >= 1
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = mlp()
        guard = GradientGuard(keras.optimizers.Adam(0.01), mode="global_norm", clip_norm=1.0)
        scaler = scaler_class(guard, initial_scale=1024.0)
        model.compile(optimizer=scaler, loss="mse")
        model.fit(
            x, y, batch_size=GLOBAL_BATCH, epochs=1, steps_per_epoch=4, shuffle=False, verbose=0
        )
    finally:
        keras.config.set_dtype_policy("float32")
    return [np.asarray(w) for w in model.weights], scaler


def test_one_device_gives_kerass_weights_scale_and_skipped_step():
    ours, guarded = overflow_run(GuardedLossScaleOptimizer)
    theirs, plain = overflow_run(keras.optimizers.LossScaleOptimizer)
    # The overflow step is skipped by the scaler (not the guard) and the scale halves once.
    assert float(np.asarray(guarded.dynamic_scale)) == 512.0
    assert int(np.asarray(guarded.inner_optimizer.iterations)) == 3
    assert read_stats(guarded.inner_optimizer)["skipped_steps"] == 0
    assert float(np.asarray(plain.dynamic_scale)) == 512.0
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)
