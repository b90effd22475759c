"""Recovery policies on runs forced to explode deterministically (a poisoned batch)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from gradguard import GradientGuard
from gradguard.callbacks import read_stats
from gradguard.recovery import ExplosionRecovery

W_TRUE = np.array([[2.0], [-1.0]], "float32")


def data(poison: str, at_batch: int = 10, batches: int = 16):
    """y = x @ W_TRUE in batches of 2, one batch poisoned with NaN or a huge target."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2 * batches, 2)).astype("float32")
    y = x @ W_TRUE
    rows = slice(2 * at_batch, 2 * at_batch + 2)
    if poison == "nan":
        x[rows] = np.nan
    elif poison == "spike":
        y[rows] *= 1e4  # finite, but a gradient norm far above the window's band
    return x, y


def train(policy, poison, epochs=1, inner=None, **kwargs):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )
    guard = GradientGuard(
        inner or keras.optimizers.SGD(0.1),
        # 8 < 16 batches an epoch: every finite norm enters the window, spikes too, so
        # the window must forget one epoch's poisoned batch before the next comes back.
        spike_window=8,
        spike_sigma=6.0,
        skip_spikes=policy in ("skip", "rollback"),
    )
    model.compile(optimizer=guard, loss="mse")
    recovery = ExplosionRecovery(guard, policy, snapshot_every=4, **kwargs)
    x, y = data(poison)
    model.fit(x, y, batch_size=2, epochs=epochs, shuffle=False, verbose=0, callbacks=[recovery])
    return model.layers[0].kernel.numpy(), guard, recovery


@pytest.mark.parametrize("poison", ["nan", "spike"])
def test_rollback_restores_a_snapshot_backs_off_and_finishes_finite(poison):
    weights, guard, recovery = train("rollback", poison, epochs=3, lr_backoff=0.5, max_rollbacks=5)
    assert np.isfinite(weights).all()
    assert recovery.rollbacks == 3  # the poisoned batch comes back once per epoch
    first = recovery.events[0]
    assert first["kind"] == "rollback" and first["step"] - 5 <= first["to_step"] < first["step"]
    assert float(guard.learning_rate.numpy()) == pytest.approx(0.1 * 0.5**3)
    assert not recovery.stopped
    # Training went on after each rollback: on clean data the mean squared error is under
    # 10 % of where it started (zero weights: mean(y^2)).
    x, y = data("none")
    start, end = np.mean(y**2), np.mean((x @ weights - y) ** 2)
    assert end < 0.1 * start
    stats = read_stats(guard)
    assert stats["events"] == 3 and stats["skipped_steps"] == 3


def test_rollback_gives_up_after_max_rollbacks():
    weights, _, recovery = train("rollback", "nan", epochs=3, max_rollbacks=1)
    assert recovery.rollbacks == 1 and recovery.stopped
    assert [e["kind"] for e in recovery.events] == ["rollback", "stop"]
    assert np.isfinite(weights).all()


def test_stop_ends_the_run_at_the_first_event():
    _, guard, recovery = train("stop", "spike")
    assert recovery.stopped and recovery.events == [{"step": 11, "kind": "stop"}]
    assert read_stats(guard)["spikes"] == 1


def test_skip_drops_only_the_offending_update():
    weights, guard, recovery = train("skip", "spike")
    assert not recovery.stopped and recovery.rollbacks == 0
    assert read_stats(guard)["skipped_steps"] == 1 and np.isfinite(weights).all()


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="policy='retry'"):
        ExplosionRecovery(None, "retry")


def test_rollback_restores_adam_moments_built_lazily():
    # TensorFlow builds the optimizer only when it traces the first step; the snapshot
    # taken as training begins must hold Adam's moments all the same.
    weights, guard, recovery = train("rollback", "nan", inner=keras.optimizers.Adam(0.1))
    assert recovery.rollbacks == 1 and np.isfinite(weights).all()
    _, _, slots = recovery._snapshot
    assert len(slots) == len(guard.inner_optimizer.variables) == 4  # iterations, lr, m, v


def test_state_and_snapshot_round_trip_for_a_resumed_run():
    _, guard, recovery = train("rollback", "nan", epochs=2, max_rollbacks=5)
    arrays = recovery.snapshot_arrays()
    assert sorted(arrays) == ["slot_000", "slot_001", "weight_000"]  # SGD: iterations, lr
    resumed = ExplosionRecovery(guard, "rollback", snapshot_every=4)
    resumed.restore(recovery.state(), dict(reversed(arrays.items())))  # order-proof
    step, weights, slots = resumed._snapshot
    assert step == recovery._snapshot[0] and resumed.rollbacks == recovery.rollbacks == 2
    np.testing.assert_array_equal(weights[0], recovery._snapshot[1][0])
    assert [float(s) for s in slots] == [float(s) for s in recovery._snapshot[2]]
    assert resumed.events == recovery.events
