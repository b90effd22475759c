"""gradguard.functional.step: one guard step on plain arrays, numbers by hand."""

from __future__ import annotations

import numpy as np
import pytest
from keras import ops

from gradguard.functional.state import STEP_LOG_COLUMNS, state_specs
from gradguard.functional.step import GuardConfig, Layout, guard_step
from gradguard.settings import EVENT_CODES

LAYOUT = Layout(layer_of=(0, 1), layer_names=("a", "b"), agc_excluded=(False, True))


def fresh_state(config: GuardConfig) -> dict:
    """Every variable of the guard at its initial value, as numpy arrays."""
    state = {}
    for name, spec in state_specs(config, LAYOUT).items():
        dtype, value, *shape = spec
        state[name] = np.full(shape[0] if shape else (), value, dtype)
    return state


def step(config, grads, state=None, at=0):
    state = fresh_state(config) if state is None else state
    weights = [np.ones_like(g) for g in grads]
    clipped, apply, new = guard_step(config, LAYOUT, state, grads, weights, at)
    numpy = {k: ops.convert_to_numpy(v) for k, v in new.items()}
    return [ops.convert_to_numpy(g) for g in clipped], bool(ops.convert_to_numpy(apply)), numpy


def test_a_global_norm_step_by_hand():
    # Layer a's gradient (3, 0), layer b's (4): global norm 5, clipped to 1 by the factor 1/5.
    config = GuardConfig(mode="global_norm", clip_norm=1.0)
    grads = [np.array([3.0, 0.0], np.float32), np.array([[4.0]], np.float32)]
    clipped, apply, new = step(config, grads)
    assert apply
    np.testing.assert_allclose(clipped[0], [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(clipped[1], [[0.8]], rtol=1e-6)
    assert (float(new["pre_clip_norm"]), float(new["post_clip_norm"])) == pytest.approx((5, 1))
    assert int(new["clipped_steps"]) == 1 and int(new["skipped_steps"]) == 0
    row = dict(zip(STEP_LOG_COLUMNS, new["step_log"][0], strict=False))
    assert row == pytest.approx(
        {"pre_clip_norm": 5, "post_clip_norm": 1, "threshold": 1, "event": 0, "batch_loss": np.inf}
    )
    n = len(STEP_LOG_COLUMNS)
    np.testing.assert_allclose(new["step_log"][0][n:], [3.0, 4.0], rtol=1e-6)  # per layer
    assert int(new["step_log_count"]) == 1


def test_a_non_finite_step_is_skipped_and_logged_as_such():
    config = GuardConfig(mode="none")
    grads = [np.array([np.nan, 1.0], np.float32), np.array([[2.0]], np.float32)]
    _, apply, new = step(config, grads, at=7)
    assert not apply
    assert int(new["skipped_steps"]) == 1 and int(new["first_nonfinite_step"]) == 7
    assert int(new["consecutive_skips"]) == 1 and int(new["events"]) == 1
    event = new["step_log"][0][STEP_LOG_COLUMNS.index("event")]
    assert event == EVENT_CODES["nonfinite"]
    assert int(new["clipped_steps"]) == 0  # a skipped step is never counted as clipped


def test_an_unclipped_step_keeps_its_gradient_and_its_norm():
    config = GuardConfig(mode="global_norm", clip_norm=10.0)
    grads = [np.array([3.0, 0.0], np.float32), np.array([[4.0]], np.float32)]
    clipped, apply, new = step(config, grads)
    assert apply and int(new["clipped_steps"]) == 0
    np.testing.assert_array_equal(clipped[0], grads[0])
    assert float(new["post_clip_norm"]) == pytest.approx(5.0)
