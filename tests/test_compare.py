"""The compare command without DVC: its plan, its labels on constructed runs, its CLI, its runner.

The runner is driven through a fake of `gradguard.experiments.queue.Experiments` that
moves queued entries to finished (or failed) one poll later, as DVC's queue would.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from gradguard.errors import ParamsError
from gradguard.experiments.compare import _more_seeds, shard_of
from gradguard.experiments.plan import (
    Cell,
    apply_overrides,
    check_plan,
    choose,
    matches,
    parse_plan,
)
from gradguard.experiments.queue import DvcError, Found, dvc, set_value
from gradguard.experiments.report import markdown, plot_compare
from gradguard.experiments.results import RunResult, outcome
from gradguard.experiments.runner import Runner
from gradguard.experiments.summary import summarize
from stages import compare

ROOT = Path(__file__).resolve().parents[1]
REMEDIES = [
    "none",
    "value",
    "norm",
    "global_norm",
    "agc",
    "autoclip",
    "zscore",
    "zscore_capped",
    "skip",
    "rollback",
]


@pytest.fixture
def plan():
    return parse_plan(yaml.safe_load((ROOT / "compare.yaml").read_text()))


@pytest.fixture
def raw_params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_the_committed_plan_has_the_default_remedies_presets_and_five_seeds(plan, raw_params):
    assert list(plan.remedies) == REMEDIES
    assert set(plan.presets) == {"stress", "late"}
    assert len(plan.seeds) == 5 and len(set(plan.seeds)) == 5
    for base in (None, "stress", "late"):
        check_plan(choose(plan, base=base), raw_params)  # every run's params pass the schema


def test_a_run_applies_preset_then_neutral_then_remedy_then_seed(plan):
    chosen = choose(plan, base="late", remedies=["global_norm"], seeds=[3, 4])
    (first, _) = chosen.cells()
    assert first == Cell("global_norm", 3, None, "late")
    assert first.experiment == "cmp-late-global_norm-s3"
    merged = chosen.overrides(first)
    assert merged["train.learning_rate"] == 0.3 and merged["init_scale"] == 1.0
    assert merged["clip_norm"] == 1.0 and merged["train.on_explosion"] == "none"
    assert list(merged)[-1] == "seed" and merged["seed"] == 3
    ladder = choose(plan, remedies=["none"], seeds=[1, 2], ladder=[0.1])
    assert [c.experiment for c in ladder.cells()] == [
        "cmp-none-s1",
        "cmp-none-lr0.1-s1",
        "cmp-none-s2",
        "cmp-none-lr0.1-s2",
    ]
    assert ladder.overrides(ladder.cells()[1])["train.learning_rate"] == 0.1


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ({"remedies": ["none", "clipper"]}, "--remedies: unknown remedy 'clipper'"),
        ({"remedies": ["none", "none"]}, "names a remedy twice"),
        ({"base": "storm"}, "--base: unknown preset 'storm'"),
        ({"seeds": [1, 2, 1]}, "repeats a seed"),
        ({"seeds": [1]}, "expected at least 2 seeds"),
        ({"seeds": [-1, 2]}, "negative seed"),
        ({"ladder": [0.1, -0.3]}, "--lr-ladder"),
    ],
)
def test_bad_choices_are_one_line_naming_them(plan, choice, message):
    with pytest.raises(ParamsError, match=message.replace("[", r"\[")) as caught:
        choose(plan, **choice)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("remedy", "message"),
    [
        ({"clip_nrom": 1.0}, "remedy bad: clip_nrom=1.0: no such key"),
        ({"train.epoch": 3}, "remedy bad: train.epoch=3: no such key"),
        ({"clip_norm": -1.0}, "remedy bad: params: clip_norm=-1.0 is invalid"),
        ({"clip_mode": "sometimes"}, "remedy bad: params: clip_mode='sometimes' is invalid"),
    ],
)
def test_a_remedy_the_schema_refuses_is_named_with_its_key(plan, raw_params, remedy, message):
    bad = choose(plan)
    bad.remedies["bad"] = remedy
    with pytest.raises(ParamsError, match=message):
        check_plan(bad, raw_params)


def test_overrides_set_existing_keys_only_and_matching_compares_numbers_as_numbers():
    raw = {"seed": 1, "train": {"learning_rate": 0.1}, "model": {"filters": [4]}}
    merged = apply_overrides(raw, {"train.learning_rate": 1, "model.filters": [8, 8]})
    assert merged == {"seed": 1, "train": {"learning_rate": 1}, "model": {"filters": [8, 8]}}
    assert raw["model"]["filters"] == [4]  # the original is untouched
    assert matches(merged, {"train.learning_rate": 1.0, "model.filters": [8, 8]})
    assert not matches(merged, {"model.filters": [8]})
    assert not matches({"skip": 1}, {"skip": True})  # a bool is not a number here
    assert not matches(merged, {"train.momentum": 0.9})


def test_set_values_are_yaml_as_dvc_parses_them():
    assert set_value("clip_norm", None) == "clip_norm=null"
    assert set_value("model.filters", [16, 16]) == "model.filters=[16, 16]"
    assert set_value("train.learning_rate", 0.3) == "train.learning_rate=0.3"
    assert set_value("train.on_explosion", "none") == "train.on_explosion=none"
    assert set_value("skip_nonfinite", True) == "skip_nonfinite=true"


# --- labels, on constructed runs -----------------------------------------------------------


def runs_of(plan, table):
    """RunResults from {remedy: [(accuracy, verdict) per seed]}."""
    return [
        RunResult(Cell(name, seed), {"accuracy": acc, "verdict": verdict, "max_grad_norm": 2.0})
        for name, rows in table.items()
        for seed, (acc, verdict) in zip(plan.seeds, rows, strict=True)
    ]


def small_plan(plan, names, seeds=(1, 2, 3, 4)):
    return choose(plan, remedies=names, seeds=list(seeds))


def test_each_label_rule_on_a_constructed_case(plan):
    chosen = small_plan(plan, ["none", "global_norm", "norm", "agc", "autoclip"])
    ok = "healthy"
    table = {
        "none": [(0.90, ok), (0.80, ok), (0.85, ok), (0.95, ok)],
        # the best: the highest mean, all healthy
        "global_norm": [(0.96, ok), (0.94, ok), (0.95, ok), (0.97, ok)],
        # the same as the best on every seed: the interval is [0, 0], within any margin
        "norm": [(0.96, ok), (0.94, ok), (0.95, ok), (0.97, ok)],
        # exactly 5 points worse on every seed: the interval is [-0.05, -0.05] < -0.01
        "agc": [(0.91, ok), (0.89, ok), (0.90, ok), (0.92, ok)],
        # one run collapsed: unsafe, however good the rest
        "autoclip": [(0.99, ok), (0.10, "collapsed"), (0.99, ok), (0.99, ok)],
    }
    report = summarize(chosen, runs_of(chosen, table), "params.yaml")
    by = {s["name"]: s for s in report["remedies"]}
    assert report["best"] == "global_norm"
    assert by["global_norm"]["label"] == "recommended"
    assert by["norm"]["label"] == "recommended"
    assert by["norm"]["vs_best"] == {"estimate": 0.0, "low": 0.0, "high": 0.0, "seeds": 4}
    assert by["agc"]["label"] == "acceptable"
    assert by["agc"]["vs_best"]["low"] == by["agc"]["vs_best"]["high"] == pytest.approx(-0.05)
    assert by["autoclip"]["label"] == "unsafe"
    assert by["autoclip"]["verdicts"] == {
        "healthy": 3,
        "diverged": 0,
        "exploded": 0,
        "collapsed": 1,
    }
    # Clopper-Pearson, 1 failure in 4: low solves 1 - (1-p)^4 = 0.025, so 1 - 0.975^(1/4);
    # high solves (1-p)^4 + 4p(1-p)^3 = 0.025 (root found by hand with bisection: 0.8058796)
    share = by["autoclip"]["not_healthy"]
    assert share["estimate"] == 0.25
    assert share["low"] == pytest.approx(1 - 0.975**0.25, abs=1e-6)
    assert share["high"] == pytest.approx(0.8058796, abs=1e-6)
    # 0 of 4: the exact upper bound is 1 - 0.025^(1/4)
    assert by["none"]["not_healthy"]["high"] == pytest.approx(1 - 0.025**0.25, abs=1e-6)
    # against none: global_norm is +0.08 on average, better on every seed (+0.06, +0.14,
    # +0.10, +0.02), yet 4 seeds do not show it at 95 %: std 0.05164, standard error 0.02582,
    # t(0.975, 3) = 3.182446, so the interval is 0.08 -+ 0.082170
    versus = by["global_norm"]["vs_none"]
    assert versus["estimate"] == pytest.approx(0.08)
    assert (versus["low"], versus["high"]) == pytest.approx((-0.00217, 0.16217), abs=2e-6)
    # over all runs the collapsed run counts; over the healthy ones it does not
    assert by["autoclip"]["accuracy"]["all"]["mean"] == pytest.approx((0.99 * 3 + 0.10) / 4)
    assert by["autoclip"]["accuracy"]["healthy"]["mean"] == pytest.approx(0.99)


def test_an_interval_that_straddles_the_margin_is_inconclusive_with_seeds_to_decide(plan):
    chosen = small_plan(plan, ["global_norm", "zscore"])
    ok = "healthy"
    table = {
        "global_norm": [(0.95, ok), (0.95, ok), (0.95, ok), (0.95, ok)],
        # differences -0.03, +0.01, -0.02, 0.00: mean -0.01 sits on the margin itself
        "zscore": [(0.92, ok), (0.96, ok), (0.93, ok), (0.95, ok)],
    }
    report = summarize(chosen, runs_of(chosen, table), "params.yaml")
    zscore = report["remedies"][1]
    assert zscore["label"] == "inconclusive"
    assert zscore["vs_best"]["estimate"] == pytest.approx(-0.01)
    assert zscore["vs_best"]["low"] < -0.01 <= zscore["vs_best"]["high"]
    assert zscore["vs_best"]["seeds_to_decide"] is None  # on the margin: no number decides it
    table["zscore"] = [(0.92, ok), (0.97, ok), (0.93, ok), (0.95, ok)]  # mean -0.0075
    zscore = summarize(chosen, runs_of(chosen, table), "params.yaml")["remedies"][1]
    assert zscore["label"] == "inconclusive" and zscore["vs_best"]["seeds_to_decide"] > 4


def test_a_failed_run_is_not_a_verdict_and_the_report_is_byte_stable(plan, tmp_path):
    chosen = small_plan(plan, ["none", "skip"], seeds=(1, 2, 3))
    results = runs_of(chosen, {"none": [(0.9, "healthy")] * 3, "skip": [(0.9, "healthy")] * 3})
    results[-1] = RunResult(Cell("skip", 3), None, "MemoryError")
    report = summarize(chosen, results, "stress")
    skip = report["remedies"][1]
    assert skip["failed_to_run"] == [3] and skip["verdicts"]["healthy"] == 2
    assert skip["runs"][-1] == {
        "seed": 3,
        "experiment": "cmp-skip-s3",
        "metric": None,
        "accuracy": None,  # the metric is gradguard's accuracy: its old name stays
        "verdict": "failed to run",
        "error": "MemoryError",
    }
    assert skip["label"] == "recommended"  # 2 healthy paired seeds, equal to the best
    text = markdown(report)
    assert "failed to run twice (not a divergence): MemoryError" in text
    assert text.index("## Labels") < text.index("| remedy | label")  # rules before the table
    assert markdown(json.loads(json.dumps(report))) == text
    norms = {"none": [([1, 2, 3], [1.0, 2.0, 4.0]), ([1, 2], [1.0, 8.0])]}
    first = [p.read_bytes() for p in plot_compare(report, norms, tmp_path / "a")]
    again = [p.read_bytes() for p in plot_compare(report, norms, tmp_path / "b")]
    assert first == again and all(b.startswith(b"\x89PNG") for b in first)
    keys = {"base", "seeds", "remedies"}
    assert keys <= set(report) and {"name", "params", "label", "runs"} <= set(skip)


# --- the CLI: bad input is one line, exit status 2, nothing queued ---------------------------


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A folder with the committed compare.yaml and params.yaml, and no DVC repository."""
    for name in ("compare.yaml", "params.yaml"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--remedies", "none,clipper"], "unknown remedy 'clipper'"),
        (["--base", "storm"], "unknown preset 'storm'"),
        (["--seed-list", "4,5,4"], "repeats a seed"),
        (["--seed-list", "4"], "at least 2 seeds"),
        (["--seeds", "1"], "at least 2 seeds"),
        (["--seeds", "3", "--seed-list", "1,2"], "give one of them"),
        (["--shard", "3/2"], "--shard '3/2' is invalid"),
        (["--shard", "1/2", "--until-decided"], "writes no report"),
        (["--config", "missing.yaml"], "missing.yaml: file not found"),
    ],
)
def test_bad_command_lines_exit_2_with_one_line(workspace, capsys, argv, message):
    assert compare.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("compare: error: ") and message in err and err.count("\n") == 1
    assert not (workspace / "reports").exists()


