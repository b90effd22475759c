"""The callbacks that read a GradientGuard, in a real `fit` on the current backend."""

from __future__ import annotations

import math

import keras
import numpy as np
from pytest import approx

from gradguard import GradientGuard
from gradguard.training.callbacks import DivergenceMonitor, GradientStatsLogger


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


def test_per_layer_norms_rank_the_layers_each_epoch():
    # The output layer starts at zero, so the hidden layer's gradient is exactly 0
    # in the first step; the output layer's is not.
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(2, kernel_initializer="ones", name="hidden"),
            keras.layers.Dense(1, kernel_initializer="zeros", name="out"),
        ]
    )
    guard = GradientGuard(keras.optimizers.SGD(0.0))  # lr 0: weights stay as built
    model.compile(optimizer=guard, loss="mse")
    logger = GradientStatsLogger(guard)
    x, y = np.ones((4, 2), "float32"), np.ones((4, 1), "float32")
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[logger])
    assert [e["largest"] for e in logger.layer_epochs] == [["out", "hidden"]] * 2
    first = logger.layer_epochs[0]["layers"]
    assert first["hidden"]["grad_norm_max"] == 0.0
    # d mse / d out.kernel = 2 * (0 - 1) * hidden output (2, 2): norm 4 * sqrt(2); bias 2.
    assert first["out"]["grad_norm_max"] == approx(math.sqrt(32 + 4))
    assert first["hidden"]["weight_norm"] == approx(2.0)  # four ones; biases zero
    assert logger.layer_max == approx({"out": 6.0, "hidden": 0.0})
    assert [row["layer"] for row in logger.layer_summary()] == ["out", "hidden"]
    again = GradientStatsLogger(guard)
    again.restore(logger.state())
    assert again.layer_summary() == logger.layer_summary()
