"""Stand-ins for the compare tests: constructed runs and a fake of DVC's queue.

`FakeQueue` plays `gradguard.experiments.queue.Experiments`: a queued entry moves to
finished (or failed) one poll later, as DVC's queue would.
"""

from __future__ import annotations

from pathlib import Path

from gradguard.experiments.plan import Cell, choose
from gradguard.experiments.queue import ExperimentRecord
from gradguard.experiments.results import RunResult
from gradguard.experiments.runner import Runner

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


FOREIGN = {
    "seed_param": "train.random_state",
    "metric": "results/scores.json:val.loss",
    "higher_is_better": False,
    "remedies": {"plain": {}, "clipped": {"opt.clip": 1.0}},
}


def runs_of(plan, table):
    """RunResults from {remedy: [(accuracy, verdict) per seed]}."""
    return [
        RunResult(Cell(name, seed), {"accuracy": acc, "verdict": verdict, "max_grad_norm": 2.0})
        for name, rows in table.items()
        for seed, (acc, verdict) in zip(plan.seeds, rows, strict=True)
    ]


def small_plan(plan, names, seeds=(1, 2, 3, 4)):
    return choose(plan, remedies=names, seeds=list(seeds))


class FakeQueue:
    """DVC's queue as the runner sees it: a queued entry finishes (or fails) one poll later."""

    def __init__(self, fail=(), fail_once=(), in_transit=()):
        self.entries: dict[str, ExperimentRecord] = {}
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
                self.entries[name] = ExperimentRecord(
                    name, state, f"rev-{name}", exp.params, metrics
                )

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
            self.entries[name] = ExperimentRecord(name, "queued", "", params, None)

    def start(self, jobs):
        self.starts += 1

    def discard(self, exp):
        self.removed.append(exp.name)
        del self.entries[exp.name]

    def failure(self, exp):
        return "OSError: disk full"

    def kill(self, exp):
        self.killed.append(exp.name)
        self.entries[exp.name] = ExperimentRecord(exp.name, "failed", exp.rev, exp.params, None)
        self.active_workers = None  # the re-queued run gets a worker


def runner_for(queue, plan, lines):
    return Runner(queue, plan, 2, log=lines.append, poll=0, sleep=lambda s: None, check_every=0)


class Vanishing(FakeQueue):
    """Loses the queue entry of cmp-none-s1 when the workers start, the first `times` times."""

    def __init__(self, times):
        super().__init__()
        self.times = times

    def start(self, jobs):
        super().start(jobs)
        if self.queued.count("cmp-none-s1") <= self.times:
            self.entries.pop("cmp-none-s1", None)


class UnevenQueue(FakeQueue):
    """zscore loses 2 points on odd seeds: 3 seeds leave it undecided against the margin."""

    @staticmethod
    def metrics(name):
        seed = int(name.rsplit("-s", 1)[1])
        loss = 0.02 if "zscore" in name and seed % 2 else 0.0
        return {"metrics/eval.json": {"accuracy": 0.9 + seed / 1000 - loss, "verdict": "healthy"}}

    def recorded(self, rev, gradients, summary_file):
        return ((), ()), {}
