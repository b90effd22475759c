"""A training script of the user's own: the guard from a params mapping, and its run's verdict."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from gradguard import GradientGuard, ParamsError, RunRecord, write_verdict


def test_from_params_takes_the_pipelines_keys_and_defaults():
    guard = GradientGuard.from_params(
        {"clip_mode": "zscore", "zscore_max_norm": 1.0}, keras.optimizers.SGD(0.1)
    )
    assert guard.mode == "zscore" and guard.config.zscore_max_norm == 1.0
    assert guard.config.zscore_warmup == 25  # params.yaml's default
    assert GradientGuard.from_params({"clip_norm": 2}, keras.optimizers.SGD(0.1)).mode == (
        "global_norm"  # "auto" resolved as the pipeline resolves it
    )


@pytest.mark.parametrize(
    ("mapping", "fragment"),
    [
        ({"clip_nrom": 1.0}, "clip_nrom=1.0 is invalid; expected one of ("),
        ({"clip_norm": -1}, "clip_norm=-1.0 is invalid; expected a number > 0"),
        ({"clip_mode": "fancy"}, "clip_mode='fancy' is invalid; expected one of"),
        ({"train": {"epochs": 3}}, "train={'epochs': 3} is invalid; expected one of"),
    ],
)
def test_from_params_refuses_with_the_pipelines_one_line_errors(mapping, fragment):
    with pytest.raises(ParamsError) as error:
        GradientGuard.from_params(mapping, keras.optimizers.SGD(0.1))
    assert fragment in str(error.value) and "\n" not in str(error.value)


def _fit(guard, x, epochs=3):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="softmax")])
    model.compile(optimizer=guard, loss="sparse_categorical_crossentropy")
    record = RunRecord()
    y = np.arange(len(x)) % 4
    model.fit(x, y, batch_size=4, epochs=epochs, verbose=0, callbacks=[record])
    return record


def test_a_healthy_run_then_a_collapsed_one_by_the_pipelines_rules(tmp_path):
    x = np.eye(4, dtype="float32")[np.arange(16) % 4]  # class = the hot input
    record = _fit(GradientGuard(keras.optimizers.SGD(0.5), clip_norm=1.0), x)
    assert len(record.epoch_norms) == 3 and 0 < record.weight_growth < 100
    assert record.max_grad_norm > 0 and not record.diverged
    path = tmp_path / "metrics" / "verdict.json"
    shares = [0.25] * 4
    assert write_verdict(path, record, accuracy=1.0, class_shares=shares) == "healthy"
    written = json.loads(path.read_text())
    assert written["verdict"] == "healthy" and written["clipped_steps"] >= 0
    # Chance 0.25: collapsed below 0.25 + 0.1 * 0.75 = 0.325 (the pipeline's margin), once
    # the run learned: its training loss fell below 0.5 ln 4 = 0.693 (else: unlearned).
    assert 0 < record.lowest_loss < np.log(4)  # the lowest epoch loss, below chance
    record.lowest_loss = 0.69
    assert write_verdict(path, record, accuracy=0.3, class_shares=shares) == "collapsed"
    assert json.loads(path.read_text())["verdict"] == "collapsed"
    record.lowest_loss = 0.70
    assert write_verdict(path, record, accuracy=0.3, class_shares=shares) == "unlearned"
    assert write_verdict(path, record, accuracy=0.4, class_shares=shares) == "healthy"


def test_a_run_that_goes_non_finite_is_diverged_and_a_dvclive_summary_gets_it(tmp_path):
    x = np.full((16, 4), np.nan, "float32")
    guard = GradientGuard(keras.optimizers.SGD(0.5), skip_nonfinite=False)
    record = _fit(guard, x, epochs=1)
    assert record.diverged

    class Live:  # what write_verdict uses of dvclive.Live
        def __init__(self):
            self.summary, self.made = {}, 0

        def make_summary(self):
            self.made += 1

    live = Live()
    assert write_verdict(live, record, accuracy=0.25, class_shares=[0.25] * 4) == "diverged"
    assert live.summary["verdict"] == "diverged" and live.made == 1
    assert live.summary["weight_growth"] is None  # non-finite weights: inf, written as null


def test_run_record_needs_a_guard():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match=r"needs a model compiled with a gradguard\.GradientGuard"):
        model.fit(np.zeros((4, 4)), np.zeros((4, 4)), verbose=0, callbacks=[RunRecord()])
