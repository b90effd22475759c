"""The compare command's three ways through: run and report, report only, one shard."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from gradguard.errors import ParamsError
from gradguard.evaluation.stats import CONFIDENCE, look_confidence
from gradguard.experiments.plan import TRAIN_SUMMARY, Cell, Plan
from gradguard.experiments.queue import Experiments
from gradguard.experiments.report import PLOTS, markdown, plot_compare
from gradguard.experiments.runner import Runner, print_flushed
from gradguard.experiments.summary import TRAIN_KEYS, rebuild, summarize
from gradguard.io import atomic_path, write_json


def shard_of(text: str | None, refused: bool) -> tuple[int, int] | None:
    """`K/N` as (K, N), 1 <= K <= N; ParamsError names a bad one."""
    if text is None:
        return None
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        k = n = 0
    if not 1 <= k <= n:
        raise ParamsError(f"--shard {text!r} is invalid; expected K/N with 1 <= K <= N, e.g. 1/3")
    if refused:
        raise ParamsError(
            "--shard runs one share and writes no report: drop --until-decided "
            "and --report-only (run --report-only after `dvc exp pull`)"
        )
    return k, n


class CompareRun:
    """The compare's runs and report.

    `looks`, when given (`stats.planned_looks`), are the seed counts at which `run` may
    add seeds to undecided remedies; every interval of the report is then widened to
    `stats.look_confidence(looks)`, so stopping at the first decisive look keeps the
    whole procedure's error rate at 5 % (docs/compare.md).
    """

    def __init__(
        self,
        experiments: Experiments,
        plan: Plan,
        jobs: int,
        *,
        out: Path,
        looks: tuple[int, ...] = (),
        poll: float = 5.0,
        log=print_flushed,
    ):
        self.plan, self.out, self.log, self.looks = plan, out, log, looks
        self.confidence = look_confidence(looks) if looks else CONFIDENCE
        self.runner = Runner(experiments, plan, jobs, log=log, poll=poll)
        self.experiments = experiments

    def run(self) -> int:
        """Run the grid, then (with looks) more seeds, look by look, where a label is undecided."""
        if self.looks:
            self.log(
                f"compare: looks at {', '.join(map(str, self.looks))} seeds, "
                f"{100 * self.confidence:.4g} % intervals at each"
            )
        seeds = {name: list(self.plan.seeds) for name in self.plan.remedies}
        results, targets = {}, iter(self.looks[1:])
        while True:
            cells = [
                c
                for name in self.plan.remedies
                for c in self.plan.cells(seeds=seeds[name], remedies=[name])
            ]
            results.update(self.runner.run(cells))
            target = next(targets, None)
            more = _more_seeds(self._report(results), seeds, target) if target else {}
            if not more:
                break
            for name, added in more.items():
                self.log(f"compare: {name} is undecided; adding seeds {added}")
                seeds[name] += added
        self._write(results)
        return 1 if any(r.metrics is None for r in results.values()) else 0

    def report_only(self) -> int:
        """The report from the experiments there are (finished here, or pulled)."""
        results = self.runner.collect(self._known_cells())
        if not results:
            raise ParamsError(
                "no finished compare runs on this commit for these remedies and "
                "seeds; run without --report-only (or `dvc exp pull` them) first"
            )
        self._write(results)
        return 0

    def shard(self, k: int, n: int) -> int:
        """Run the K-th of N shares of the grid (every N-th cell); the report waits for all."""
        shard_cells = self.plan.cells()[k - 1 :: n]
        results = self.runner.run(shard_cells)
        self.log(
            f"compare: shard {k}/{n} done: {len(results)} runs; share them with "
            "`dvc exp push origin --rev HEAD`, then `dvc exp pull` and --report-only"
        )
        return 1 if any(r.metrics is None for r in results.values()) else 0

    def _known_cells(self) -> list[Cell]:
        """The plan's cells, plus any extra seeds (from --until-decided) found for its remedies."""
        plan = self.plan
        prefix = f"{plan.prefix}-" + (f"{plan.base}-" if plan.base else "")
        seeds = set(plan.seeds)
        for name in self.experiments.find(prefix):
            cell = Cell.parse(name, plan.prefix, plan.base)
            if cell is not None and cell.remedy in plan.remedies:
                seeds.add(cell.seed)
        return plan.cells(seeds=sorted(seeds))

    def _report(self, results: dict) -> dict:
        seeds = sorted({cell.seed for cell in results} | set(self.plan.seeds))
        plan = dataclasses.replace(self.plan, seeds=tuple(seeds))
        base = self.plan.base or "params.yaml"
        return summarize(plan, list(results.values()), base, self.confidence)

    def _write(self, results: dict) -> None:
        """Read each finished run's cached records, then write the report and its plots."""
        norms, enriched = {}, dict(results)
        for cell, rev in sorted(self.runner.revs.items(), key=lambda item: item[0].experiment):
            if cell not in results:
                continue
            curve, summary = self.experiments.recorded(rev, self.plan.gradients, TRAIN_SUMMARY)
            recorded = {key: summary.get(key) for key in TRAIN_KEYS}
            enriched[cell] = dataclasses.replace(
                results[cell], metrics={**results[cell].metrics, **recorded}
            )
            if cell.learning_rate is None:
                norms.setdefault(cell.remedy, []).append(curve)
        report = self._report(enriched)
        self.out.mkdir(parents=True, exist_ok=True)
        if self.plan.gradients is None:
            report["gradient_plot"] = False
            (self.out / PLOTS["grad_norms"]).unlink(missing_ok=True)  # not this report's
            plot_compare(report, norms, self.out, only=("accuracy", "verdicts"))
        else:
            plot_compare(report, norms, self.out)
        _write_report(report, self.out, self.log)