@pytest.mark.parametrize(
    ("remedy", "message"),
    [
        ("{clip_nrom: 1.0}", "remedy bad: clip_nrom=1.0: no such key"),
        ("{clip_norm: -1.0}", "remedy bad: params: clip_norm=-1.0 is invalid"),
        ("[1, 2]", "remedies.bad: [1, 2] is invalid"),
    ],
)
def test_a_bad_remedy_in_compare_yaml_exits_2_naming_it(workspace, capsys, remedy, message):
    text = (workspace / "compare.yaml").read_text()
    (workspace / "compare.yaml").write_text(
        text.replace("remedies:\n", f"remedies:\n  bad: {remedy}\n")
    )
    assert compare.main([]) == 2
    assert message in capsys.readouterr().err


# --- the runner, against a fake queue --------------------------------------------------------


class FakeQueue:
    """DVC's queue as the runner sees it: a queued entry finishes (or fails) one poll later."""

    def __init__(self, fail=(), fail_once=(), in_transit=()):
        self.entries: dict[str, Found] = {}
        # Queued entries that the next `find` misses (a worker takes each just then).
        self.in_transit = set(in_transit)
        self.queued: list[str] = []
        self.removed: list[str] = []
        self.starts = 0
        self.fail, self.fail_once = set(fail), set(fail_once)
        self.active_workers: int | None = None
        self.idle_workers: int | None = None
        self.killed: list[str] = []
        self.alive: dict[str, bool] = {}  # DVC's process records; absent: none written

    def process_alive(self, exp):
        return self.alive.get(exp.name)

    def _advance(self, held=()):
        for name, exp in list(self.entries.items()):
            if exp.state == "queued" and self.active_workers != 0 and name not in held:
                failed = name in self.fail or name in self.fail_once
                self.fail_once.discard(name)
                state, metrics = ("failed", None) if failed else ("success", self.metrics(name))
                self.entries[name] = Found(name, state, f"rev-{name}", exp.params, metrics)

    def find(self, prefix):
        moving = {n for n in self.in_transit if n in self.entries}
        moving = {n for n in moving if self.entries[n].state == "queued"}
        self.in_transit -= moving
        self._advance(held=moving)
        return {n: e for n, e in self.entries.items() if n.startswith(prefix) and n not in moving}

    def finished(self, prefix):
        self._advance()
        return {
            n: e for n, e in self.entries.items() if n.startswith(prefix) and e.state == "success"
        }

    @staticmethod
    def metrics(name):
        accuracy = 0.9 + int(name.rsplit("-s", 1)[1]) / 1000
        return {"metrics/eval.json": {"accuracy": accuracy, "verdict": "healthy"}}

    def queue(self, entries):
        for name, overrides in entries.items():
            self.queued.append(name)
            params: dict = {}
            for dotted, value in overrides.items():  # nested, as params.yaml holds them
                *parents, leaf = dotted.split(".")
                node = params
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = value
            self.entries[name] = Found(name, "queued", "", params, None)

    def start(self, jobs):
        self.starts += 1

    def discard(self, exp):
        self.removed.append(exp.name)
        del self.entries[exp.name]

    def failure(self, exp):
        return "OSError: disk full"

    def kill(self, exp):
        self.killed.append(exp.name)
        self.entries[exp.name] = Found(exp.name, "failed", exp.rev, exp.params, None)
        self.active_workers = None  # the re-queued run gets a worker


