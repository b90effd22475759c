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
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import TINY_PARAMS

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def sh(*args, cwd, check=True):
    """Run a command with this interpreter's environment first on PATH; return stdout.

    With `check=False`, return `(exit status, stdout + stderr)` instead of failing.
    """
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if not check:
        return done.returncode, done.stdout + done.stderr
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def dvc(*args, cwd, check=True):
    return sh(sys.executable, "-m", "dvc", *args, cwd=cwd, check=check)


def reset(repo):
    """Back to the last commit: params, lock, metrics and the DVC-tracked outputs."""
    sh("git", "checkout", "-q", "--", ".", cwd=repo)
    dvc("checkout", "-q", cwd=repo)


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
    status, output = dvc("repro", cwd=repo, check=False)
    assert status == 0, output[-3000:]
    (repo.parent / "repro.log").write_text(output)
    commit(repo, "reproduced")
    return repo


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
    dvc("queue", "start", "-j", "1", cwd=repo)
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
