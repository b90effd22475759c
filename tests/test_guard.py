"""GradientGuard: hand-computed updates, the skip sequence, statistics, serialisation."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from gradguard import GradientGuard
from gradguard.functional.step import Layout
from gradguard.training.callbacks import read_stats
from tests.conftest import tensorflow_only

NAN, INF = math.nan, math.inf


def variable(values):
    return keras.Variable(np.asarray(values, "float32"))


def apply(guard, grads, variables):
    guard.apply([keras.ops.convert_to_tensor(np.asarray(g, "float32")) for g in grads], variables)


@pytest.mark.parametrize(
    ("mode", "kwargs", "earlier", "clipped"),
    [
        # SGD(lr=1) from w = 0; `earlier` gradients are applied first (unclipped), then
        # g = (3, 4), global norm 5, is clipped to `clipped`: w = -sum(earlier) - clipped.
        ("none", {}, [], [3.0, 4.0]),
        ("global_norm", {"clip_norm": 1.0}, [], [0.6, 0.8]),
        ("norm", {"clip_norm": 1.0}, [], [0.6, 0.8]),
        ("value", {"clip_value": 0.5}, [], [0.5, 0.5]),
        # AGC on a vector (one unit): w0 = (0, 0) -> bound 0.5 * 1e-3; exclude_last off.
        ("agc", {"agc_lambda": 0.5, "agc_exclude_last": False}, [], [3e-4, 4e-4]),
        # AutoClip: (0.6, 0.8) first (history [1], bound 1: unchanged). Then history
        # [1, 5]: 10th percentile 1 + 0.1 * 4 = 1.4 -> (3, 4) * 1.4 / 5 = (0.84, 1.12).
        ("autoclip", {"autoclip_percentile": 10.0}, [[0.6, 0.8]], [0.84, 1.12]),
        # ZClip, warm-up 2 on norms 1 and 2: mean 1.5, population std 0.5. Norm 5:
        # z = 3.5 / (0.5 + 1e-6) = 6.999986 > 2.5 -> bound 1.5 + 2.5^2 * 0.5 / z = 1.946429
        # -> (3, 4) * 1.946429 / 5 = (1.167857, 1.557143).
        (
            "zscore",
            {"zscore_warmup": 2},
            [[0.6, 0.8], [1.2, 1.6]],
            [1.167857, 1.557143],
        ),
    ],
)
def test_one_sgd_step_per_mode(mode, kwargs, earlier, clipped):
    weights = variable([0.0, 0.0])
    guard = GradientGuard(keras.optimizers.SGD(1.0), mode=mode, **kwargs)
    for grad in earlier:
        apply(guard, [grad], [weights])
    apply(guard, [[3.0, 4.0]], [weights])
    expected = -np.sum([*earlier, clipped], axis=0)
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-5)
    stats = read_stats(guard)
    assert stats["pre_clip_norm"] == pytest.approx(5.0)
    assert stats["post_clip_norm"] == pytest.approx(float(np.linalg.norm(clipped)), rel=1e-5)
    assert stats["clipped_steps"] == int(clipped != [3.0, 4.0])  # the earlier ones: unclipped


def test_zscore_max_norm_caps_warmup_steps_while_the_statistics_see_uncapped_norms():
    # ZClip's max_grad_norm (bluorion-com/ZClip): SGD(1), warm-up 2, cap 2.5. Norm 1 passes;
    # norm 3 (1.8, 2.4) is capped to 2.5 -> (1.5, 2.0) though in warm-up; the warm-up
    # statistics are of 1 and 3 (uncapped): mean 2, population variance 1.
    weights = variable([0.0, 0.0])
    guard = GradientGuard(
        keras.optimizers.SGD(1.0), mode="zscore", zscore_warmup=2, zscore_max_norm=2.5
    )
    apply(guard, [[0.6, 0.8]], [weights])
    apply(guard, [[1.8, 2.4]], [weights])
    np.testing.assert_allclose(weights.numpy(), [-2.1, -2.8], rtol=1e-6)
    state = guard._state_values(lambda v: v.numpy())
    assert (float(state["zscore_mean"]), float(state["zscore_var"])) == pytest.approx((2.0, 1.0))
    # Norm 5: z = 3 / (1 + 1e-6) -> adaptive bound 2 + 6.25 / z = 4.083334, capped to 2.5;
    # the EMA absorbs the adaptive bound, not the cap: 0.97 * 2 + 0.03 * 4.083334 = 2.0625.
    apply(guard, [[3.0, 4.0]], [weights])
    np.testing.assert_allclose(weights.numpy(), [-3.6, -4.8], rtol=1e-6)
    state = guard._state_values(lambda v: v.numpy())
    assert float(state["zscore_mean"]) == pytest.approx(2.0625, rel=1e-5)
    assert read_stats(guard)["threshold"] == pytest.approx(2.5)


def test_keras_sgd_reference_numbers_pass_through_unclipped():
    # keras' sgd_test: grads [1, 6, 7, 2], vars [1, 2, 3, 4], lr 0.5 -> [0.5, -1, -0.5, 3].
    weights = variable([1.0, 2.0, 3.0, 4.0])
    guard = GradientGuard(keras.optimizers.SGD(0.5), mode="global_norm", clip_norm=100.0)
    apply(guard, [[1.0, 6.0, 7.0, 2.0]], [weights])
    np.testing.assert_allclose(weights.numpy(), [0.5, -1.0, -0.5, 3.0])
    assert read_stats(guard)["clipped_steps"] == 0


def test_skip_sequence_finite_nan_inf_finite():
    # SGD lr 0.5 from (1, 2): (1, 1) -> (0.5, 1.5); NaN and Inf steps skipped;
    # (2, -2) -> (0.5 - 1, 1.5 + 1) = (-0.5, 2.5).
    weights = variable([1.0, 2.0])
    guard = GradientGuard(keras.optimizers.SGD(0.5), skip_nonfinite=True)
    history = []
    for grad in ([1.0, 1.0], [NAN, 1.0], [INF, 1.0], [2.0, -2.0]):
        apply(guard, [grad], [weights])
        history.append(weights.numpy().tolist())
    assert history == [[0.5, 1.5], [0.5, 1.5], [0.5, 1.5], [-0.5, 2.5]]
    stats = read_stats(guard)
    assert int(guard.iterations.numpy()) == 2  # the inner optimizer saw two updates
    assert stats["skipped_steps"] == 2
    assert stats["first_nonfinite_step"] == 1
    assert stats["consecutive_skips"] == 0
    assert stats["diverged"] == 0


def test_a_skipped_step_leaves_adam_slots_untouched():
    weights = variable([1.0, 2.0])
    guard = GradientGuard(keras.optimizers.Adam(0.1))
    apply(guard, [[1.0, -1.0]], [weights])
    before = [np.array(v.numpy()) for v in guard.variables if v.path.count("adam")]
    apply(guard, [[NAN, 1.0]], [weights])
    after = [np.array(v.numpy()) for v in guard.variables if v.path.count("adam")]
    assert before and all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_consecutive_skips_end_the_run_as_diverged():
    weights = variable([1.0])
    guard = GradientGuard(keras.optimizers.SGD(0.1), max_consecutive_skips=2)
    apply(guard, [[NAN]], [weights])
    assert read_stats(guard)["diverged"] == 0
    apply(guard, [[NAN]], [weights])
    assert read_stats(guard)["diverged"] == 1
    assert weights.numpy().tolist() == [1.0]  # still finite: the guard kept skipping


def test_without_skipping_a_nan_update_is_applied_and_flagged():
    weights = variable([1.0])
    guard = GradientGuard(keras.optimizers.SGD(0.1), skip_nonfinite=False)
    apply(guard, [[NAN]], [weights])
    assert math.isnan(weights.numpy()[0])
    stats = read_stats(guard)
    assert stats["diverged"] == 1 and stats["skipped_steps"] == 0


def test_window_statistics_accumulate_on_device_and_reset():
    weights = variable([0.0, 0.0])
    guard = GradientGuard(keras.optimizers.SGD(0.1), mode="global_norm", clip_norm=4.0)
    for grad in ([3.0, 4.0], [0.0, 1.0], [NAN, 0.0]):  # norms 5 (clipped), 1, NaN
        apply(guard, [grad], [weights])
    stats = read_stats(guard)
    assert stats["window_steps"] == 2 and stats["window_clipped"] == 1
    assert stats["window_norm_sum"] == pytest.approx(6.0)
    assert stats["window_norm_max"] == pytest.approx(5.0)
    guard.reset_window()
    assert read_stats(guard)["window_steps"] == 0
    assert read_stats(guard)["clipped_steps"] == 1  # totals survive the reset


def test_autoclip_bound_lives_in_a_variable_and_adapts():
    weights = variable([0.0, 0.0])
    guard = GradientGuard(keras.optimizers.SGD(1.0), mode="autoclip", autoclip_percentile=50.0)
    apply(guard, [[3.0, 4.0]], [weights])  # history [5] -> bound 5
    apply(guard, [[0.0, 1.0]], [weights])  # history [5, 1] -> bound 3 < 5? norm 1 stays
    apply(guard, [[30.0, 40.0]], [weights])  # history [5, 1, 50] -> bound 5: 50 scaled to 5
    stats = read_stats(guard)
    assert stats["threshold"] == pytest.approx(5.0)
    assert stats["post_clip_norm"] == pytest.approx(5.0, rel=1e-5)
    np.testing.assert_allclose(weights.numpy(), [-3.0 - 3.0, -4.0 - 1.0 - 4.0], rtol=1e-5)


def test_autoclip_in_the_guard_forgets_norms_older_than_its_window():
    # Window 3, median: norms 10, 10, 10, 1, 1, 1 pass unclipped (each bound >= the norm);
    # then 4 meets the ring [1, 1, 4]: bound 1, so it is applied as 1. Remembering all
    # seven norms (median 4) would apply it whole. w = -(30 + 3 + 1) = -34.
    weights = variable([0.0])
    guard = GradientGuard(
        keras.optimizers.SGD(1.0), mode="autoclip", autoclip_window=3, autoclip_percentile=50.0
    )
    for norm in (10.0, 10.0, 10.0, 1.0, 1.0, 1.0, 4.0):
        apply(guard, [[norm]], [weights])
    stats = read_stats(guard)
    assert stats["threshold"] == pytest.approx(1.0) and stats["clipped_steps"] == 1
    assert weights.numpy()[0] == pytest.approx(-34.0, rel=1e-6)


@pytest.mark.parametrize("argument", ["learning_rate", "clipnorm", "global_clipnorm", "use_ema"])
def test_arguments_of_the_inner_optimizer_are_refused_by_name(argument):
    value = True if argument == "use_ema" else 1.0
    with pytest.raises(ValueError, match=f"`{argument}`.*inner optimizer"):
        GradientGuard(keras.optimizers.SGD(0.1), **{argument: value})


def test_an_inner_optimizer_that_clips_itself_is_refused():
    with pytest.raises(ValueError, match="clips by itself"):
        GradientGuard(keras.optimizers.SGD(0.1, global_clipnorm=1.0))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"mode": "global_norm"}, "needs clip_norm > 0; received clip_norm=None"),
        ({"zscore_max_norm": -1.0}, "zscore_max_norm=-1.0; expected a number > 0"),
        ({"mode": "value", "clip_value": -1.0}, "received clip_value=-1.0"),
        ({"mode": "fancy"}, "mode='fancy'"),
        ({"spike_warmup_factor": 1.0}, "spike_warmup_factor=1.0; expected a factor > 1"),
        ({"spike_factor": 0.5}, "spike_factor=0.5; expected a factor >= 1"),
    ],
)
def test_bad_modes_and_bounds_are_refused(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        GradientGuard(keras.optimizers.SGD(0.1), **kwargs)


def test_model_save_and_load_round_trip_keeps_config_and_state(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    guard = GradientGuard(keras.optimizers.Adam(0.01), mode="zscore", zscore_warmup=3)
    model.compile(optimizer=guard, loss="mse")
    x, y = np.ones((8, 2), "float32"), np.zeros((8, 1), "float32")
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded.optimizer, GradientGuard)
    assert loaded.optimizer.get_config() == guard.get_config()
    assert read_stats(loaded.optimizer) == pytest.approx(read_stats(guard), nan_ok=True)
    assert int(loaded.optimizer.iterations.numpy()) == 4


def test_compiled_fit_clips_every_step():
    # y = 100 x with a zero-initialised weight: every gradient is huge, every step clipped.
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )
    guard = GradientGuard(keras.optimizers.SGD(0.1), mode="global_norm", clip_norm=1.0)
    model.compile(optimizer=guard, loss="mse")
    x = np.ones((4, 1), "float32")
    model.fit(x, 100 * x, batch_size=4, epochs=3, verbose=0)
    stats = read_stats(guard)
    assert stats["clipped_steps"] == 3
    assert stats["post_clip_norm"] == pytest.approx(1.0, rel=1e-5)
    # Each clipped step moves w by lr * 1 = 0.1 toward 100.
    assert float(model.layers[0].kernel.numpy()[0, 0]) == pytest.approx(0.3, rel=1e-5)


def test_step_log_keeps_the_windows_steps_in_order_and_wraps():
    weights = variable([0.0, 0.0])
    guard = GradientGuard(keras.optimizers.SGD(0.1), clip_norm=2.0, step_log_size=2)
    apply(guard, [[3.0, 4.0]], [weights])  # step 0: norm 5 -> 2
    guard.reset_window()
    for grad in ([0.0, 1.0], [6.0, 8.0], [NAN, 0.0]):  # steps 1, 2, 3; the ring keeps 2 and 3
        apply(guard, [grad], [weights])
    row_a, row_b = guard.read_step_log()
    assert row_a[:4] == (2, pytest.approx(10.0), pytest.approx(2.0), 2.0)
    assert row_b.step == 3 and math.isnan(row_b.pre_clip_norm)
    assert (row_a.event, row_b.event) == (0, 2)  # ordinary, non-finite
    assert list(row_a.layer_norms.values()) == [pytest.approx(10.0)]  # one layer: the global norm
    assert row_a.batch_loss == math.inf  # applied by hand: no trainer recorded a loss


def test_spike_detection_by_hand_and_spikes_skipped():
    # Window 4, 2 sigma (population std). Decisions start when the window is half full;
    # every finite norm enters the window after its decision, spikes too.
    # [1, 3]: mean 2, std 1 -> 5 > 4 is a spike (skipped, but admitted);
    # [1, 3, 5]: mean 3, std sqrt(8/3) = 1.633 -> bound 6.266: 4.5 is not;
    # [1, 3, 5, 4.5]: mean 3.375, var 9.6875 / 4 = 2.4219, std 1.5562 -> bound 6.4875: 9 is.
    # (Were the spike kept out, [1, 3] would make 4.5 > 4 a spike too.)
    weights = variable([0.0])
    guard = GradientGuard(
        keras.optimizers.SGD(1.0),
        spike_window=4,
        spike_sigma=2.0,
        spike_factor=None,
        skip_spikes=True,
    )
    spikes = []
    for norm in (1.0, 3.0, 5.0, 4.5, 9.0):
        apply(guard, [[norm]], [weights])
        spikes.append(read_stats(guard)["spikes"])
    assert spikes == [0, 0, 1, 1, 2]
    assert weights.numpy().tolist() == [-8.5]  # only 1, 3 and 4.5 were applied
    stats = read_stats(guard)
    assert stats["events"] == 2 and stats["skipped_steps"] == 2
    assert [row[4] for row in guard.read_step_log()] == [0, 0, 1, 0, 1]


def test_spikes_are_counted_but_applied_unless_skip_spikes():
    weights = variable([0.0])
    guard = GradientGuard(
        keras.optimizers.SGD(1.0), spike_window=4, spike_sigma=2.0, spike_factor=None
    )
    for norm in (1.0, 3.0, 5.0):
        apply(guard, [[norm]], [weights])
    assert read_stats(guard)["spikes"] == 1 and weights.numpy().tolist() == [-9.0]


def spike_guard(**kwargs):
    return GradientGuard(
        keras.optimizers.SGD(1.0),
        spike_window=4,
        spike_sigma=2.0,
        spike_factor=None,
        skip_spikes=True,
        **kwargs,
    )


def test_a_level_shift_passes_instead_of_being_skipped_forever():
    # The norm steps from ~1 to 2 for good: one spike (skipped), then the window has let
    # 2.0 in and the band (2.112, see test_detection) passes the rest. 1 + 1.1 + 1 + 1.1
    # and 19 x 2 are applied: w = -(4.2 + 38).
    weights = variable([0.0])
    guard = spike_guard(max_consecutive_skips=3)
    for norm in [1.0, 1.1, 1.0, 1.1] + [2.0] * 20:
        apply(guard, [[norm]], [weights])
    stats = read_stats(guard)
    assert (stats["spikes"], stats["skipped_steps"], stats["diverged"]) == (1, 1, 0)
    assert weights.numpy()[0] == pytest.approx(-42.2, rel=1e-6)


def test_skipped_spikes_count_toward_max_consecutive_skips():
    # After [1, 1.1, 1, 1.1]: 10 > 1.15; [10, 1.1, 1, 1.1]: mean 3.3, std 3.869 -> 100 >
    # 11.04; [10, 100, 1, 1.1]: mean 28.03, std 41.72 -> 1000 > 111.5. Three spikes
    # skipped in a row: diverged. Then 1 is applied and the count starts again.
    weights = variable([0.0])
    guard = spike_guard(max_consecutive_skips=3)
    counts = []
    for norm in (1.0, 1.1, 1.0, 1.1, 10.0, 100.0, 1000.0, 1.0):
        apply(guard, [[norm]], [weights])
        counts.append(read_stats(guard)["consecutive_skips"])
    assert counts == [0, 0, 0, 0, 1, 2, 3, 0]
    stats = read_stats(guard)
    assert (stats["skipped_steps"], stats["diverged"]) == (3, 1)
    assert weights.numpy()[0] == pytest.approx(-5.2, rel=1e-6)


def test_an_explosion_at_the_second_step_is_a_spike_and_skipped():
    # Default window 128 (the band decides from 64 norms on): the warm-up rule does.
    # Step 1: norm 0.5. Step 2: (300, 400), norm 500 > 100 x median 0.5: skipped.
    weights = variable([0.0, 0.0])
    guard = GradientGuard(keras.optimizers.SGD(1.0), skip_spikes=True)
    apply(guard, [[0.3, 0.4]], [weights])
    apply(guard, [[300.0, 400.0]], [weights])
    stats = read_stats(guard)
    assert (stats["spikes"], stats["skipped_steps"], stats["events"]) == (1, 1, 1)
    np.testing.assert_allclose(weights.numpy(), [-0.3, -0.4])
    assert [row.event for row in guard.read_step_log()] == [0, 1]


def test_a_finite_gradient_whose_squares_overflow_float32_is_clipped_not_skipped():
    # (3e19, 4e19): 9e38 + 1.6e39 overflows float32 (max 3.4e38), the norm 5e19 does not.
    # clip_norm 1: (3e19, 4e19) * 1 / 5e19 = (0.6, 0.8); SGD lr 1 -> w = (-0.6, -0.8).
    weights = variable([0.0, 0.0])
    guard = GradientGuard(keras.optimizers.SGD(1.0), clip_norm=1.0)
    apply(guard, [[3e19, 4e19]], [weights])
    stats = read_stats(guard)
    assert stats["pre_clip_norm"] == pytest.approx(5e19, rel=1e-6)
    assert stats["post_clip_norm"] == pytest.approx(1.0, rel=1e-6)
    assert (stats["skipped_steps"], stats["clipped_steps"], stats["diverged"]) == (0, 1, 0)
    np.testing.assert_allclose(weights.numpy(), [-0.6, -0.8], rtol=1e-6)
    (layer_norm,) = guard.read_step_log()[0].layer_norms.values()  # one layer
    assert layer_norm == pytest.approx(5e19, rel=1e-6)


def test_layout_groups_variables_by_layer():
    class Var:  # only the path and the rank matter
        def __init__(self, path):
            self.path, self.shape = path, (3, 3) if path.endswith("kernel") else (3,)

    paths = ["sequential/conv2d/kernel", "sequential/conv2d/bias", "sequential/dense/kernel"]
    layout = Layout.of([Var(p) for p in paths])
    assert layout.layer_names == ("conv2d", "dense")
    assert layout.layer_of == (0, 0, 1)
    assert layout.agc_excluded == (False, False, True)
    assert layout.agc_axes == ((0,), None, (0,))
    assert Layout.of([Var(p) for p in paths], agc_exclude_last=False).agc_excluded == (
        False,
        False,
        False,
    )


def test_per_layer_gradient_and_weight_norms_by_hand():
    # Layer "a": kernel grad (3, 4), bias grad (0): norm 5; layer "b": grad (12): norm 12.
    # Global norm 13. Weights: a = ((1, 2), (2)) -> norm 3; b = (4) -> norm 4.
    a, b = keras.layers.Dense(1, name="a"), keras.layers.Dense(1, use_bias=False, name="b")
    a.build((None, 2))
    b.build((None, 1))
    a.kernel.assign([[1.0], [2.0]])
    a.bias.assign([2.0])
    b.kernel.assign([[4.0]])
    variables = [a.kernel, a.bias, b.kernel]
    guard = GradientGuard(keras.optimizers.SGD(0.0))
    for scale in (1.0, 2.0):  # two steps: mean 1.5x, max 2x
        grads = [[[3.0 * scale], [4.0 * scale]], [0.0], [[12.0 * scale]]]
        apply(guard, grads, variables)
    assert guard.layer_names == ("a", "b")
    stats = guard.read_layer_stats()
    assert stats["a"] == pytest.approx(
        {"grad_norm_mean": 7.5, "grad_norm_max": 10.0, "weight_norm": 3.0}
    )
    assert stats["b"] == pytest.approx(
        {"grad_norm_mean": 18.0, "grad_norm_max": 24.0, "weight_norm": 4.0}
    )
    assert guard.read_step_log()[-1].layer_norms == pytest.approx({"a": 10.0, "b": 24.0})
    assert read_stats(guard)["pre_clip_norm"] == pytest.approx(26.0)
    guard.reset_window()
    assert guard.read_layer_stats()["b"]["grad_norm_max"] == 0.0


def loss_spike_fit(loss_spikes=True):
    """Batches of one with y = (1, 1, 1, 1, 10) and x = 1 / y, weights at 0, lr 0.

    The mse gradient 2 x (0 - y) has norm 2 on every step, but the batch loss
    y^2 is (1, 1, 1, 1, 100): only the loss spikes.
    """
    y = np.array([[1.0], [1.0], [1.0], [1.0], [10.0]], "float32")
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )
    guard = GradientGuard(
        keras.optimizers.SGD(0.0),
        spike_window=4,
        spike_sigma=2.0,
        spike_factor=None,
        loss_spikes=loss_spikes,
    )
    model.compile(optimizer=guard, loss="mse")
    model.fit(1.0 / y, y, batch_size=1, epochs=1, shuffle=False, verbose=0)
    return guard


@tensorflow_only
def test_batch_loss_spikes_are_detected_without_a_gradient_spike():
    guard = loss_spike_fit()
    rows = guard.read_step_log()
    assert [row.batch_loss for row in rows] == pytest.approx([1.0, 1.0, 1.0, 1.0, 100.0])
    assert [row.pre_clip_norm for row in rows] == pytest.approx([2.0] * 5)
    assert [row.event for row in rows] == [0, 0, 0, 0, 3]
    stats = read_stats(guard)
    assert (stats["loss_spikes"], stats["spikes"], stats["events"]) == (1, 0, 1)
    # Without loss_spikes the loss is still recorded, but it is no event.
    quiet = loss_spike_fit(loss_spikes=False)
    assert quiet.read_step_log()[-1].batch_loss == pytest.approx(100.0)
    assert read_stats(quiet)["events"] == 0


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX backend only")
def test_loss_spikes_are_refused_on_jax():
    with pytest.raises(ValueError, match="loss_spikes=True needs the TensorFlow"):
        loss_spike_fit()


def test_an_unclipped_step_is_never_counted_as_clipped():
    # Pre- and post-clip norms must be summed in the same order, or float rounding alone
    # makes post < pre on some steps and "none" reports a clip fraction above 0.
    rng = np.random.default_rng(0)
    variables = []
    for units, inputs in ((8, 9), (16, 72), (32, 400), (10, 32)):  # kernel and bias each
        layer = keras.layers.Dense(units)
        layer.build((None, inputs))
        variables += [layer.kernel, layer.bias]
    guard = GradientGuard(keras.optimizers.SGD(0.0))
    for _ in range(30):
        apply(guard, [rng.normal(size=v.shape).astype("float32") for v in variables], variables)
    assert read_stats(guard)["clipped_steps"] == 0


@tensorflow_only
def test_a_collapse_back_to_chance_is_an_event_on_its_last_step():
    # Batches of one, mse, weights at 0 and lr 0: the batch loss is y^2. Chance 1.0,
    # window 3: 0.25 learns, then three losses of 1.0 collapse (event on step 3), the
    # next three do not (the run must learn again first).
    y = np.sqrt(np.array([[0.25], [1.0], [1.0], [1.0], [1.0], [1.0], [1.0]], "float32"))
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )
    guard = GradientGuard(keras.optimizers.SGD(0.0), collapse_loss=1.0, collapse_window=3)
    model.compile(optimizer=guard, loss="mse")
    model.fit(1.0 / y, y, batch_size=1, epochs=1, shuffle=False, verbose=0)
    assert [row.event for row in guard.read_step_log()] == [0, 0, 0, 4, 0, 0, 0]
    stats = read_stats(guard)
    assert (stats["collapses"], stats["events"], stats["spikes"]) == (1, 1, 0)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX backend only")
def test_the_collapse_check_is_refused_on_jax():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=GradientGuard(keras.optimizers.SGD(0.1), collapse_loss=1.0), loss="mse")
    with pytest.raises(ValueError, match=r"collapse_loss=1\.0 needs the TensorFlow"):
        model.fit(np.ones((2, 1)), np.ones((2, 1)), verbose=0)


def test_agc_in_a_compiled_model_takes_each_layers_own_units():
    # An ordinary functional model: attention (query/key/value kernels (4, 2, 3), output
    # (2, 3, 4)), Conv1D (2, 4, 3), Dense (3, 2). One SGD(1) step of random gradients
    # against numpy's per-unit clipping with the axes written out here, independently.
    inputs = keras.Input((5, 4))
    attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3, name="attention")
    hidden = keras.layers.Conv1D(3, 2, name="conv")(attention(inputs, inputs))
    outputs = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling1D()(hidden))
    model = keras.Model(inputs, outputs)
    guard = GradientGuard(keras.optimizers.SGD(1.0), mode="agc", agc_exclude_last=False)
    model.compile(optimizer=guard, loss="mse")
    variables = model.trainable_variables
    guard.build(variables)
    fan_in = {
        "query/kernel": (0,),
        "key/kernel": (0,),
        "value/kernel": (0,),
        "attention_output/kernel": (0, 1),
        "conv/kernel": (0, 1),
        "head/kernel": (0,),
    }
    rng = np.random.default_rng(0)
    before = [v.numpy() for v in variables]
    grads = [rng.normal(size=w.shape).astype("float32") for w in before]
    apply(guard, grads, variables)
    for var, weight, grad in zip(variables, before, grads, strict=True):
        axes = next((a for k, a in fan_in.items() if var.path.endswith("/" + k)), None)
        axes = axes or next((a for k, a in fan_in.items() if var.path == k), None)
        w_norm = np.sqrt(np.sum(weight**2, axis=axes, keepdims=True))
        g_norm = np.sqrt(np.sum(grad**2, axis=axes, keepdims=True))
        bound = 0.01 * np.maximum(w_norm, 1e-3)
        expected = weight - grad * np.minimum(1.0, bound / g_norm)
        np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5, atol=1e-7, err_msg=var.path)
    assert sum(a is not None for a in guard.layout.agc_axes) == len(fan_in)
