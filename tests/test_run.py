"""gradguard.training.run: one run's files: the model, DVCLive's summary, the run files, no
resume state left behind. (Resuming an interrupted run: tests/test_resume.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gradguard.params import parse_params
from gradguard.training.live import LiveFolder
from gradguard.training.run import RunFiles, run_training


def files_in(root: Path) -> RunFiles:
    return RunFiles(root, root, root / "best.keras", root / "live", root / "resume")


def test_elsewhere_moves_the_outputs_and_keeps_the_inputs(tmp_path):
    files = RunFiles(Path("p"), Path("a"), Path("m.keras"), Path("live"), Path("r"))
    moved = files.elsewhere(tmp_path)
    assert (moved.prepared, moved.augmented) == (Path("p"), Path("a"))
    assert (moved.model, moved.live, moved.resume_dir) == (
        tmp_path / "best.keras",
        tmp_path / "live",
        tmp_path / "resume",
    )


def small_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(96, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")  # a table a small MLP learns
    return (x[:64], y[:64]), (x[64:], y[64:])


def test_a_run_leaves_the_model_the_summary_and_the_run_files_and_no_resume_state(tmp_path):
    params = parse_params(
        {
            "data": {"kind": "table"},
            "model": {"hidden": [8], "dense": 0, "dropout": 0.0},
            "train": {"epochs": 2, "patience": 2, "batch_size": 16},
        }
    )
    train, val = small_data()
    files = files_in(tmp_path)
    result = run_training(files, params, data=(train, val, (*train, *val)), log=lambda _: None)
    assert files.model.is_file() and result.epochs == 2 and not result.diverged
    folder = LiveFolder(files.live)
    run = folder.read_summary()
    assert run["epochs"] == 2 and "wall_time_s" not in run  # DVC hashes it: no clock in it
    assert run["largest_grad_layer"] == result.layers[0]["layer"]
    layers = json.loads(folder.layers.read_text())["epochs"]
    assert len(layers) == 2  # one entry per epoch
    events = json.loads(folder.events.read_text())["events"]
    assert [e["step"] for e in events] == sorted(e["step"] for e in events)
    assert not files.resume_dir.exists() or not any(files.resume_dir.iterdir())  # cleared