def runner_for(queue, plan, lines):
    return Runner(queue, plan, 2, say=lines.append, poll=0, sleep=lambda s: None, check_every=0)


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
    queue.entries["cmp-none-s1"] = Found("cmp-none-s1", "success", "r1", params, {"verdict": "x"})
    queue.queued.clear()
    queue.idle_workers = 1
    results = runner_for(queue, chosen, []).run(chosen.cells())
    assert queue.queued == [] and len(results) == 2
    # Gone for good (missing from two looks in a row; say, removed by hand): queued once
    # more, and it runs; gone again, it is reported, not queued a third time.
    for vanish, expected in ((1, ("", "healthy")), (2, ("the experiment disappeared", None))):
        queue = Vanishing(vanish)
        results = runner_for(queue, chosen, []).run(chosen.cells())
        assert queue.queued.count("cmp-none-s1") == min(vanish + 1, 2)
        s1 = results[Cell("none", 1)]
        assert (s1.error, s1.verdict if s1.metrics else None) == expected


class Vanishing(FakeQueue):
    """Loses the queue entry of cmp-none-s1 when the workers start, the first `times` times."""

    def __init__(self, times):
        super().__init__()
        self.times = times

    def start(self, jobs):
        super().start(jobs)
        if self.queued.count("cmp-none-s1") <= self.times:
            self.entries.pop("cmp-none-s1", None)


