"""GradientGuard under tf.distribute.MirroredStrategy and mixed precision (TensorFlow only)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from gradguard import GradientGuard
from gradguard.training.callbacks import read_stats
from tests.conftest import tensorflow_only
from tests.parallel_cases import GLOBAL_BATCH, MODES, data, mlp

pytestmark = tensorflow_only


def train(optimizer_factory, strategy=None, x=None, y=None, steps=4):
    """Weights after `steps` SGD steps of a 3->4->2 MLP with fixed initial weights."""
    import tensorflow as tf

    x, y = (x, y) if x is not None else data()
    with (strategy or tf.distribute.get_strategy()).scope():
        model = mlp()
        optimizer = optimizer_factory()
        model.compile(optimizer=optimizer, loss="mse")
    model.fit(
        x, y, batch_size=GLOBAL_BATCH, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0
    )
    return [w.numpy() for w in model.weights], optimizer


def mirrored():
    import tensorflow as tf

    from gradguard._tf_distribute import mirrored_strategy

    # The same strategy object the pipeline's train.distribute=mirrored uses.
    strategy = mirrored_strategy(tuple(d.name for d in tf.config.list_logical_devices("CPU")))
    assert strategy.num_replicas_in_sync == 2
    return strategy


@pytest.mark.parametrize("mode", sorted(MODES))
def test_two_replicas_match_one_device_for_every_mode(mode):
    def make():
        return GradientGuard(keras.optimizers.SGD(0.1), mode=mode, **MODES[mode])

    one, guard_one = train(make)
    two, guard_two = train(make, mirrored())
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    stats_one, stats_two = read_stats(guard_one), read_stats(guard_two)
    assert stats_two["pre_clip_norm"] == pytest.approx(stats_one["pre_clip_norm"], rel=1e-5)
    # Each replica records its share of the batch loss; the variable sums them.
    assert stats_two["batch_loss"] == pytest.approx(stats_one["batch_loss"], rel=1e-5)
    assert stats_two["clipped_steps"] == stats_one["clipped_steps"]
    if mode not in ("none", "autoclip"):
        assert stats_one["clipped_steps"] > 0  # the comparison exercised clipping


def test_keras_global_clipnorm_clips_per_replica_and_so_differs():
    # The bug GradientGuard avoids: Keras clips each replica's local gradient.
    def make():
        return keras.optimizers.SGD(0.1, global_clipnorm=0.3)

    one, _ = train(make)
    two, _ = train(make, mirrored())
    assert max(float(np.abs(a - b).max()) for a, b in zip(one, two, strict=True)) > 1e-3


def replica_shards(strategy, x, batch_size=8):
    """Each global batch as the replicas get it (the split Keras's fit uses)."""
    import tensorflow as tf

    batches = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(x).batch(batch_size)
    )
    return [[t.numpy() for t in strategy.experimental_local_results(b)] for b in batches]


def test_skip_decision_agrees_across_replicas():
    # Row 13 is the second global batch's 6th row: replica 1's shard only. Replica 0's
    # local gradient is finite, so a skip decided from it (the decision the cross-replica
    # cond reads) would apply a NaN update; the all-reduced gradient is NaN on both.
    x, y = data()
    x[13] = np.nan
    strategy = mirrored()
    shard_0, shard_1 = replica_shards(strategy, x)[1]
    assert np.isnan(shard_1).any() and not np.isnan(shard_0).any()

    def make():
        return GradientGuard(keras.optimizers.SGD(0.1), mode="global_norm", clip_norm=0.3)

    one, guard_one = train(make, x=x, y=y)
    two, guard_two = train(make, strategy, x=x, y=y)
    assert read_stats(guard_one)["skipped_steps"] == read_stats(guard_two)["skipped_steps"] == 1
    for a, b in zip(one, two, strict=True):
        assert np.isfinite(b).all()
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_mixed_precision_clips_the_unscaled_gradient():
    weights = keras.Variable(np.zeros(2, "float32"))
    guard = GradientGuard(keras.optimizers.SGD(1.0), mode="global_norm", clip_norm=1.0)
    scaler = keras.optimizers.LossScaleOptimizer(guard, initial_scale=1024.0)
    scaled = keras.ops.convert_to_tensor(np.array([3.0, 4.0], "float32") * 1024.0)
    scaler.apply([scaled], [weights])
    np.testing.assert_allclose(weights.numpy(), [-0.6, -0.8], rtol=1e-6)
    assert read_stats(guard)["pre_clip_norm"] == pytest.approx(5.0)  # not 5 * 1024


