"""An interrupted training run resumes from its last completed epoch."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest

from gradguard.data.sources import load_digits
from gradguard.data.splits import split
from gradguard.params import parse_params
from gradguard.training.resume import run_fingerprint
from gradguard.training.run import RunFiles, run_training


class Interrupt(keras.callbacks.Callback):
    """Raises KeyboardInterrupt as epoch `at` begins (as Ctrl-C would)."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt


def steps_logged(live_dir):
    with open(live_dir / "plots" / "metrics" / "train" / "loss.tsv", newline="") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle, delimiter="\t")]


def run(params, train, val, tmp_path, interrupt_at=None):
    """The library's run sequence on arrays (the train stage's, without shard sets)."""
    files = RunFiles(
        tmp_path, tmp_path, tmp_path / "best.keras", tmp_path / "live", tmp_path / "resume"
    )
    extra = [] if interrupt_at is None else [Interrupt(interrupt_at)]
    data = (train, val, (*train, *val))
    return run_training(files, params, data=data, log=lambda line: None, extra_callbacks=extra)


@pytest.fixture
def small():
    x, y = load_digits()
    params = parse_params(
        {
            "seed": 3,
            "model": {"filters": [4], "dense": 8, "dropout": 0.0},
            "train": {"epochs": 4, "patience": 4, "batch_size": 128},
        }
    )
    parts = split(x[..., None], y.astype("int32"), params.data, params.seed)
    return params, parts["train"], parts["val"]


def test_interrupted_run_resumes_from_the_last_completed_epoch(small, tmp_path):
    params, train, val = small
    with pytest.raises(KeyboardInterrupt):
        run(params, train, val, tmp_path, interrupt_at=2)
    state = json.loads(next((tmp_path / "resume").glob("*/state.json")).read_text())
    assert state["epoch"] == 1  # epochs 0 and 1 completed
    assert steps_logged(tmp_path / "live") == [0, 1]

    saved_max = state["gradient_stats"]["max_grad_norm"]
    assert saved_max > 0 and state["gradient_stats"]["steps"] > 0
    result = run(params, train, val, tmp_path)
    assert result.resumed_from_epoch == 2
    assert result.max_grad_norm >= saved_max  # running totals carried across the restart
    assert result.best_epoch is not None and 1 <= result.best_epoch <= 4
    assert result.epochs == 4
    assert steps_logged(tmp_path / "live") == [0, 1, 2, 3]  # DVCLive's step continued
    assert not (tmp_path / "resume").exists()  # deleted once training completed


def test_other_params_never_resume_another_runs_state(small, tmp_path):
    params, train, val = small
    with pytest.raises(KeyboardInterrupt):
        run(params, train, val, tmp_path, interrupt_at=1)
    other = parse_params(
        {
            **{"seed": 3, "clip_norm": 1.0},
            "model": {"filters": [4], "dense": 8, "dropout": 0.0},
            "train": {"epochs": 2, "patience": 4, "batch_size": 128},
        }
    )
    assert run_fingerprint(other, *train, *val) != run_fingerprint(params, *train, *val)
    result = run(other, train, val, tmp_path)
    assert result.resumed_from_epoch is None and result.epochs == 2


def test_a_resumed_rollback_run_keeps_its_snapshot_and_counts(small, tmp_path):
    # One NaN image: the batch holding it is non-finite once per epoch, so each epoch
    # rolls back once (update skipped, snapshot restored, learning rate halved).
    _, train, val = small
    params = parse_params(
        {
            "seed": 3,
            "model": {"filters": [4], "dense": 8, "dropout": 0.0},
            "train": {
                "epochs": 4,
                "patience": 4,
                "batch_size": 128,
                "on_explosion": "rollback",
                "snapshot_every": 3,
                "max_rollbacks": 5,
            },
        }
    )
    x = train[0].copy()
    x[5] = float("nan")
    train = (x, train[1])
    with pytest.raises(KeyboardInterrupt):
        run(params, train, val, tmp_path, interrupt_at=2)
    folder = next((tmp_path / "resume").glob("*"))
    state = json.loads((folder / "state.json").read_text())["recovery"]
    assert state["rollbacks"] == 2 and [e["kind"] for e in state["events"]] == ["rollback"] * 2
    with np.load(folder / "arrays.npz", allow_pickle=False) as saved:
        saved = dict(saved)
    weights = sorted(k for k in saved if k.startswith("weight_"))
    assert len(weights) == 6  # conv kernel+bias, hidden kernel+bias, classifier kernel+bias
    assert state["snapshot_steps"]
    assert all(np.isfinite(saved[k]).all() for k in saved)

    result = run(params, train, val, tmp_path)
    assert result.resumed_from_epoch == 2
    assert result.rollbacks == 4  # counted across the restart
    steps = [e["step"] for e in result.recovery_events]
    assert len(steps) == 4 and steps == sorted(steps)
    assert not result.diverged


def test_a_resumed_run_ends_with_the_same_bytes_as_an_uninterrupted_one(tmp_path):
    # Dropout draws from a seed generator whose state `model.save` does not keep; the
    # resume state keeps it, so the masks of epochs 3-5 are the uninterrupted run's.
    x, y = load_digits()
    params = parse_params(
        {
            "seed": 5,
            "model": {"filters": [4], "dense": 8, "dropout": 0.3},
            "train": {"epochs": 5, "patience": 5, "batch_size": 128},
        }
    )
    parts = split(x[..., None], y.astype("int32"), params.data, params.seed)
    train, val = parts["train"], parts["val"]
    whole = run(params, train, val, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(params, train, val, tmp_path / "cut", interrupt_at=2)  # after epoch 2 of 5
    resumed = run(params, train, val, tmp_path / "cut")
    assert resumed.resumed_from_epoch == 2 and whole.epochs == resumed.epochs == 5
    model = (tmp_path / "whole" / "best.keras").read_bytes()
    assert (tmp_path / "cut" / "best.keras").read_bytes() == model
    for field in ("best_val_loss", "best_epoch", "max_grad_norm", "weight_growth"):
        assert getattr(resumed, field) == getattr(whole, field), field