def test_shards_are_disjoint_and_cover_the_grid(plan):
    cells = choose(plan, seeds=[1, 2, 3]).cells()
    shares = [cells[k - 1 :: 4] for k in range(1, 5)]
    assert sorted(c.experiment for share in shares for c in share) == sorted(
        c.experiment for c in cells
    )
    assert shard_of("2/4", False) == (2, 4) and shard_of(None, True) is None
    for bad in ("0/2", "2", "a/b", "1/0"):
        with pytest.raises(ParamsError, match="--shard"):
            shard_of(bad, False)


def test_until_decided_adds_the_same_new_seeds_to_the_undecided_and_the_best():
    report = {
        "best": "global_norm",
        "remedies": [
            {"name": "global_norm", "label": "recommended", "vs_best": None},
            {"name": "zscore", "label": "inconclusive", "vs_best": {"seeds_to_decide": 7}},
            {"name": "none", "label": "unsafe", "vs_best": None},
        ],
    }
    seeds = {"global_norm": [1, 2, 3], "zscore": [1, 2, 3], "none": [1, 2, 3]}
    # up to the next planned look (6), whatever seeds_to_decide says: the looks are fixed
    assert _more_seeds(report, seeds, target=6) == {
        "zscore": [4, 5, 6],
        "global_norm": [4, 5, 6],
    }
    seeds = {name: [1, 2, 3, 4, 5, 6] for name in seeds}
    assert _more_seeds(report, seeds, target=6) == {}  # at the look already


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


