"""gradguard.experiments.queue: DVC commands, values as DVC parses them, process records."""

from __future__ import annotations

import json
import os

import pytest

from gradguard.experiments.queue import DvcError, ExperimentRecord, dvc, set_value


def test_set_values_are_yaml_as_dvc_parses_them():
    assert set_value("clip_norm", None) == "clip_norm=null"
    assert set_value("model.filters", [16, 16]) == "model.filters=[16, 16]"
    assert set_value("train.learning_rate", 0.3) == "train.learning_rate=0.3"
    assert set_value("train.on_explosion", "none") == "train.on_explosion=none"
    assert set_value("skip_nonfinite", True) == "skip_nonfinite=true"


def stand_in_dvc(folder, monkeypatch, main: str) -> None:
    """A package `dvc` in `folder` whose `python -m dvc` runs `main`, first on PYTHONPATH."""
    fake = folder / "dvc"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(main)
    monkeypatch.setenv("PYTHONPATH", str(folder))


def test_a_dvc_command_returns_while_the_workers_it_forked_run_on(tmp_path, monkeypatch):
    # `dvc queue start` forks workers that keep its standard output and error. A stand-in
    # `dvc` does the same: it forks a child that holds them and sleeps, and exits at once.
    # Read through pipes, the call would wait for the child (the compare printed no progress
    # until its queue was empty); read through files, it returns while the child lives.
    ended = tmp_path / "child-ended"
    stand_in_dvc(
        tmp_path,
        monkeypatch,
        "import os, sys, time\n"
        "print('started')\n"
        "sys.stdout.flush()\n"
        "if os.fork() == 0:\n"
        "    time.sleep(20)\n"
        f"    open({str(ended)!r}, 'w').close()\n"
        "    os._exit(0)\n",
    )
    assert dvc("queue", "start", cwd=tmp_path) == "started\n"
    assert not ended.exists()  # the call did not wait for the child


def test_a_failed_dvc_read_names_its_error_and_is_tried_again(tmp_path, monkeypatch):
    # A stand-in `dvc` that fails on its first call, its table on stdout and its error on
    # stderr, and succeeds on the second (as `queue status` once did while workers started).
    calls = tmp_path / "calls"
    stand_in_dvc(
        tmp_path,
        monkeypatch,
        "import pathlib, sys\n"
        f"calls = pathlib.Path({str(calls)!r})\n"
        "n = len(calls.read_text()) if calls.exists() else 0\n"
        "calls.write_text('x' * (n + 1))\n"
        "print('Task  Name  Status')\n"
        "print('b9f963b  cmp-rollback-s204  Queued')\n"
        "if n == 0:\n"
        "    print('ERROR: unexpected error - lock held', file=sys.stderr)\n"
        "    print('Having any troubles?', file=sys.stderr)\n"
        "    sys.exit(255)\n",
    )
    with pytest.raises(DvcError, match=r"^dvc queue status failed: ERROR: unexpected error"):
        dvc("queue", "status", cwd=tmp_path)
    calls.unlink()
    assert dvc("queue", "status", cwd=tmp_path, tries=2, wait=0).endswith("Queued\n")
    assert calls.read_text() == "xx"


def _record(root, task, name, pid, returncode=None):
    """A task folder as DVC's queue writes it: <task>.run (its name) and <task>.json."""
    folder = root / ".dvc" / "tmp" / "exps" / "run" / task
    folder.mkdir(parents=True)
    (folder / f"{task}.run").write_text(json.dumps({"name": name, "status": 2}))
    (folder / f"{task}.json").write_text(json.dumps({"pid": pid, "returncode": returncode}))


def test_process_alive_reads_the_process_records_dvc_writes(tmp_path):
    import subprocess
    import sys

    from gradguard.experiments.queue import Experiments

    task = "f90efd9162b091d104771decefe883bb2bd4a11e"  # `dvc queue status` shows f90efd9
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", task])
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    try:
        experiments = Experiments(tmp_path)
        exp = ExperimentRecord("cmp-none-s1", "running", task[:7], {}, None)
        assert experiments.process_alive(exp) is None  # nothing written yet
        _record(tmp_path, task, "cmp-none-s1", running.pid)
        assert experiments.process_alive(exp) is True
        other = ExperimentRecord("cmp-none-s2", "running", "34bd94a", {}, None)
        _record(tmp_path, "34bd94a81512f66f0e0157aeccaffd2ea1c7535a", "cmp-none-s2", ended.pid)
        assert experiments.process_alive(other) is False  # its process exited
        # a live process that is not this task's (a reused id) is not its process
        third = ExperimentRecord("cmp-none-s3", "running", "460332b", {}, None)
        _record(tmp_path, "460332b2f079834434b4bf94089a994abd7ea75a", "cmp-none-s3", os.getpid())
        assert experiments.process_alive(third) is False
        # an ended record of a run that was queued again under the same task: not alive
        fourth = ExperimentRecord("cmp-none-s4", "running", "7745a39", {}, None)
        _record(tmp_path, "7745a39dff38e0ac09894c5fd4467c894931a914", "cmp-none-s4", 1, 0)
        assert experiments.process_alive(fourth) is False
    finally:
        running.kill()
        running.wait()
