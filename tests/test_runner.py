"""gradguard.experiments.runner, against a fake of DVC's queue (tests/compare_helpers.py)."""

from __future__ import annotations

import pytest

from gradguard.experiments.plan import Cell
from gradguard.experiments.queue import ExperimentRecord
from tests.compare_helpers import FakeQueue, Vanishing, runner_for, small_plan


def test_the_runner_queues_what_is_missing_then_reuses_it(plan):
    chosen = small_plan(plan, ["none", "global_norm"], seeds=(1, 2))
    queue, lines = FakeQueue(), []
    results = runner_for(queue, chosen, lines).run(chosen.cells())
    assert sorted(queue.queued) == sorted(c.experiment for c in chosen.cells())
    assert {c: r.metric for c, r in results.items()} == {
        c: pytest.approx(0.9 + c.seed / 1000) for c in chosen.cells()
    }
    assert lines[-1].startswith("compare: 4/4 done · ") and "healthy 90." in lines[-1]
    assert "about" in lines[0] and "min left" in lines[0]
    queue.queued.clear()
    again = []
    assert runner_for(queue, chosen, again).run(chosen.cells()) == results
    assert queue.queued == [] and again == ["compare: 4/4 runs already done, reused"]


def test_a_run_that_fails_to_execute_is_requeued_once_then_reported(plan):
    chosen = small_plan(plan, ["none"], seeds=(1, 2, 3))
    queue = FakeQueue(fail={"cmp-none-s2"}, fail_once={"cmp-none-s3"})
    results = runner_for(queue, chosen, []).run(chosen.cells())
    assert queue.queued.count("cmp-none-s2") == 2 and queue.queued.count("cmp-none-s3") == 2
    by_seed = {c.seed: r for c, r in results.items()}
    assert by_seed[2].metrics is None and by_seed[2].error == "OSError: disk full"
    assert by_seed[3].verdict == "healthy"  # its second try ran


def test_a_run_whose_params_changed_is_replaced_and_queued_runs_are_waited_for(plan):
    chosen = small_plan(plan, ["none", "global_norm"], seeds=(1, 2))
    queue = FakeQueue()
    stale = {**chosen.overrides(Cell("global_norm", 1)), "clip_norm": 5}
    queue.queue({"cmp-global_norm-s1": stale})
    queue.find("cmp")  # it finished, when compare.yaml said 5.0; it says 1.0 now
    queue.queue({"cmp-none-s1": chosen.overrides(Cell("none", 1))})  # left by an interrupted run
    queue.queued.clear()
    runner_for(queue, chosen, []).run(chosen.cells())
    assert queue.removed == ["cmp-global_norm-s1"]
    assert "cmp-none-s1" not in queue.queued and "cmp-global_norm-s1" in queue.queued


def test_a_run_a_worker_takes_while_the_queue_is_read_is_not_queued_twice(plan):
    # `dvc queue status` lists running tasks, then queued ones: a task taken between the
    # two reads shows in neither. Missing from one look, it is not queued again (a CI run
    # trained a run twice that way); missing from two in a row, it is.
    chosen = small_plan(plan, ["none"], seeds=(1, 2))
    queue = FakeQueue(in_transit={"cmp-none-s2"})  # missed by the first look after queueing
    results = runner_for(queue, chosen, []).run(chosen.cells())
    assert sorted(queue.queued) == ["cmp-none-s1", "cmp-none-s2"]  # once each
    assert [r.verdict for r in results.values()] == ["healthy", "healthy"]
    # At the start of a resumed compare: s1 finished, s2 queued and being taken right then.
    queue = FakeQueue(in_transit={"cmp-none-s2"})
    queue.queue({c.experiment: chosen.overrides(c) for c in chosen.cells()})
    params = queue.entries["cmp-none-s1"].params
    queue.entries["cmp-none-s1"] = ExperimentRecord(
        "cmp-none-s1", "success", "r1", params, {"verdict": "x"}
    )
    queue.queued.clear()
    queue.idle_workers = 1
    results = runner_for(queue, chosen, []).run(chosen.cells())
    assert queue.queued == [] and len(results) == 2
    # Gone for good (missing from two looks in a row; log, removed by hand): queued once
    # more, and it runs; gone again, it is reported, not queued a third time.
    for vanish, expected in ((1, ("", "healthy")), (2, ("the experiment disappeared", None))):
        queue = Vanishing(vanish)
        results = runner_for(queue, chosen, []).run(chosen.cells())
        assert queue.queued.count("cmp-none-s1") == min(vanish + 1, 2)
        s1 = results[Cell("none", 1)]
        assert (s1.error, s1.verdict if s1.metrics else None) == expected


