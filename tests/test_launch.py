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


def test_the_arguments_become_the_cluster_environment():
    old = {"JAX_PROCESS_ID": "3", "PATH": "/bin"}
    assert launch.environment(parse("workers", 2), old) == {
        "PATH": "/bin",
        "GRADGUARD_LOCAL_WORKERS": "2",
    }  # the rules themselves: tests/test_local.py


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
