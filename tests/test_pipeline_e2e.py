"""End to end, in a copy of the session's template repository (tiny params, reproduced).

A quiet `dvc repro`, the trained model in a user's script, `dvc repro -f` byte for
byte, a params typo, changed raw data and an older commit's data, and a DVC
remote round trip. The experiments are in tests/test_experiments_e2e.py.
"""

from __future__ import annotations

import json
import math
import re
import sys

import numpy as np
import pytest
import yaml

from tests.conftest import TINY_PARAMS
from tests.e2e import commit, copy_of, dvc, reset, sh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(template_repo, tmp_path_factory):
    """This module's copy of the template; its tests run in file order."""
    return copy_of(template_repo, tmp_path_factory.mktemp("pipeline") / "repo")


def test_a_healthy_repro_prints_no_framework_noise_and_one_summary_per_stage(repo):
    output = (repo.parent / "repro.log").read_text()
    # absl/TensorFlow C++ lines look like "I0000 00:00:..." or "E0000 ...".
    noise = [
        line for line in output.splitlines() if re.match(r"[IWEF]\d{4} |WARNING: All log", line)
    ]
    assert noise == []
    for stage in ("check_params", "prepare", "augment", "train", "evaluate"):
        assert re.search(rf"^{stage}: .*$", output, re.MULTILINE), stage


def test_the_trained_model_predicts_in_a_users_own_script(repo):
    # A fresh process, as a user's script: the README's lines, on the pipeline's own model.
    script = """
import sys
import gradguard
assert "keras" not in sys.modules  # the package itself loads no framework
model = gradguard.load_model("models/best.keras")  # safe_mode=True
_, size, _, channels = model.input_shape
x = gradguard.load_images(sys.argv[1], size, channels)
print(x.shape, model.predict(x, verbose=0).argmax(axis=1).tolist())
"""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = repo.parent / "my-images"
    folder.mkdir(exist_ok=True)
    for i in range(4):
        image = Image.fromarray((digits.images[i] * 15).astype("uint8"))
        image.save(folder / f"{i}.png")
    out = sh(sys.executable, "-c", script, str(folder), cwd=repo)
    size = TINY_PARAMS["data"]["image_size"]
    shape, labels = out.strip().rsplit(" [", 1)
    assert shape == f"(4, {size}, {size}, 1)"
    assert len(json.loads("[" + labels)) == 4


def test_repro_f_reproduces_the_lock_byte_for_byte_and_leaves_git_clean(repo):
    lock = (repo / "dvc.lock").read_bytes()
    dvc("repro", "-f", cwd=repo)
    assert (repo / "dvc.lock").read_bytes() == lock
    assert sh("git", "status", "--porcelain", cwd=repo) == ""


def test_a_params_typo_stops_before_any_stage_and_deletes_nothing(repo):
    params = (repo / "params.yaml").read_text()
    assert "clip_norm: null\n" in params
    # Added beside the real key, and in its place: each is refused by name.
    for typo in (params + "clip_nrom: 1.0\n", params.replace("clip_norm: null", "clip_nrom: 1.0")):
        (repo / "params.yaml").write_text(typo)
        status, output = dvc("repro", cwd=repo, check=False)
        assert status != 0 and "params: clip_nrom=1.0 is invalid" in output
        assert (repo / "models" / "best.keras").is_file()
        assert sh("git", "status", "--porcelain", cwd=repo) == " M params.yaml\n"
    reset(repo)


def test_changed_raw_data_reruns_prepare_and_an_old_commit_brings_its_data_back(repo):
    rng = np.random.default_rng(0)
    mine = repo / "data" / "raw" / "mine.npz"
    x = rng.integers(0, 256, (60, 8, 8), dtype=np.uint8)
    np.savez(mine, x=x, y=np.arange(60) % 3)
    dvc("add", "data/raw/mine.npz", cwd=repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"] = {**params["data"], "source": "npz", "path": "data/raw/mine.npz"}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc("repro", "prepare", cwd=repo)
    commit(repo, "my data, version 1")
    assert not re.search(r"^prepare:", dvc("status", cwd=repo), re.MULTILINE)
    first = mine.read_bytes()

    np.savez(mine, x=255 - x, y=np.arange(60) % 3)  # the user edits the data ...
    dvc("add", "data/raw/mine.npz", cwd=repo)  # ... and tracks the new version
    status = dvc("status", "prepare", cwd=repo)
    assert "prepare:" in status and "modified:" in status and "data/raw" in status
    dvc("repro", "prepare", cwd=repo)
    commit(repo, "my data, version 2")
    locked = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["prepare"]["deps"]
    raw_hash = next(dep["md5"] for dep in locked if dep["path"] == "data/raw")

    sh("git", "checkout", "-q", "HEAD~1", cwd=repo)  # an older commit, then its data
    dvc("checkout", cwd=repo)
    assert mine.read_bytes() == first
    assert not re.search(r"^prepare:", dvc("status", cwd=repo), re.MULTILINE)  # as it was
    sh("git", "checkout", "-q", "main", cwd=repo)
    dvc("checkout", cwd=repo)
    assert mine.read_bytes() != first and raw_hash.endswith(".dir")
    sh("git", "reset", "-q", "--hard", "HEAD~2", cwd=repo)  # leave the repo as it was
    mine.unlink()
    dvc("checkout", cwd=repo)
    assert "up to date" in dvc("status", cwd=repo)


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
        "data/prepared/train/shard-00000.npz",
        "data/augmented/shard-00000.npz",
        "models/best.keras",
        "metrics/eval.json",
        "metrics/train/metrics.json",
    ):
        assert (clone / path).is_file(), path
    assert "up to date" in dvc("repro", cwd=clone)  # nothing re-trains
    assert "up to date" in dvc("status", cwd=clone)
