"""The launcher: the cluster environment it hands to the command, and its one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gradguard.errors import ClusterError
from stages import launch

ROOT = Path(__file__).resolve().parents[1]


def parse(*argv):
    cli = launch.argparse.Namespace(workers=None, coordinator=None, processes=None, process=None)
    for key, value in zip(argv[::2], argv[1::2], strict=True):
        setattr(cli, key, value)
    return cli


def test_local_workers_set_the_count_and_drop_any_cluster_already_in_the_environment():
    old = {"JAX_PROCESS_ID": "3", "JAX_NUM_PROCESSES": "4", "PATH": "/bin"}
    env = launch.environment(parse("workers", 2), old)
    assert env == {"PATH": "/bin", "GRADGUARD_LOCAL_WORKERS": "2"}


def test_hosts_get_the_three_jax_variables_checked():
    args = parse("coordinator", "10.0.0.1:12355", "processes", 2, "process", 1)
    env = launch.environment(args, {"GRADGUARD_LOCAL_WORKERS": "2"})
    assert env == {
        "JAX_COORDINATOR_ADDRESS": "10.0.0.1:12355",
        "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": "1",
    }
    with pytest.raises(ClusterError, match="JAX_PROCESS_ID=2 with JAX_NUM_PROCESSES=2"):
        launch.environment(parse("coordinator", "h:1", "processes", 2, "process", 2), {})
    with pytest.raises(ClusterError, match="--coordinator needs --processes"):
        launch.environment(parse("coordinator", "h:1"), {})


def test_other_processes_run_the_train_stage_command_of_dvc_yaml(tmp_path):
    command = launch.train_command(ROOT / "dvc.yaml")
    assert command[:3] == ["python", "-m", "stages.train"] and "--resume-dir" in command
    with pytest.raises(ClusterError, match="not found; run the launcher in the repository"):
        launch.train_command(tmp_path / "dvc.yaml")


def test_the_command_runs_with_the_environment_and_a_bad_count_is_one_line():
    show = "import os; print(os.environ['GRADGUARD_LOCAL_WORKERS'])"
    done = subprocess.run(
        [sys.executable, "-m", "stages.launch", "--workers", "3", "--", sys.executable, "-c", show],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "3\n", "")
    done = subprocess.run(
        [sys.executable, "-m", "stages.launch", "--workers", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr == "error: --workers 0: expected a process count >= 1\n"
