"""The callbacks that read a GradientGuard, in a real `fit` on the current backend."""

from __future__ import annotations

import math

import keras
import numpy as np

from gradguard import GradientGuard
from gradguard.callbacks import DivergenceMonitor, GradientStatsLogger


def tiny_fit(guard, x, y, epochs=2, on_step_log=None):
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")]
    )
    model.compile(optimizer=guard, loss="mse")
    logger, monitor = GradientStatsLogger(guard, on_step_log), DivergenceMonitor(guard)
    history = model.fit(
        x, y, batch_size=2, epochs=epochs, shuffle=False, verbose=0, callbacks=[logger, monitor]
    )
    return history, logger, monitor


def test_epoch_logs_carry_gradient_statistics_and_step_rows():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]], "float32")
    y = np.zeros((4, 1), "float32")
    rows = []
    guard = GradientGuard(keras.optimizers.SGD(0.01), clip_norm=1.0)
    history, logger, monitor = tiny_fit(guard, x, y, on_step_log=rows.extend)
    assert [len(v) for k, v in history.history.items() if k.startswith("grad")] == [2, 2]
    assert all(0.0 <= f <= 1.0 for f in history.history["clip_fraction"])
    assert [row[0] for row in rows] == [0, 1, 2, 3]  # 2 steps per epoch, global numbering
    assert logger.max_grad_norm == max(row[1] for row in rows)
    assert monitor.diverged is False


def test_divergence_stops_training_and_names_the_step():
    x = np.ones((8, 2), "float32")
    y = np.full((8, 1), np.nan, "float32")  # every gradient is NaN from step 0
    guard = GradientGuard(keras.optimizers.SGD(0.01), max_consecutive_skips=3)
    history, _, monitor = tiny_fit(guard, x, y, epochs=5)
    assert monitor.diverged is True and monitor.step == 3  # the third skip in a row
    assert len(history.history["loss"]) == 1  # stopped inside the first epoch
    assert math.isnan(history.history["loss"][0])