def test_a_run_left_running_by_a_dead_worker_is_stopped_then_run_again(plan):
    # An entry shows as running, and no worker is alive (its worker died with the machine):
    # on the second look that sees this, it is killed (DVC marks it failed), then queued
    # once more, like a run that failed to execute, and it finishes.
    chosen = small_plan(plan, ["none"], seeds=(1, 2))
    queue, lines = FakeQueue(), []
    queue.entries["cmp-none-s1"] = Found("cmp-none-s1", "running", "rev-old", {}, None)
    queue.entries["cmp-none-s2"] = Found("cmp-none-s2", "running", "rev-old2", {}, None)
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
        "cmp-none-s1": Found("cmp-none-s1", "running", "rev-1", {}, None),
        "cmp-none-s2": Found("cmp-none-s2", "queued", "rev-2", {}, None),
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


class UnevenQueue(FakeQueue):
    """zscore loses 2 points on odd seeds: 3 seeds leave it undecided against the margin."""

    @staticmethod
    def metrics(name):
        seed = int(name.rsplit("-s", 1)[1])
        loss = 0.02 if "zscore" in name and seed % 2 else 0.0
        return {"metrics/eval.json": {"accuracy": 0.9 + seed / 1000 - loss, "verdict": "healthy"}}

    def recorded(self, rev, gradients):
        return ((), ()), {}