def test_a_run_left_running_by_a_dead_worker_is_stopped_then_run_again(plan):
    # An entry shows as running, and no worker is alive (its worker died with the machine):
    # on the second look that sees this, it is killed (DVC marks it failed), then queued
    # once more, like a run that failed to execute, and it finishes.
    chosen = small_plan(plan, ["none"], seeds=(1, 2))
    queue, lines = FakeQueue(), []
    queue.entries["cmp-none-s1"] = ExperimentRecord("cmp-none-s1", "running", "rev-old", {}, None)
    queue.entries["cmp-none-s2"] = ExperimentRecord("cmp-none-s2", "running", "rev-old2", {}, None)
    queue.active_workers = 0
    results = runner_for(queue, chosen, lines).run(chosen.cells())
    assert queue.killed == ["cmp-none-s1", "cmp-none-s2"]
    assert sorted(queue.queued) == sorted(queue.removed) == ["cmp-none-s1", "cmp-none-s2"]
    assert [r.verdict for r in results.values()] == ["healthy", "healthy"]
    assert "cmp-none-s1 shows as running, its process is gone: stopped" in lines[0]


def test_workers_that_exited_while_runs_wait_are_started_again(plan):
    # Two jobs; one run running, one queued. With one worker alive (the other exited) the
    # runner starts the missing one; with both alive, or nothing queued, it starts none.
    chosen = small_plan(plan, ["none"], seeds=(1, 2))
    cells = list(chosen.cells())
    found = {
        "cmp-none-s1": ExperimentRecord("cmp-none-s1", "running", "rev-1", {}, None),
        "cmp-none-s2": ExperimentRecord("cmp-none-s2", "queued", "rev-2", {}, None),
    }
    for active, starts in ((1, 1), (2, 0), (None, 0)):
        queue = FakeQueue()
        queue.active_workers = active
        runner_for(queue, chosen, [])._keep_workers(cells, found)
        assert queue.starts == starts, active
    queue = FakeQueue()
    queue.active_workers = 1
    runner_for(queue, chosen, [])._keep_workers(cells[:1], found)  # only the running one
    assert queue.starts == 0


def test_a_run_whose_worker_misses_the_inspect_timeout_is_not_stopped(plan):
    # On a loaded machine celery's one-second `inspect` goes unanswered and `dvc queue
    # status` reports 0 active workers while the run's process is alive and busy: DVC's
    # record of that process decides, look after look, and nothing is killed.
    chosen = small_plan(plan, ["none"], seeds=(1, 2))
    cells = list(chosen.cells())[:1]
    queue = FakeQueue()
    found = {"cmp-none-s1": ExperimentRecord("cmp-none-s1", "running", "abc1234", {}, None)}
    queue.active_workers, queue.alive["cmp-none-s1"] = 0, True
    runner = runner_for(queue, chosen, [])
    for _ in range(5):
        runner._stop_orphans(cells, found)
    assert queue.killed == []
    # A dead process with a worker said alive: left to DVC (a worker fails its own task).
    queue.alive["cmp-none-s1"], queue.active_workers = False, 1
    for _ in range(3):
        runner._stop_orphans(cells, found)
    assert queue.killed == []
    # Its process and its worker gone (the machine died): two looks in a row stop it.
    queue.active_workers = 0
    runner._stop_orphans(cells, found)
    assert queue.killed == []
    runner._stop_orphans(cells, found)
    assert queue.killed == ["cmp-none-s1"]
