"""End to end, in a temporary copy of the repository with tiny params.

One `dvc repro` is shared by the tests of this module, which run in file order:
a DVC remote round trip (push, fresh clone, pull, nothing to re-run), then
`dvc exp run -S clip_norm=1.0`, then a queued sweep with `dvc exp show`,
`dvc exp apply`, `dvc exp branch` and `dvc plots diff`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
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


def dvc(*args, cwd):
    return sh(sys.executable, "-m", "dvc", *args, cwd=cwd)


def commit(repo, message):
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, cwd=repo)


def experiments(repo) -> dict:
    """name -> data of each experiment in `dvc exp show --json`."""
    rows = json.loads(dvc("exp", "show", "--json", cwd=repo))
    return {
        exp["name"]: exp["revs"][0]["data"]
        for row in rows
        for exp in row.get("experiments") or []
        if exp.get("name")
    }


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The working tree's files, tiny params, one commit, one `dvc repro`."""
    repo = tmp_path_factory.mktemp("e2e") / "repo"
    files = sh("git", "ls-files", "-co", "--exclude-standard", "-z", cwd=ROOT).split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in TINY_PARAMS.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    commit(repo, "tiny params")  # DVCLive needs a commit to read
    dvc("repro", cwd=repo)
    commit(repo, "reproduced")
    return repo


def test_remote_push_then_a_fresh_clone_pulls_and_has_nothing_to_rerun(repo, tmp_path):
    scores = json.loads((repo / "metrics" / "eval.json").read_text())
    assert math.isfinite(scores["accuracy"]) and scores["diverged"] is False
    dvc("remote", "add", "-d", "store", str(tmp_path / "remote"), cwd=repo)
    commit(repo, "remote")
    dvc("push", cwd=repo)

    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    assert not (clone / "models" / "best.keras").exists()
    dvc("pull", cwd=clone)
    for path in (
        "data/prepared/train.npz",
        "data/augmented/train.npz",
        "models/best.keras",
        "metrics/eval.json",
        "metrics/train/metrics.json",
    ):
        assert (clone / path).is_file(), path
    assert "up to date" in dvc("repro", cwd=clone)  # nothing re-trains
    assert "up to date" in dvc("status", cwd=clone)


def test_an_experiment_with_clip_norm(repo):
    assert "up to date" in dvc("repro", cwd=repo)
    dvc("exp", "run", "-n", "clip-1", "-S", "clip_norm=1.0", cwd=repo)
    data = experiments(repo)["clip-1"]
    assert data["params"]["params.yaml"]["data"]["clip_norm"] == 1.0
    assert math.isfinite(data["metrics"]["metrics/eval.json"]["data"]["accuracy"])
    run = data["metrics"]["metrics/train/metrics.json"]["data"]["run"]
    assert run["diverged"] is False and 0.0 <= run["clip_fraction"] <= 1.0
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert lock["stages"]["train"]["params"]["params.yaml"]["clip_norm"] == 1.0


def test_a_queued_sweep_then_apply_branch_and_plots_diff(repo):
    dvc("exp", "run", "--queue", "-S", "clip_norm=0.5,5.0", cwd=repo)
    dvc("queue", "start", "-j", "1", cwd=repo)
    deadline = time.monotonic() + 600
    while any(state in dvc("queue", "status", cwd=repo) for state in ("Queued", "Running")):
        assert time.monotonic() < deadline, "the queue did not finish in 10 minutes"
        time.sleep(2)
    found = experiments(repo)
    norms = {name: d["params"]["params.yaml"]["data"].get("clip_norm") for name, d in found.items()}
    assert sorted(n for n in norms.values() if n is not None) == [0.5, 1.0, 5.0], norms
    table = dvc(
        "exp",
        "show",
        "--only-changed",
        "--sort-by",
        "metrics/eval.json:accuracy",
        "--csv",
        cwd=repo,
    )
    assert "clip_norm" in table.splitlines()[0]

    best = max(found, key=lambda n: found[n]["metrics"]["metrics/eval.json"]["data"]["accuracy"])
    dvc("exp", "apply", best, cwd=repo)
    applied = yaml.safe_load((repo / "params.yaml").read_text())["clip_norm"]
    assert applied == norms[best]
    dvc("exp", "branch", best, "best-clip", cwd=repo)
    assert "best-clip" in sh("git", "branch", "--list", "best-clip", cwd=repo)

    names = sorted(found)[:2]
    dvc("plots", "diff", *names, "-o", "plots-diff", cwd=repo)
    assert (repo / "plots-diff" / "index.html").is_file()