def test_until_decided_adds_seeds_at_the_planned_look_and_widens_every_interval(plan, tmp_path):
    from gradguard.experiments.compare import Flow

    chosen = small_plan(plan, ["global_norm", "zscore"], seeds=(1, 2, 3))
    queue, lines = UnevenQueue(), []
    looks = (3, 6)  # stats.planned_looks(3, 6)
    flow = Flow(queue, chosen, 2, out=tmp_path, looks=looks, poll=0, say=lines.append)
    assert flow.run() == 0
    assert "looks at 3, 6 seeds, 97.5 % intervals at each" in lines[0]
    # differences -0.02, 0, -0.02 at 3 seeds: undecided, so both go to the next look, 6
    assert sorted(queue.queued) == sorted(
        f"cmp-{name}-s{seed}" for name in ("global_norm", "zscore") for seed in range(1, 7)
    )
    report = json.loads((tmp_path / "compare.json").read_text())
    assert report["confidence"] == 0.975
    zscore = next(s for s in report["remedies"] if s["name"] == "zscore")
    # 6 seeds: differences -0.02, 0 three times each: mean -0.01, std 0.010954, standard
    # error 0.0044721, t(0.9875, 5) = 3.163381: -0.01 -+ 0.014147, which holds -0.01
    assert zscore["label"] == "inconclusive"
    assert zscore["vs_best"]["low"] == pytest.approx(-0.024147, abs=2e-6)
    assert "97.5 % CI" in (tmp_path / "compare.md").read_text()


def test_a_report_rebuilt_from_its_json_is_the_report(plan, tmp_path):
    # --from-json: the runs a compare.json lists are all its statistics need, so a report
    # rebuilt from its own JSON is that report, key for key; and its files are written.
    chosen = small_plan(plan, ["none", "global_norm", "autoclip"], seeds=(1, 2, 3))
    ok = "healthy"
    table = {
        "none": [(0.90, ok), (0.10, "diverged"), (0.85, ok)],
        "global_norm": [(0.96, ok), (0.94, ok), (0.95, ok)],
        "autoclip": [(0.95, ok), (0.91, ok), (0.96, ok)],
    }
    report = json.loads(json.dumps(summarize(chosen, runs_of(chosen, table), "params.yaml")))
    source = tmp_path / "old" / "compare.json"
    source.parent.mkdir()
    source.write_text(json.dumps(report))
    (source.parent / "compare_grad_norms.png").write_bytes(b"kept")
    assert compare.main(["--from-json", str(source), "--out", str(tmp_path / "new")]) == 0
    rebuilt = json.loads((tmp_path / "new" / "compare.json").read_text())
    assert rebuilt == report
    assert (tmp_path / "new" / "compare_grad_norms.png").read_bytes() == b"kept"
    assert (tmp_path / "new" / "compare_accuracy.png").stat().st_size > 0
    assert compare.main(["--from-json", str(tmp_path / "missing.json")]) == 2


