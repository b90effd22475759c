"""Experiments end to end, in a copy of the session's template repository.

In file order: `dvc exp run -S clip_norm=1.0`, the same experiment again from the
run-cache, then a queued sweep with `dvc exp show`, `dvc exp apply`, `dvc exp
branch` and `dvc plots diff`.
"""

from __future__ import annotations

import math
import time

import pytest
import yaml

from tests.e2e import copy_of, dvc, experiments, reset, sh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(template_repo, tmp_path_factory):
    """This module's copy of the template; its tests run in file order and build on each other."""
    return copy_of(template_repo, tmp_path_factory.mktemp("experiments") / "repo")


def test_an_experiment_with_clip_norm(repo):
    assert "up to date" in dvc("repro", cwd=repo)
    dvc("exp", "run", "-n", "clip-1", "-S", "clip_norm=1.0", cwd=repo)
    data = experiments(repo)["clip-1"]
    assert data["params"]["params.yaml"]["data"]["clip_norm"] == 1.0
    assert math.isfinite(data["metrics"]["metrics/eval.json"]["data"]["accuracy"])
    run = data["metrics"]["metrics/eval.json"]["data"]  # the experiment's summary
    assert run["diverged"] is False and 0.0 <= run["clip_fraction"] <= 1.0
    assert run["verdict"] == "healthy" and run["healthy"] is True
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert lock["stages"]["train"]["params"]["params.yaml"]["clip_norm"] == 1.0


def test_a_repeated_experiment_comes_from_the_run_cache(repo):
    reset(repo)  # back on the baseline, whose own results are in the workspace
    status, output = dvc(
        "exp", "run", "-n", "clip-1-again", "-S", "clip_norm=1.0", cwd=repo, check=False
    )
    assert status == 0, output[-3000:]
    for stage in ("train", "evaluate"):
        assert f"Stage '{stage}' is cached - skipping run" in output, output[-3000:]
    found = experiments(repo)
    assert found["clip-1-again"]["metrics"] == found["clip-1"]["metrics"]


def test_a_queued_sweep_then_apply_branch_and_plots_diff(repo):
    dvc("exp", "run", "--queue", "-S", "clip_norm=0.5,5.0", cwd=repo)
    dvc("queue", "start", "-j", "2", cwd=repo)  # the two experiments at once
    deadline = time.monotonic() + 600
    while any(state in dvc("queue", "status", cwd=repo) for state in ("Queued", "Running")):
        assert time.monotonic() < deadline, "the queue did not finish in 10 minutes"
        time.sleep(2)
    found = experiments(repo)
    norms = {name: d["params"]["params.yaml"]["data"].get("clip_norm") for name, d in found.items()}
    assert sorted(n for n in norms.values() if n is not None) == [0.5, 1.0, 1.0, 5.0], norms
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
