"""Two JAX processes on 127.0.0.1 train as one: every clipping mode, the skip decision."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradguard.multihost import cluster_from_env
from tests.parallel_cases import MODES

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("jax")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(tmp_path, processes: int, extra_env=None) -> list[dict]:
    """Run tests.multihost_worker in `processes` processes (1: no cluster); their results."""
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'src'}", **(extra_env or {}))
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


def test_two_processes_match_one_for_every_mode(tmp_path):
    (one,) = launch(tmp_path, 1)
    first, second = launch(tmp_path, 2)
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


def test_a_nan_in_one_process_rows_is_skipped_by_both(tmp_path):
    nan = {"MULTIHOST_NAN": "1"}  # row 13: the second global batch, process 1's half only
    (one,) = launch(tmp_path, 1, nan)
    first, second = launch(tmp_path, 2, nan)
    assert one["global_norm/skipped_steps"] == 1
    for result in (first, second):
        assert result["global_norm/skipped_steps"] == 1
        for i in range(4):
            key = f"global_norm/w{i}"
            assert np.isfinite(result[key]).all()
            np.testing.assert_allclose(result[key], one[key], atol=1e-5)


def test_the_cluster_comes_from_the_environment_or_one_clear_line():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2"}
    with pytest.raises(ValueError, match="needs JAX_PROCESS_ID in the environment"):
        cluster_from_env(env)
    with pytest.raises(ValueError, match="JAX_PROCESS_ID=2 with JAX_NUM_PROCESSES=2"):
        cluster_from_env({**env, "JAX_PROCESS_ID": "2"})
    cluster = cluster_from_env({**env, "JAX_PROCESS_ID": "1"})
    assert (cluster.processes, cluster.process, cluster.chief) == (2, 1, False)
