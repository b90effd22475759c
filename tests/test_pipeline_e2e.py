"""End to end: `dvc repro` and `dvc exp run -S clip_norm=1.0` in a temporary copy of the repo."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_PARAMS

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def sh(*args, cwd):
    """Run a command with this interpreter's environment first on PATH; return stdout."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def copy_repo(target: Path) -> Path:
    """The working tree's tracked and unignored files in a fresh git repository."""
    files = sh("git", "ls-files", "-co", "--exclude-standard", "-z", cwd=ROOT).split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def dvc(*args, cwd):
    return sh(sys.executable, "-m", "dvc", *args, cwd=cwd)


@pytest.fixture
def repo(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in TINY_PARAMS.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny", cwd=repo)
    return repo


def test_repro_then_an_experiment_with_clip_norm(repo):
    dvc("repro", cwd=repo)
    scores = json.loads((repo / "metrics" / "eval.json").read_text())
    assert math.isfinite(scores["accuracy"]) and scores["diverged"] is False
    assert "up to date" in dvc("repro", cwd=repo)  # nothing changed: nothing re-runs

    dvc("exp", "run", "-n", "clipped", "-S", "clip_norm=1.0", cwd=repo)
    rows = json.loads(dvc("exp", "show", "--json", cwd=repo))
    experiments = [exp for row in rows for exp in (row.get("experiments") or [])]
    runs = {
        run["name"]: run["revs"][0]["data"]
        for exp in experiments
        for run in [exp]
        if run.get("name")
    }
    assert "clipped" in runs, rows
    data = runs["clipped"]
    assert data["params"]["params.yaml"]["data"]["clip_norm"] == 1.0
    eval_metrics = data["metrics"]["metrics/eval.json"]["data"]
    assert math.isfinite(eval_metrics["accuracy"])
    train = data["metrics"]["metrics/train/metrics.json"]["data"]["run"]
    assert train["diverged"] is False and 0.0 <= train["clip_fraction"] <= 1.0
    # Changing clip_norm re-ran train and evaluate only (prepare/augment keep their lock).
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert lock["stages"]["train"]["params"]["params.yaml"]["clip_norm"] == 1.0
