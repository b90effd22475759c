"""Run a compare's cells as DVC experiments: reuse what finished, queue what is missing, wait.

Running again runs only what is missing: a finished experiment with the
expected params is reused, a queued or running one is waited for (the queue
runs on in the background if this command is interrupted), one whose params
no longer match `compare.yaml` is replaced. A run that fails to execute (a
stage crashed: a queue or infrastructure failure, not a diverged run) is
queued once more, then reported as failed to run.

`dvc queue status` lists the running tasks, then the queued ones: a task that a
worker takes between the two reads is in neither. So a run missing from one look
is not queued again until a second look misses it too (a CI run once trained a
run twice that way).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gradguard.experiments.plan import OURS, Cell, Plan, matches
from gradguard.experiments.queue import ExperimentRecord, Experiments
from gradguard.experiments.results import RunResult, outcome


def print_flushed(line: str) -> None:
    """A progress line, flushed: it shows as it comes when the output is a file or a CI log."""
    print(line, flush=True)


class Runner:
    """Drives one plan's cells through DVC's queue and collects their results."""

    def __init__(
        self,
        experiments: Experiments,
        plan: Plan,
        jobs: int = 1,
        *,
        log: Callable[[str], None] = print_flushed,
        poll: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        check_every: float = 30.0,
        label: str = "compare",
    ):
        self.experiments, self.plan, self.jobs = experiments, plan, jobs
        self.log, self.poll, self.clock, self.sleep = log, poll, clock, sleep
        self.retried: set[str] = set()
        self.revs: dict[Cell, str] = {}  # each finished run's experiment revision
        self.pending: dict[str, dict] = {}  # to queue, in one call: name -> overrides
        self.check_every = check_every  # seconds between looks at the queue itself
        self.label = label  # the command's name, first on its progress lines
        self.orphan_looks: dict[str, int] = {}  # run -> looks in a row that found it gone
        self.missing: set[str] = set()  # experiments the last look did not find

    def run(self, cells: Sequence[Cell]) -> dict[Cell, RunResult]:
        """Every cell's result, running those that are not finished; returns when all are."""
        found = self._look_again_if_in_transit(cells, self.experiments.find(self.plan.prefix))
        results: dict[Cell, RunResult] = {}
        for cell in cells:
            exp = found.get(cell.experiment)
            if exp is not None and exp.state == "success" and not self._current(cell, exp):
                self.experiments.discard(exp)  # compare.yaml or params.yaml changed since
                exp = None
            if exp is not None and exp.state == "success":
                results[cell] = self._finished(cell, exp)
            elif exp is None or exp.state not in ("queued", "running"):
                self._queue(cell, exp)
        reused = len(results)
        if reused:
            self.log(f"{self.label}: {reused}/{len(cells)} runs already done, reused")
        self._wait([c for c in cells if c not in results], results, len(cells))
        return results

    def _look_again_if_in_transit(self, cells: Sequence[Cell], found: dict) -> dict:
        """`found`, or a second look when some cells are missing and a worker could be
        taking one of them from the queue at this moment (runs are queued or running, or
        a worker is alive): a cell found by neither look is not in the queue."""
        if all(cell.experiment in found for cell in cells):
            return found
        workers = (self.experiments.active_workers or 0) + (self.experiments.idle_workers or 0)
        if workers or any(exp.state in ("queued", "running") for exp in found.values()):
            return {**found, **self.experiments.find(self.plan.prefix)}
        return found

    def collect(self, cells: Sequence[Cell]) -> dict[Cell, RunResult]:
        """The results of the cells that are finished or failed, running nothing."""
        found = self.experiments.find(self.plan.prefix)
        results = {}
        for cell in cells:
            exp = found.get(cell.experiment)
            if exp is None or (exp.state == "success" and not self._current(cell, exp)):
                continue
            if exp.state == "success":
                results[cell] = self._finished(cell, exp)
            elif exp.state == "failed":
                results[cell] = RunResult(cell, None, self.experiments.failure(exp))
        return results

    def _current(self, cell: Cell, exp: ExperimentRecord) -> bool:
        return matches(exp.params, self.plan.overrides(cell))

    def _finished(self, cell: Cell, exp: ExperimentRecord) -> RunResult:
        self.revs[cell] = exp.rev
        return RunResult(cell, outcome(self.plan, exp.metrics or {}))

    def _queue(self, cell: Cell, exp: ExperimentRecord | None) -> None:
        """Queue a cell; one that failed gets one more try in this command, no more."""
        if exp is not None:  # failed: its one retry
            if cell.experiment in self.retried:
                return
            self.retried.add(cell.experiment)
            self.experiments.discard(exp)
        self.pending[cell.experiment] = self.plan.overrides(cell)

    def _flush(self) -> None:
        """Queue what is pending and start the workers (idle ones exit; new entries need one)."""
        if self.pending:
            self.experiments.queue(self.pending)
            self.pending = {}
        self.experiments.start(self.jobs)

    def _wait(self, waiting: list[Cell], results: dict, total: int) -> None:
        started = last_look = self.clock()
        done_here = 0
        if waiting:
            self._flush()  # also restarts the workers of an interrupted compare
        while waiting:
            self.sleep(self.poll)
            look = self.clock() - last_look >= self.check_every
            if look:  # `dvc queue status` costs seconds: now and then, for failures
                found, last_look = self.experiments.find(self.plan.prefix), self.clock()
                self._keep_workers(waiting, found)
                self._stop_orphans(waiting, found)
            else:  # finished runs, from git: cheap
                found = self.experiments.finished(self.plan.prefix)
            for cell in list(waiting):
                if not look and cell.experiment not in found:
                    continue
                result = self._settle(cell, found.get(cell.experiment))
                if result is None:
                    continue
                results[cell] = result
                waiting.remove(cell)
                done_here += 1
                self._progress(results, total, cell, started, done_here, len(waiting))
            if self.pending:
                self._flush()

    def _keep_workers(self, waiting: list[Cell], found: dict) -> None:
        """Start the missing workers while runs wait in the queue: all of them were stopped
        (an interrupted compare), or fewer than `jobs` are alive (one exited)."""
        states = {found[c.experiment].state for c in waiting if c.experiment in found}
        active = self.experiments.active_workers
        short = "running" not in states or (active is not None and active < self.jobs)
        if "queued" in states and short:
            self.experiments.start(self.jobs)  # DVC starts only the workers not running

    def _stop_orphans(self, waiting: list[Cell], found: dict) -> None:
        """Runs shown as running whose process is gone, on two looks in a row, are orphans
        (their worker was killed, e.g. with the machine): DVC marks them failed when killed,
        and they are queued once more like any run that failed to execute.

        Gone means both: `dvc queue status` counts no worker alive, and DVC's record of the
        run's process does not show it alive (`Experiments.process_alive`). Celery's count
        comes from a one-second `inspect` that a loaded machine can miss: a run
        whose recorded process is alive is never stopped, whatever the count says."""
        running = [found[c.experiment] for c in waiting if c.experiment in found]
        running = [exp for exp in running if exp.state == "running"]
        gone = set()
        for exp in running:
            alive = self.experiments.process_alive(exp)
            if alive is not True and self.experiments.active_workers == 0:
                gone.add(exp.name)
        self.orphan_looks = {name: self.orphan_looks.get(name, 0) + 1 for name in gone}
        for exp in running:
            if self.orphan_looks.get(exp.name, 0) >= 2:
                self.log(f"{self.label}: {exp.name} shows as running, its process is gone: stopped")
                self.experiments.kill(exp)
                del self.orphan_looks[exp.name]

    def _settle(self, cell: Cell, exp: ExperimentRecord | None) -> RunResult | None:
        """The cell's result once it has one; None while it is queued, running or re-queued."""
        if exp is not None and exp.state == "success":
            return self._finished(cell, exp)
        if exp is not None and exp.state in ("queued", "running"):
            self.missing.discard(cell.experiment)
            return None
        if exp is None and cell.experiment not in self.missing:  # maybe in transit: look again
            self.missing.add(cell.experiment)
            return None
        self.missing.discard(cell.experiment)
        if cell.experiment not in self.retried:
            self._queue(cell, exp)
            self.retried.add(cell.experiment)  # its one more try, a vanished run's too
            return None
        error = "the experiment disappeared" if exp is None else self.experiments.failure(exp)
        return RunResult(cell, None, error)

    def _progress(self, results, total, cell, started, done_here, left) -> None:
        result = results[cell]
        value = result.metric
        if value is None:
            shown = ""
        elif self.plan.metric == OURS:
            shown = f" {100 * value:.1f} %"
        else:
            shown = f" {value:.4g}"
        rate = "" if cell.learning_rate is None else f" lr {cell.learning_rate:g}"
        eta = ""
        if left:
            minutes = (self.clock() - started) / done_here * left / 60
            eta = f" · about {max(1, round(minutes))} min left"
        self.log(
            f"{self.label}: {len(results)}/{total} done · {cell.remedy}{rate} s{cell.seed} "
            f"{result.verdict}{shown}{eta}"
        )
