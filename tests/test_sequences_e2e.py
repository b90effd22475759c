"""End to end: a sequence `.npz` and a builder from nets/, through `dvc repro` and `dvc exp run`.

In a copy of the session's template repository: the kind read from the data, a
byte-identical `dvc repro -f`, a builder as an experiment, DVC's run-cache on the
train stage, and an edit of the builder's file re-running training.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from gradguard.verdict import VERDICTS
from tests.conftest import ROOT
from tests.e2e import commit, copy_of, dvc, experiments, reset, sh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(template_repo, tmp_path_factory):
    """This module's copy of the template, on a sequence data set, reproduced and committed."""
    repo = copy_of(template_repo, tmp_path_factory.mktemp("sequences") / "repo")
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, (400, 20, 3)).cumsum(axis=1).astype(np.float32)
    np.savez(repo / "data" / "raw" / "walks.npz", x=x, y=(x[:, -1, 0] > 0).astype(np.int64))
    dvc("add", "data/raw/walks.npz", cwd=repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    # The template's tiny CNN keys are set away from the committed ones: back, for sequences.
    params["data"] = {**committed["data"], "source": "npz", "path": "data/raw/walks.npz"}
    params["augment"] = {**committed["augment"], "copies": 0}
    params["model"] = committed["model"]  # with a builder, tuned family keys are refused
    params["train"] = {**params["train"], "epochs": 4, "patience": 4}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = dvc("repro", cwd=repo)
    assert "prepare: data.kind auto chose sequence" in output
    commit(repo, "walks")
    return repo


def test_a_sequence_set_reproduces_byte_for_byte(repo):
    stats = json.loads((repo / "data" / "prepared" / "stats.json").read_text())
    assert stats["kind"] == "sequence" and stats["example_shape"] == [20, 3]
    scores = json.loads((repo / "metrics" / "eval.json").read_text())
    assert scores["verdict"] in VERDICTS and 0 <= scores["accuracy"] <= 1
    lock = (repo / "dvc.lock").read_bytes()
    dvc("repro", "-f", cwd=repo)
    assert (repo / "dvc.lock").read_bytes() == lock
    assert sh("git", "status", "--porcelain", cwd=repo) == ""


def test_a_builder_is_an_experiment_and_its_file_a_dependency_of_train(repo):
    spec = "nets/example.py:dense_net"
    dvc("exp", "run", "-n", "dense", "-S", f"model.builder={spec}", cwd=repo)
    row = experiments(repo)["dense"]
    assert row["params"]["params.yaml"]["data"]["model"]["builder"] == spec
    accuracy = row["metrics"]["metrics/eval.json"]["data"]["accuracy"]
    assert 0 <= accuracy <= 1
    # From the baseline again, the same params: train's outputs come from DVC's run-cache.
    reset(repo)
    output = dvc("exp", "run", "-n", "dense-again", "-S", f"model.builder={spec}", cwd=repo)
    assert "Stage 'train' is cached" in output
    reset(repo)
    with open(repo / "nets" / "example.py", "a") as file:
        file.write("\n# edited\n")
    assert "train:" in dvc("status", cwd=repo)  # nets/ changed: training would run again
    sh("git", "checkout", "-q", "--", "nets", cwd=repo)
    assert "up to date" in dvc("status", cwd=repo)