def test_a_run_whose_worker_misses_the_inspect_timeout_is_not_stopped(plan):
    # On a loaded machine celery's one-second `inspect` goes unanswered and `dvc queue
    # status` reports 0 active workers while the run's process is alive and busy: DVC's
    # record of that process decides, look after look, and nothing is killed.
    chosen = small_plan(plan, ["none"], seeds=(1, 2))
    cells = list(chosen.cells())[:1]
    queue = FakeQueue()
    found = {"cmp-none-s1": Found("cmp-none-s1", "running", "abc1234", {}, None)}
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
        exp = Found("cmp-none-s1", "running", task[:7], {}, None)
        assert experiments.process_alive(exp) is None  # nothing written yet
        _record(tmp_path, task, "cmp-none-s1", running.pid)
        assert experiments.process_alive(exp) is True
        other = Found("cmp-none-s2", "running", "34bd94a", {}, None)
        _record(tmp_path, "34bd94a81512f66f0e0157aeccaffd2ea1c7535a", "cmp-none-s2", ended.pid)
        assert experiments.process_alive(other) is False  # its process exited
        # a live process that is not this task's (a reused id) is not its process
        third = Found("cmp-none-s3", "running", "460332b", {}, None)
        _record(tmp_path, "460332b2f079834434b4bf94089a994abd7ea75a", "cmp-none-s3", os.getpid())
        assert experiments.process_alive(third) is False
        # an ended record of a run that was queued again under the same task: not alive
        fourth = Found("cmp-none-s4", "running", "7745a39", {}, None)
        _record(tmp_path, "7745a39dff38e0ac09894c5fd4467c894931a914", "cmp-none-s4", 1, 0)
        assert experiments.process_alive(fourth) is False
    finally:
        running.kill()
        running.wait()


# --- any DVC project: its own seed key, metric and verdict (issue 28) ------------------------

FOREIGN = {
    "seed_param": "train.random_state",
    "metric": "results/scores.json:val.loss",
    "higher_is_better": False,
    "remedies": {"plain": {}, "clipped": {"opt.clip": 1.0}},
}


def test_a_foreign_plan_writes_its_seed_key_and_reads_its_own_files():
    plan = parse_plan(FOREIGN, source="compare.yaml")
    cell = plan.cells(seeds=[7], remedies=["clipped"])[0]
    assert plan.overrides(cell) == {"opt.clip": 1.0, "train.random_state": 7}
    assert plan.files == ("results/scores.json",)
    assert plan.verdict is None and plan.gradients is None


@pytest.mark.parametrize(
    ("files", "metric", "verdict"),
    [
        ({"results/scores.json": {"val": {"loss": 0.25}}}, 0.25, "healthy"),
        ({"results/scores.json": {"val": {"loss": float("nan")}}}, None, "diverged"),
        ({"results/scores.json": {"val": {}}}, None, "diverged"),
        ({}, None, "diverged"),  # the stages succeeded but wrote no metric
    ],
)
def test_without_a_verdict_key_a_finite_metric_is_healthy(files, metric, verdict):
    result = outcome(parse_plan(FOREIGN), files)
    assert (result["metric"], result["verdict"]) == (metric, verdict)


def test_a_verdict_key_is_read_and_a_missing_metric_is_never_healthy():
    plan = parse_plan({**FOREIGN, "verdict": "results/run.json:state"})
    assert plan.files == ("results/scores.json", "results/run.json")
    files = {
        "results/scores.json": {"val": {"loss": 0.5}},
        "results/run.json": {"state": "exploded"},
    }
    assert outcome(plan, files)["verdict"] == "exploded"
    files["results/run.json"]["state"] = "healthy"
    del files["results/scores.json"]["val"]["loss"]
    assert outcome(plan, files)["verdict"] == "diverged"


