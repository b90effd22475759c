"""`python -m stages.compare` end to end, in copies of the session's template repository.

In file order: 2 remedies x 2 seeds as DVC experiments and their report; the same
command again trains nothing; a compare killed with SIGKILL resumes without training
a run twice; then two clones each run one shard, push, and one report covers both.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.e2e import commit, copy_of, dvc, experiments, reset, sh

pytestmark = pytest.mark.slow

ARGS = ("--remedies", "none,global_norm", "--seed-list", "1,2", "--jobs", "2", "--poll", "1")


def compare(repo, *args, check=True):
    return sh(sys.executable, "-m", "stages.compare", *args, cwd=repo, check=check)


def queue_tasks(repo) -> collections.Counter:
    """How many queue tasks each experiment name has had (finished ones stay listed)."""
    rows = dvc("queue", "status", cwd=repo).splitlines()[1:]
    return collections.Counter(r.split()[1] for r in rows if r.split()[1:2] and "-s" in r)


@pytest.fixture(scope="module")
def repo(template_repo, tmp_path_factory):
    """This module's copy of the template; its first three tests build on each other."""
    return copy_of(template_repo, tmp_path_factory.mktemp("compare") / "repo")


def test_two_remedies_on_two_paired_seeds_as_named_experiments(repo):
    out = compare(repo, *ARGS)
    assert [line.split(" · ")[0] for line in out.splitlines() if " done · " in line] == [
        f"compare: {k}/4 done" for k in range(1, 5)
    ]
    report = json.loads((repo / "reports" / "compare.json").read_text())
    assert report["seeds"] == [1, 2] and report["base"] == "params.yaml"
    assert [r["name"] for r in report["remedies"]] == ["none", "global_norm"]
    found = experiments(repo)
    for remedy in report["remedies"]:
        assert remedy["label"] in ("recommended", "acceptable", "unsafe", "inconclusive")
        for run in remedy["runs"]:
            metrics = found[run["experiment"]]["metrics"]["metrics/eval.json"]["data"]
            assert run["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)
            assert run["verdict"] == metrics["verdict"]
    params = found["cmp-global_norm-s2"]["params"]["params.yaml"]["data"]
    assert params["clip_norm"] == 1.0 and params["seed"] == 2
    # Paired: one seed, one split (the same data/prepared), whatever the remedy.
    prepared = {n: d["deps"]["data/prepared"]["hash"] for n, d in found.items()}
    assert prepared["cmp-none-s1"] == prepared["cmp-global_norm-s1"] != prepared["cmp-none-s2"]
    files = ("compare.md", "compare.json", "compare_accuracy.png", "compare_grad_norms.png")
    first = {name: (repo / "reports" / name).read_bytes() for name in files}
    compare(repo, *ARGS, "--report-only")
    assert {name: (repo / "reports" / name).read_bytes() for name in files} == first
    dvc("exp", "apply", "cmp-global_norm-s1", cwd=repo)  # an ordinary experiment
    assert yaml.safe_load((repo / "params.yaml").read_text())["clip_norm"] == 1.0
    reset(repo)


def test_running_it_again_trains_nothing(repo):
    tasks = queue_tasks(repo)
    out = compare(repo, *ARGS)
    assert "compare: 4/4 runs already done, reused" in out and " done · " not in out
    assert queue_tasks(repo) == tasks


def test_a_killed_compare_resumes_and_trains_no_run_twice(repo):
    args = ("--remedies", "none,global_norm", "--seed-list", "1,2,3", "--jobs", "1", "--poll", "1")
    env = dict(
        os.environ, PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"
    )
    running = subprocess.Popen(
        [sys.executable, "-m", "stages.compare", *args],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while "Running" not in dvc("queue", "status", cwd=repo):  # a seed-3 run is under way
        assert running.poll() is None and time.monotonic() < deadline
        time.sleep(1)
    os.kill(running.pid, signal.SIGKILL)
    running.wait()
    out = compare(repo, *args)
    reused = re.search(r"compare: (\d)/6 runs already done, reused", out)
    assert reused is not None and int(reused.group(1)) >= 4, out[-3000:]
    # the rest (the seed-3 runs still queued or running, or queued now) finish here
    assert int(reused.group(1)) + out.count(" done · ") == 6, out[-3000:]
    tasks = queue_tasks(repo)
    assert set(tasks.values()) == {1}, (tasks, out[-3000:])  # none trained twice
    report = json.loads((repo / "reports" / "compare.json").read_text())
    assert report["seeds"] == [1, 2, 3]
    assert all(len(r["runs"]) == 3 for r in report["remedies"])


def test_two_clones_run_a_shard_each_and_one_report_covers_both(template_repo, tmp_path):
    origin, store = tmp_path / "origin.git", tmp_path / "dvc-store"
    sh("git", "init", "-q", "--bare", "-b", "main", str(origin), cwd=tmp_path)
    source = copy_of(template_repo, tmp_path / "source")
    dvc("remote", "add", "-d", "store", str(store), cwd=source)
    commit(source, "a shared DVC remote")
    sh("git", "push", "-q", str(origin), "main", cwd=source)
    clones = [tmp_path / name for name in ("a", "b")]
    for clone in clones:
        sh("git", "clone", "-q", str(origin), str(clone), cwd=tmp_path)
    args = ("--remedies", "global_norm", "--seed-list", "1,2", "--poll", "1")
    env = dict(
        os.environ, PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"
    )
    shards = [
        subprocess.Popen(
            [sys.executable, "-m", "stages.compare", *args, "--shard", f"{k}/2"],
            cwd=clone,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k, clone in enumerate(clones, 1)
    ]
    for shard in shards:
        output = shard.communicate(timeout=900)[0]
        assert shard.returncode == 0, output[-3000:]
        assert "compare: 1/1 done" in output
    for clone in clones:
        dvc("exp", "push", "origin", "--rev", "HEAD", cwd=clone)
    dvc("exp", "pull", "origin", "--rev", "HEAD", cwd=clones[0])
    compare(clones[0], *args, "--report-only")
    report = json.loads((clones[0] / "reports" / "compare.json").read_text())
    (remedy,) = report["remedies"]
    assert [r["experiment"] for r in remedy["runs"]] == [
        "cmp-global_norm-s1",
        "cmp-global_norm-s2",
    ]
    assert all(isinstance(r["accuracy"], float) for r in remedy["runs"])
    assert (clones[0] / "reports" / "compare_grad_norms.png").stat().st_size > 0


def test_a_real_queue_run_is_alive_by_its_process_record_until_its_process_dies(
    template_repo, tmp_path
):
    # The orphan rule reads DVC's own record of a running task's process (issue 31): a real
    # `dvc queue start` worker writes it, it says alive while the run trains, and dead once
    # that process is killed as a machine's death would kill it.
    from gradguard.experiments.queue import Experiments

    repo = copy_of(template_repo, tmp_path / "repo")
    overrides = ("-S", "seed=5", "-S", "train.epochs=200", "-S", "train.patience=200")
    dvc("exp", "run", "--queue", "-n", "alive-s5", *overrides, cwd=repo)
    queue = Experiments(repo)
    exp = queue.find("alive-")["alive-s5"]  # queued: its task id is known from now on
    # The driver's own start: its output goes to files. `dvc(...)` of tests/e2e.py reads
    # pipes, which the forked worker keeps open: it would return only once the run ended.
    queue.start(1)
    alive = None
    try:
        deadline = time.monotonic() + 240
        # File reads: cheap, poll fast. Right after the task starts, its record can name the
        # process that is only launching it; the runner needs two looks in a row, seconds
        # apart, before it stops anything.
        while time.monotonic() < deadline and alive is not True:
            alive = queue.process_alive(exp)
            time.sleep(0.2)
        log = "" if alive else dvc("queue", "logs", "alive-s5", cwd=repo, check=False)[1][-2000:]
        assert alive is True, (exp, log)
        (record,) = (repo / ".dvc" / "tmp" / "exps" / "run").glob(f"{exp.rev}*/{exp.rev}*.json")
        pid = json.loads(record.read_text())["pid"]
        sh("pkill", "-KILL", "-P", str(pid), cwd=repo, check=False)  # its stages first
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and queue.process_alive(exp) is not False:
            time.sleep(0.5)
        assert queue.process_alive(exp) is False
    finally:
        dvc("queue", "stop", "--kill", cwd=repo, check=False)