def _write_report(report: dict, out: Path, log) -> None:
    write_json(out / "compare.json", report)
    with atomic_path(out / "compare.md") as tmp:
        tmp.write_text(markdown(report), encoding="utf-8")
    labels = ", ".join(f"{s['name']} {s['label']}" for s in report["remedies"])
    log(f"compare: wrote {out}/compare.md, compare.json and plots: {labels}")


def rebuild_report(source: Path, out: Path, log=print_flushed) -> int:
    """The report again from the runs a compare.json lists (`--from-json`), under today's
    statistics: no experiment is needed. The gradient-norm plot needs per-step data that
    the JSON does not hold: it is kept (copied from beside `source` when `out` differs)."""
    try:
        report = rebuild(json.loads(source.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ParamsError(f"--from-json {source}: not a compare.json ({error!r})") from error
    out.mkdir(parents=True, exist_ok=True)
    norms = source.parent / PLOTS["grad_norms"]
    if norms.is_file() and norms.resolve() != (out / PLOTS["grad_norms"]).resolve():
        shutil.copyfile(norms, out / PLOTS["grad_norms"])
    plot_compare(report, {}, out, only=("accuracy", "verdicts"))
    _write_report(report, out, log)
    return 0


def _more_seeds(report: dict, seeds: dict[str, list[int]], target: int) -> dict:
    """remedy -> seeds to add up to `target` (the next planned look): to each inconclusive
    remedy, and to the best, so that they stay paired."""
    undecided = [s["name"] for s in report["remedies"] if s["label"] == "inconclusive"]
    undecided = [name for name in undecided if len(seeds[name]) < target]
    if not undecided:
        return {}
    names = undecided + ([report["best"]] if report["best"] else [])
    top = max(seed for chosen in seeds.values() for seed in chosen)
    extra = list(range(top + 1, top + 1 + target))
    more = {}
    for name in dict.fromkeys(names):
        wanted = [s for s in extra if s not in seeds[name]][: max(0, target - len(seeds[name]))]
        if wanted:
            more[name] = wanted
    return more