def test_foreign_params_are_checked_for_keys_not_against_our_schema():
    plan = parse_plan(FOREIGN)
    raw = {"train": {"random_state": 0, "epochs": 3}, "opt": {"clip": None, "lr": 5}}
    check_plan(plan, raw, source="params.yaml")  # our schema would refuse every key here
    bad = parse_plan({**FOREIGN, "remedies": {"typo": {"opt.clipp": 1.0}}})
    with pytest.raises(
        ParamsError, match=r"remedy typo: opt.clipp=1.0: no such key in params.yaml"
    ):
        check_plan(bad, raw, source="params.yaml")
    with pytest.raises(ParamsError, match=r"remedy plain: train.random_state=0: no such key"):
        check_plan(plan, {"opt": {"clip": None}}, source="params.yaml")


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"metric": "scores.json"}, "metric='scores.json' is invalid; expected \"<file>:"),
        ({"seed_param": ""}, "seed_param='' is invalid"),
        ({"higher_is_better": "no"}, "higher_is_better='no' is invalid; expected true or false"),
    ],
)
def test_bad_reading_keys_are_one_line_each(raw, fragment):
    with pytest.raises(ParamsError, match=re.escape(fragment)):
        parse_plan({**FOREIGN, **raw}, source="compare.yaml")


def test_lower_is_better_picks_the_lowest_and_signs_differences_so_more_is_better(tmp_path):
    # Losses per seed: plain 0.30, 0.32, 0.31; clipped 0.20, 0.21, 0.22 (0.10 lower each).
    plan = choose(parse_plan({**FOREIGN, "margin": 0.01}), seeds=[1, 2, 3])
    losses = {"plain": [0.30, 0.32, 0.31], "clipped": [0.20, 0.22, 0.21]}
    results = [
        RunResult(Cell(name, seed), outcome(plan, {"results/scores.json": {"val": {"loss": v}}}))
        for name, values in losses.items()
        for seed, v in zip(plan.seeds, values, strict=True)
    ]
    report = summarize(plan, results, "params.yaml")
    assert report["best"] == "clipped" and report["metric"] == FOREIGN["metric"]
    plain = report["remedies"][0]
    assert plain["vs_best"]["estimate"] == pytest.approx(-0.10)  # 0.10 worse, signed
    assert plain["label"] == "acceptable"  # credibly more than 0.01 worse
    assert "accuracy" not in plain and "accuracy" not in plain["runs"][0]
    assert plain["runs"][0]["metric"] == pytest.approx(0.30)
    report["gradient_plot"] = False
    text = markdown(report)
    assert "`results/scores.json:val.loss` (lower is better" in text
    assert "0.3 H" in text and "%" not in text.split("## Runs")[1].split("\n")[0]
    assert "No gradient-norm plot" in text and "compare_grad_norms.png" not in text
    assert {p.name for p in plot_compare(report, {}, tmp_path, only=("accuracy",))} == {
        "compare_accuracy.png"
    }


@pytest.mark.parametrize(
    "cell",
    [
        Cell("none", 7),
        Cell("global_norm", 201, base="stress"),
        Cell("zscore_capped", 3, learning_rate=0.03, base="late"),
        Cell("run", 42, prefix="gate"),
    ],
)
def test_an_experiment_name_reads_back_as_its_cell(cell):
    assert Cell.parse(cell.experiment, cell.prefix, cell.base) == cell


@pytest.mark.parametrize(
    ("name", "base", "remedy"),
    [
        ("cmp-none-sx", None, None),  # no seed
        ("cmp-none-s1", "stress", None),  # a run without the base is not the base's
        ("gate-run-s1", None, None),  # another prefix
        ("cmp-none-lrfast-s1", None, None),  # a rate that is no number
        # Without a base, a preset's run reads as a remedy named "stress-none", which no
        # compare.yaml can hold (names are letters, digits and _): never taken for a cell.
        ("cmp-stress-none-s1", None, "stress-none"),
    ],
)
def test_names_of_other_shapes_are_not_cells(name, base, remedy):
    cell = Cell.parse(name, "cmp", base)
    assert (cell and cell.remedy) == remedy
