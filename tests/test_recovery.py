"""Recovery policies on runs forced to explode deterministically (a poisoned batch)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from gradguard import GradientGuard
from gradguard.training.callbacks import read_stats
from gradguard.training.recovery import ExplosionRecovery

W_TRUE = np.array([[2.0], [-1.0]], "float32")


def data(poison: str, at_batch: int | tuple = 10, batches: int = 16):
    """y = x @ W_TRUE in batches of 2, the batches `at_batch` poisoned with NaN or a huge target."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2 * batches, 2)).astype("float32")
    y = x @ W_TRUE
    for batch in np.atleast_1d(at_batch):
        rows = slice(2 * batch, 2 * batch + 2)
        if poison == "nan":
            x[rows] = np.nan
        elif poison == "spike":
            y[rows] *= 1e4  # finite, but a gradient norm far above the window's band
    return x, y


def train(policy, poison, epochs=1, inner=None, x_y=None, **kwargs):
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
    x, y = x_y or data(poison)
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


def test_an_unknown_policy_and_no_snapshots_are_refused():
    with pytest.raises(ValueError, match="policy='retry'"):
        ExplosionRecovery(None, "retry")
    with pytest.raises(ValueError, match="keep=0; expected an integer >= 1"):
        ExplosionRecovery(None, "rollback", keep=0)


def test_rollback_restores_adam_moments_built_lazily():
    # TensorFlow builds the optimizer only when it traces the first step; the snapshot
    # taken as training begins must hold Adam's moments all the same.
    weights, guard, recovery = train("rollback", "nan", inner=keras.optimizers.Adam(0.1))
    assert recovery.rollbacks == 1 and np.isfinite(weights).all()
    _, _, slots = recovery._snapshots[0]
    assert len(slots) == len(guard.inner_optimizer.variables) == 4  # iterations, lr, m, v


def weights_after_clean_steps(steps: int) -> np.ndarray:
    """The kernel after `steps` plain SGD(0.1) steps on the clean data (no guard events)."""
    x, y = data("none")
    kernel, _, _ = train("none", "none", x_y=(x[: 2 * steps], y[: 2 * steps]))
    return kernel


@pytest.mark.parametrize(("keep", "back_to", "left"), [(3, 4, [0, 4]), (1, 8, [8])])
def test_an_event_soon_after_a_rollback_goes_to_an_older_snapshot(keep, back_to, left):
    # 11 batches, snapshots every 4 updates: at steps 0, 4 and 8. Batches 9 and 10 are
    # NaN: the event after batch 9 (step 10) rolls back to step 8's snapshot; batch 10
    # brings another one (step 11) before any new snapshot, so step 8's state is doomed
    # and the run goes back to step 4's. With keep=1 there is nothing older: step 8 again.
    x_y = data("nan", at_batch=(9, 10), batches=11)
    weights, _, recovery = train("rollback", "nan", x_y=x_y, max_rollbacks=5, keep=keep)
    rollbacks = [(e["step"], e["to_step"]) for e in recovery.events]
    assert rollbacks == [(10, 8), (11, back_to)]
    assert [snapshot[0] for snapshot in recovery._snapshots] == left  # keep=3: 8 dropped
    # The fit ends right after the second rollback: the weights are that snapshot's.
    np.testing.assert_array_equal(weights, weights_after_clean_steps(back_to))
    assert float(recovery.guard.learning_rate.numpy()) == pytest.approx(0.1 * 0.5**2)


def test_a_quiet_stretch_after_a_rollback_clears_the_doubt():
    # Batches 5 and 13 are NaN, 8 updates apart: a snapshot (step 10) comes between the
    # rollback at step 6 and the event at step 14, which therefore goes to the newest one.
    x_y = data("nan", at_batch=(5, 13), batches=16)
    _, _, recovery = train("rollback", "nan", x_y=x_y, max_rollbacks=5)
    assert [(e["step"], e["to_step"]) for e in recovery.events] == [(6, 4), (14, 10)]


def test_state_and_snapshots_round_trip_for_a_resumed_run():
    _, guard, recovery = train("rollback", "nan", epochs=2, max_rollbacks=5)
    arrays = recovery.snapshot_arrays()
    # Three snapshots (keep=3); SGD's slots: iterations and learning rate.
    assert sorted(arrays) == sorted(
        f"{prefix}{kind}"
        for prefix in ("", "older1_", "older2_")
        for kind in ("slot_000", "slot_001", "weight_000")
    )
    state = recovery.state()
    assert state["snapshot_steps"][-1] == recovery._snapshots[-1][0]
    resumed = ExplosionRecovery(guard, "rollback", snapshot_every=4)
    resumed.restore(state, dict(reversed(arrays.items())))  # order-proof
    assert resumed.state() == state and resumed.rollbacks == 2
    assert len(resumed._snapshots) == len(recovery._snapshots) == 3
    for (step_a, weights_a, slots_a), (step_b, weights_b, slots_b) in zip(
        resumed._snapshots, recovery._snapshots, strict=True
    ):
        assert step_a == step_b
        np.testing.assert_array_equal(weights_a[0], weights_b[0])
        assert [float(s) for s in slots_a] == [float(s) for s in slots_b]
    assert resumed.snapshot_arrays().keys() == arrays.keys()
    fewer = ExplosionRecovery(guard, "rollback", keep=2)  # resumed with a smaller keep
    fewer.restore(state, arrays)
    assert [s[0] for s in fewer._snapshots] == state["snapshot_steps"][-2:]


@pytest.mark.skipif(
    keras.backend.backend() == "jax", reason="the collapse check reads the batch loss: not on JAX"
)
def test_a_collapse_rolls_back_to_a_snapshot_from_before_it():
    # Chance loss 4 (collapse_loss), so learned below 2 and at chance above 3.6. Zero weights
    # start at mean(y^2) ~ 5 (not yet learned); SGD brings the batch loss under 2 within 8
    # batches; batches 8-15 have targets x 1e4, far above 3.6. Spike rules off, window 5:
    # at chance on batches 8-12, the event on batch 12 (update 13). Snapshots every 4
    # updates: 0, 4, 8, 12; the one at 12 was taken inside the collapse, so it is dropped and
    # the run goes back to 8 (without the collapse rule: to 12).
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )
    guard = GradientGuard(
        keras.optimizers.SGD(0.1),
        spike_sigma=1e6,
        spike_warmup_factor=None,
        collapse_loss=4.0,
        collapse_window=5,
    )
    model.compile(optimizer=guard, loss="mse")
    recovery = ExplosionRecovery(guard, "rollback", snapshot_every=4, keep=3)
    x, y = data("spike", at_batch=tuple(range(8, 16)))
    model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0, callbacks=[recovery])
    losses = [row.batch_loss for row in guard.read_step_log()]
    assert max(losses[4:8]) < 2.0 < 3.6 < min(losses[8:13])  # learned, then at chance
    rollback = {"step": 13, "kind": "rollback", "to_step": 8, "after": "collapse"}
    assert recovery.events == [pytest.approx({**rollback, "learning_rate": 0.05})]
    assert read_stats(guard)["collapses"] == 1
