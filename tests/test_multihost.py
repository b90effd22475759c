"""Two JAX processes on 127.0.0.1 train as one: every clipping mode, the skip decision."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from gradguard.training.local import free_port
from gradguard.training.multihost import cluster_from_env
from stages import augment, prepare
from tests.conftest import TINY_PARAMS
from tests.parallel_cases import MODES

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("jax")


def launch(tmp_path, processes: int) -> list[dict]:
    """Run tests.multihost_worker in `processes` processes (1: no cluster); their results."""
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'src'}")
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(name, None)
    port = free_port()
    children = []
    for process in range(processes):
        cluster = (
            {
                "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                "JAX_NUM_PROCESSES": str(processes),
                "JAX_PROCESS_ID": str(process),
            }
            if processes > 1
            else {}
        )
        out = tmp_path / f"p{processes}-{process}.npz"
        children.append(
            (
                out,
                subprocess.Popen(
                    [sys.executable, "-m", "tests.multihost_worker", str(out)],
                    env={**env, **cluster},
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                ),
            )
        )
    results = []
    for out, child in children:
        log, _ = child.communicate(timeout=300)
        assert child.returncode == 0, log[-3000:]
        with np.load(out, allow_pickle=False) as data:
            results.append(dict(data))
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process alone, then two as a cluster: every scenario of the worker in each."""
    folder = tmp_path_factory.mktemp("multihost")
    (one,) = launch(folder, 1)
    return one, launch(folder, 2)


def test_two_processes_match_one_for_every_mode(runs):
    one, (first, second) = runs
    for mode in MODES:
        weights = [key for key in one if key.startswith(f"{mode}/w")]
        assert len(weights) == 4
        for key in weights:
            np.testing.assert_array_equal(first[key], second[key])  # the processes agree
            np.testing.assert_allclose(first[key], one[key], atol=1e-5, err_msg=key)
        for stat in ("pre_clip_norm", "clipped_steps", "skipped_steps"):
            np.testing.assert_allclose(first[f"{mode}/{stat}"], one[f"{mode}/{stat}"], rtol=1e-5)
        if mode not in ("none", "autoclip"):
            assert one[f"{mode}/clipped_steps"] > 0  # the comparison exercised clipping
    for result in (first, second):
        assert str(result["agreement/error"]) == "processes [1] hold other ids than process 0"


def test_a_nan_in_one_process_rows_is_skipped_by_both(runs):
    one, both = runs  # row 13: the second global batch, process 1's half only
    assert one["nan/global_norm/skipped_steps"] == 1
    for result in both:
        assert result["nan/global_norm/skipped_steps"] == 1
        for i in range(4):
            key = f"nan/global_norm/w{i}"
            assert np.isfinite(result[key]).all()
            np.testing.assert_allclose(result[key], one[key], atol=1e-5)


def test_a_spike_in_one_process_rows_rolls_both_back_to_the_same_weights(runs):
    one, (first, second) = runs  # rows 28-31: process 1's half of the last batch only
    # The spike is the 4th update (step 3); snapshot_every=1 kept the weights after step 2.
    for result in (one, first, second):
        assert (int(result["rollback/spikes"]), int(result["rollback/rollbacks"])) == (1, 1)
        assert result["rollback/to_step"].tolist() == [3]
        assert float(result["rollback/learning_rate"]) == pytest.approx(0.05)
    for i in range(4):
        key = f"rollback/w{i}"
        np.testing.assert_array_equal(first[key], second[key])  # the processes agree
        np.testing.assert_allclose(first[key], one[key], atol=1e-5)


def test_a_float16_overflow_in_one_process_rows_lowers_the_loss_scale_on_both(runs):
    one, both = runs  # rows 12-15: process 1's half of batch 2 only
    assert (one["overflow/scale"], one["overflow/applied"]) == (512.0, 3)  # as tf.distribute's
    assert one["overflow/skipped_steps"] == 0  # the scaler skipped the step, not the guard
    for result in both:
        assert (result["overflow/scale"], result["overflow/applied"]) == (512.0, 3)
        assert result["overflow/skipped_steps"] == 0
        for i in range(4):
            key = f"overflow/w{i}"
            assert np.isfinite(result[key]).all()
            np.testing.assert_allclose(result[key], one[key], atol=1e-4)  # float16 compute