def test_mixed_float16_fit_reports_unscaled_norms():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        _, optimizer = train(
            lambda: GradientGuard(keras.optimizers.SGD(0.01), mode="global_norm", clip_norm=1.0)
        )
    finally:
        keras.config.set_dtype_policy("float32")
    assert isinstance(optimizer, GradientGuard)
    # Keras wrapped the guard in a LossScaleOptimizer at compile time (scale 2**15).
    norm = read_stats(optimizer)["pre_clip_norm"]
    assert 0.0 < norm < 1e4  # the loss scale, 32768, would put it far above


def overflow_run(scaler_class, strategy=None):
    """4 steps under mixed_float16 with a float16 overflow in replica 1's rows of batch 1."""
    from gradguard.loss_scale import GuardedLossScaleOptimizer

    x, y = data()
    # The second global batch's last 4 rows (replica 1's shard only) get huge targets: their
    # loss gradient, times the loss scale, is beyond float16 (65504) at any scale >= 1.
    y[12:16] = 3e4
    made = []

    def make():  # inside the strategy's scope
        guard = GradientGuard(keras.optimizers.Adam(0.01), mode="global_norm", clip_norm=1.0)
        kind = {"keras": keras.optimizers.LossScaleOptimizer, "guarded": GuardedLossScaleOptimizer}
        made.append(kind[scaler_class](guard, initial_scale=1024.0))
        return made[-1]

    keras.config.set_dtype_policy("mixed_float16")
    try:
        weights, _ = train(make, strategy, x=x, y=y)
    finally:
        keras.config.set_dtype_policy("float32")
    scaler = made[-1]
    guard = scaler.inner_optimizer
    return weights, float(scaler.dynamic_scale.numpy()), int(guard.iterations.numpy()), guard


def test_a_float16_overflow_on_one_replica_lowers_the_loss_scale_on_all():
    strategy = mirrored()
    y = data()[1]
    y[12:16] = 3e4
    shard_0, shard_1 = replica_shards(strategy, y)[1]
    assert (shard_1 == 3e4).any() and not (shard_0 == 3e4).any()

    one, scale_one, applied_one, guard_one = overflow_run("guarded")
    assert (scale_one, applied_one) == (512.0, 3)  # the overflow step skipped, the scale halved
    assert read_stats(guard_one)["skipped_steps"] == 0  # the scaler skipped it, not the guard

    # Keras's own scaler reads replica 0's local gradients: it would miss the overflow (or
    # part the replicas in a graph error). It is refused before the first step.
    with pytest.raises(ValueError, match="GuardedLossScaleOptimizer") as error:
        overflow_run("keras", strategy)
    assert "\n" not in str(error.value) and "on 2 replicas" in str(error.value)

    two, scale_two, applied_two, guard_two = overflow_run("guarded", strategy)
    assert (scale_two, applied_two) == (512.0, 3)
    assert read_stats(guard_two)["skipped_steps"] == 0
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)  # float16 compute; measured 5e-6 apart


def test_compile_under_mixed_float16_on_two_replicas_is_refused_before_the_first_step():
    # The way Keras users write it: compile() wraps the guard in Keras's LossScaleOptimizer.
    import tensorflow as tf

    x, y = data()
    y[12:16] = 3e4  # the overflow in replica 1's rows
    keras.config.set_dtype_policy("mixed_float16")
    try:
        with mirrored().scope():
            model = mlp()
            guard = GradientGuard(keras.optimizers.Adam(0.01), mode="global_norm", clip_norm=1.0)
            model.compile(optimizer=guard, loss="mse")
        assert type(model.optimizer) is keras.optimizers.LossScaleOptimizer
        before = [w.numpy().copy() for w in model.weights]
        with pytest.raises(ValueError, match=r"write compile\(optimizer=gradguard\.Guarded"):
            model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, steps_per_epoch=4, verbose=0)
        # On one device the same wrapper is right, and it trains. Unshuffled clean data and
        # 12 steps: the first steps overflow at Keras's initial scale 2**15 and are skipped
        # while it halves, so the count applied is fixed, not a draw of fit()'s shuffle.
        with tf.distribute.get_strategy().scope():
            single = mlp()
            single.compile(optimizer=GradientGuard(keras.optimizers.Adam(0.01)), loss="mse")
        single.fit(
            *data(), batch_size=GLOBAL_BATCH, epochs=3, steps_per_epoch=4, shuffle=False, verbose=0
        )
    finally:
        keras.config.set_dtype_policy("float32")
    assert all((w.numpy() == b).all() for w, b in zip(model.weights, before, strict=True))
    # Two overflowing steps halve 2**15 twice; the other 10 of 12 are applied.
    applied = int(single.optimizer.iterations.numpy())
    assert (applied, float(single.optimizer.dynamic_scale.numpy())) == (10, 8192.0)
