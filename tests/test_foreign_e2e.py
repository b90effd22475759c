"""`gradguard compare` and `gradguard gate` on a DVC project that is not ours (examples/foreign).

Its own train.py, params names, metrics files, compare.yaml and gate.yaml: nothing of
gradguard's pipeline. Copied into a temporary git + DVC repository.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e import commit, dvc, experiments, sh

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
GRADGUARD = str(Path(sys.executable).parent / "gradguard")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    repo = tmp_path_factory.mktemp("foreign") / "repo"
    shutil.copytree(ROOT / "examples" / "foreign", repo)
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    dvc("init", "-q", cwd=repo)
    commit(repo, "a project of its own")
    return repo


def test_compare_runs_each_remedy_over_the_seeds_and_reads_the_projects_metric(project):
    status, out = sh(GRADGUARD, "compare", "--jobs", "2", cwd=project, check=False)
    assert status == 0, out[-3000:]
    report = json.loads((project / "reports" / "compare.json").read_text())
    assert report["metric"] == "results/scores.json:test.f1"
    assert report["seed_param"] == "trainer.random_state"
    shown = experiments(project)
    runs = [run for remedy in report["remedies"] for run in remedy["runs"]]
    assert len(runs) == 6 and {r["verdict"] for r in runs} == {"healthy"}
    for run in runs:  # each run's metric is the one DVC shows for that experiment
        data = shown[run["experiment"]]
        f1 = data["metrics"]["results/scores.json"]["data"]["test"]["f1"]
        assert run["metric"] == pytest.approx(f1, abs=1e-6)
        params = data["params"]["params.yaml"]["data"]
        assert params["trainer"]["random_state"] == run["seed"]
        assert "accuracy" not in run  # the alias belongs to gradguard's own metric only
    clipped = next(r for r in report["remedies"] if r["name"] == "clipped")
    assert clipped["gradients"]["max_grad_norm"] > 0  # from the project's verdict file
    assert "No gradient-norm plot" in (project / "reports" / "compare.md").read_text()
    # Again: everything is reused, nothing is queued.
    status, out = sh(GRADGUARD, "compare", "--jobs", "2", cwd=project, check=False)
    assert status == 0 and "6/6 runs already done, reused" in out, out[-2000:]
    assert "Queued" not in dvc("queue", "status", cwd=project)


def test_a_remedy_with_an_unknown_key_fails_before_anything_is_queued(project):
    config = yaml.safe_load((project / "compare.yaml").read_text())
    config["remedies"]["typo"] = {"optim.grad_limt": 1.0}
    (project / "bad.yaml").write_text(yaml.safe_dump(config))
    status, out = sh(GRADGUARD, "compare", "--config", "bad.yaml", cwd=project, check=False)
    assert status == 2
    assert "remedy typo: optim.grad_limt=1.0: no such key in params.yaml" in out
    assert "cmp-typo" not in dvc("queue", "status", cwd=project)


def test_the_seeded_gate_fails_a_real_regression(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["trainer"]["learning_rate"] = 0.001  # six epochs at this rate learn little
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status, out = sh(
            GRADGUARD,
            "gate",
            "--baseline",
            "HEAD",
            "--seeds",
            "3",
            "--jobs",
            "2",
            cwd=project,
            check=False,
        )
    finally:
        sh("git", "checkout", "-q", "--", "params.yaml", cwd=project)
    assert status == 1, out[-3000:]
    assert "gate: FAIL" in out and "results/scores.json:test.f1" in out