def test_the_cluster_comes_from_the_environment_or_one_clear_line():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2"}
    with pytest.raises(ValueError, match="needs JAX_PROCESS_ID in the environment"):
        cluster_from_env(env)
    with pytest.raises(ValueError, match="JAX_PROCESS_ID=2 with JAX_NUM_PROCESSES=2"):
        cluster_from_env({**env, "JAX_PROCESS_ID": "2"})
    cluster = cluster_from_env({**env, "JAX_PROCESS_ID": "1"})
    assert (cluster.processes, cluster.process, cluster.chief) == (2, 1, False)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits prepared and augmented on tiny params, and those params (multihost)."""
    folder = tmp_path_factory.mktemp("digits")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in TINY_PARAMS.items():  # 12x12 images, a 4-filter CNN: seconds an epoch
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    params["train"] |= {"distribute": "multihost", "patience": 10}  # every epoch runs
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    p, prepared = str(folder / "params.yaml"), str(folder / "prepared")
    assert prepare.main_cli(["--params", p, "--raw", str(folder), "--out", prepared]) == 0
    out = str(folder / "augmented")
    assert augment.main_cli(["--params", p, "--prepared", prepared, "--out", out]) == 0
    return folder, params


def train_stage(digits, work: Path, epochs: int, workers: int | None, wait=True):
    """The train stage in `work` (through `stages.launch --workers` if given)."""
    data, params = digits
    work.mkdir(exist_ok=True)
    (work / "tmp").mkdir(exist_ok=True)
    params = {**params, "train": {**params["train"], "epochs": epochs}}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    stage = [sys.executable, "-m", "stages.train", "--params", str(work / "params.yaml")]
    stage += ["--prepared", str(data / "prepared"), "--augmented", str(data / "augmented")]
    stage += ["--model", str(work / "models" / "best.keras"), "--live", str(work / "live")]
    stage += ["--resume-dir", str(work / "resume")]
    launch = [sys.executable, "-m", "stages.launch", "--workers", str(workers), "--"]
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'src'}", TMPDIR=str(work / "tmp"))
    child = subprocess.Popen(
        (launch if workers else []) + stage,
        cwd=work,  # outside the repository: its .dvc/tmp is not shared with other tests
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if not wait:
        return child
    out, err = child.communicate(timeout=900)
    return child.returncode, out, err


def first_epoch(live: Path) -> list[float]:
    """Epoch 1's train and validation loss and accuracy, as DVCLive recorded them."""
    values = []
    for split in ("train", "val"):
        for metric in ("loss", "accuracy"):
            rows = (live / "plots" / "metrics" / split / f"{metric}.tsv").read_text().splitlines()
            values.append(float(rows[1].split("\t")[-1]))
    return values


def files(folder: Path) -> list[str]:
    return sorted(str(f.relative_to(folder)) for f in folder.rglob("*") if f.is_file())


@pytest.mark.slow
def test_the_train_stage_on_two_local_processes_matches_one(digits, tmp_path):
    status, _, err_one = train_stage(digits, tmp_path / "one", 2, None)
    assert status == 0, err_one[-3000:]
    status, out, err = train_stage(digits, tmp_path / "two", 2, 2)
    assert status == 0, err[-3000:]
    assert err == "" and err_one == ""  # healthy: no error lines, no framework noise
    assert "train: process 0 of 2" in out and out.count("train: finished after 2 epochs") == 1
    one, two = tmp_path / "one", tmp_path / "two"
    # The chief alone wrote the outputs, the same files as one process; the rest was temporary.
    assert files(two / "models") == files(one / "models") == ["best.keras"]
    assert files(two / "live") == files(one / "live")
    assert not (two / "resume").exists() and files(two / "tmp") == []
    # One global batch of 64 split 32 + 32: the first epoch's figures agree with one process.
    np.testing.assert_allclose(first_epoch(two / "live"), first_epoch(one / "live"), rtol=2e-3)
    summary = json.loads((two / "live" / "metrics.json").read_text())["run"]
    assert summary["epochs"] == 2 and summary["skipped_steps"] == 0 and not summary["diverged"]


def saved_epoch(resume: Path) -> int:
    states = list(resume.glob("*/state.json"))
    return json.loads(states[0].read_text())["epoch"] if states else -1


@pytest.mark.slow
def test_a_killed_worker_stops_the_run_with_one_line_and_the_next_run_resumes(digits, tmp_path):
    work = tmp_path / "run"
    epochs = 8  # tiny epochs: enough of them that the kill comes mid-run
    launched = train_stage(digits, work, epochs, 2, wait=False)
    deadline = time.monotonic() + 600
    while saved_epoch(work / "resume") < 0 and launched.poll() is None:
        assert time.monotonic() < deadline, "no epoch saved in 10 minutes"
        time.sleep(0.1)
    # The launched stage supervises processes 0 and 1 (started in that order): kill 1.
    started = subprocess.run(["pgrep", "-P", str(launched.pid)], capture_output=True, text=True)
    subprocess.run(["kill", "-9", sorted(started.stdout.split(), key=int)[-1]], check=True)
    out, err = launched.communicate(timeout=300)
    assert launched.returncode == 2, err
    error = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error) == 1, err
    first = error[0]
    assert first.startswith("error: train: process 1 of 2 ended (killed by signal 9)"), err
    kept = saved_epoch(work / "resume")
    assert kept >= 0 and str(work / "resume") in first
    status, out, err = train_stage(digits, work, epochs, 2)
    assert status == 0, err[-3000:]
    assert f"train: resuming after epoch {kept + 1}" in out
    summary = json.loads((work / "live" / "metrics.json").read_text())["run"]
    assert summary["resumed_from_epoch"] == kept + 1 and summary["epochs"] == epochs
    assert not (work / "resume").exists()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_missing_or_corrupt_shard_stops_the_run_with_one_line_naming_process_and_file(
    digits, tmp_path, damage
):
    data, params = digits
    copy = tmp_path / "data"
    shutil.copytree(data / "prepared", copy / "prepared")
    shutil.copytree(data / "augmented", copy / "augmented")
    (shard,) = sorted((copy / "augmented").glob("shard-*.npz"))
    if damage == "missing":
        shard.unlink()
    else:
        shard.write_bytes(shard.read_bytes()[:1000])  # a truncated zip
    status, _, err = train_stage((copy, params), tmp_path / "run", 2, 2)
    assert status == 2, err[-3000:]
    error = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error) == 1, err
    assert error[0].startswith("error: train: process "), err
    assert str(shard) in error[0] or shard.name in error[0], err
    assert not (tmp_path / "run" / "models" / "best.keras").exists()
