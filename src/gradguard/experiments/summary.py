"""The compare report: every remedy over paired seeds, with intervals and a label each.

Input is one `RunResult` per (remedy, seed[, learning rate]) with what the run gave
back (`outcome`: its metric and verdict, read where compare.yaml says); output is a
JSON-ready mapping (`summarize`), which `report` turns into markdown and plots. The
labels follow `RULES`, stated in the report before its table. All intervals come from
`gradguard.evaluation.stats` (scipy's Student-t interval; Clopper-Pearson for shares),
so the same runs give the same bytes.
"""

from __future__ import annotations

import collections
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from gradguard.evaluation import stats
from gradguard.experiments.plan import OURS, Cell, Plan
from gradguard.experiments.results import FAILED_TO_RUN, VERDICTS, RunResult
from gradguard.io import strict

LABELS = ("recommended", "acceptable", "unsafe", "inconclusive")
GRADIENT_KEYS = ("max_grad_norm", "clip_fraction", "skipped_steps", "rollbacks")
# From each run's training summary (when its DVC cache has it): the worst run's, per remedy.
TRAIN_KEYS = ("weight_growth", "collapses")
RUN_KEYS = (*GRADIENT_KEYS, "first_nonfinite_step", *TRAIN_KEYS)  # per run, when known
RULES = (
    "`unsafe`: at least one of the remedy's runs is not `healthy` (diverged, exploded, "
    "collapsed, or unlearned: at chance without ever having learned).",
    "The **best** remedy is, among those whose runs are all healthy, the one with the highest "
    "mean test accuracy (the first listed, on a tie).",
    "Every other remedy whose runs are all healthy is compared with the best on the seeds both "
    "ran: the mean of the per-seed differences in test accuracy, with its paired Student-t "
    "interval [low, high] at the report's confidence (95 %; with --until-decided, 95 % spread "
    "over the planned looks). With the margin m:",
    "- `recommended`: low >= -m: not credibly more than m worse than the best (the best itself "
    "is recommended);",
    "- `acceptable`: high < -m: credibly more than m worse than the best;",
    "- `inconclusive`: low < -m <= high, the interval straddles the margin (or fewer than 2 "
    "paired seeds); the report says about how many seeds would decide it.",
)


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def _interval(interval: stats.Interval | None) -> dict | None:
    if interval is None:
        return None
    return {k: _round(getattr(interval, k)) for k in ("estimate", "low", "high")}


def _spread(values: Sequence[float], confidence: float) -> dict | None:
    if not values:
        return None
    return {
        "runs": len(values),
        "mean": _round(statistics.fmean(values)),
        "std": _round(statistics.stdev(values)) if len(values) > 1 else 0.0,
        "median": _round(statistics.median(values)),
        "iqm": _round(stats.iqm(values)),
        "interval": (
            _interval(stats.mean_interval(values, confidence=confidence))
            if len(values) > 1
            else None
        ),
    }


def _paired(
    remedy: Mapping[int, float], reference: Mapping[int, float], confidence: float
) -> tuple[list[float], stats.Interval] | None:
    seeds = sorted(set(remedy) & set(reference))
    if len(seeds) < 2:
        return None
    first, second = [remedy[s] for s in seeds], [reference[s] for s in seeds]
    differences = [a - b for a, b in zip(first, second, strict=True)]
    return differences, stats.paired_difference(first, second, confidence=confidence)


def _remedy_runs(plan: Plan, results: Sequence[RunResult], name: str) -> list[RunResult]:
    """The remedy's runs at the base learning rate, in seed order."""
    found = {(r.cell.remedy, r.cell.seed, r.cell.learning_rate): r for r in results}
    return [found[key] for s in plan.seeds if (key := (name, s, None)) in found]


def _gradients(finished: Sequence[RunResult]) -> dict:
    out = {}
    for key in (*GRADIENT_KEYS, *TRAIN_KEYS):
        values = [r.metrics.get(key) for r in finished]
        values = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
        if not values:
            out[key] = None
        elif key == "clip_fraction":
            out[key] = _round(statistics.fmean(values))  # the mean over runs
        else:
            out[key] = _round(max(values))  # the worst run
    return out


def _summary(plan: Plan, results: Sequence[RunResult], name: str, confidence: float) -> dict:
    runs = _remedy_runs(plan, results, name)
    finished = [r for r in runs if r.metrics is not None]
    counts = collections.Counter(r.verdict for r in finished)
    failures = len(finished) - counts["healthy"]
    values = [r.metric for r in finished if r.metric is not None]
    healthy = [r.metric for r in finished if r.verdict == "healthy" and r.metric is not None]
    spread = {"all": _spread(values, confidence), "healthy": _spread(healthy, confidence)}
    return {
        "name": name,
        "params": plan.remedies[name],
        "runs": [_run_row(r, plan.metric == OURS) for r in runs],
        "verdicts": {v: counts[v] for v in VERDICTS},
        "failed_to_run": [r.cell.seed for r in runs if r.metrics is None],
        "not_healthy": (
            _interval(stats.share_interval(failures, len(finished))) if finished else None
        ),
        "metric": spread,
        **({"accuracy": spread} if plan.metric == OURS else {}),  # the old name, as an alias
        "solved": _solved(finished),
        "gradients": _gradients(finished),
    }


def _solved(finished: Sequence[RunResult]) -> dict | None:
    """The share of runs that solved the task (their `solved` key), with its exact interval;
    None when any run does not record it."""
    flags = [r.metrics.get("solved") for r in finished]
    if not flags or not all(isinstance(flag, bool) for flag in flags):
        return None
    share = _interval(stats.share_interval(sum(flags), len(flags)))
    return {"solved": sum(flags), "runs": len(flags), **share}


def _run_row(run: RunResult, ours: bool) -> dict:
    row = {
        "seed": run.cell.seed,
        "experiment": run.cell.experiment,
        "metric": _round(run.metric),
        **({"accuracy": _round(run.metric)} if ours else {}),  # the old name, as an alias
        "verdict": run.verdict,
    }
    if run.metrics is None:
        row["error"] = run.error
    else:
        row.update({key: strict(run.metrics.get(key)) for key in RUN_KEYS})
    return row


def _all_healthy(summary: Mapping) -> bool:
    runs = [r for r in summary["runs"] if r["verdict"] != FAILED_TO_RUN]
    return len(runs) >= 2 and all(r["verdict"] == "healthy" for r in runs)


def _best(summaries: Sequence[Mapping], sign: float) -> Mapping | None:
    candidates = [s for s in summaries if _all_healthy(s)]
    return max(candidates, key=lambda s: sign * s["metric"]["all"]["mean"], default=None)


def _label(
    summary: Mapping, best: Mapping | None, margin: float, confidence: float, sign: float
) -> tuple[str, dict | None]:
    """The label, and against the best: the paired difference and seeds that would decide."""
    finished = [r for r in summary["runs"] if r["verdict"] != FAILED_TO_RUN]
    if any(r["verdict"] != "healthy" for r in finished):
        return "unsafe", None
    if best is None or not _all_healthy(summary):
        return "inconclusive", None
    if summary is best:
        return "recommended", {"estimate": 0.0, "low": 0.0, "high": 0.0, "seeds": len(finished)}
    remedy, best_values = _seed_values(summary, sign), _seed_values(best, sign)
    seeds = sorted(set(remedy) & set(best_values))
    if len(seeds) < 2:
        return "inconclusive", None
    decision = stats.decide(
        [remedy[s] for s in seeds], [best_values[s] for s in seeds], margin, confidence=confidence
    )
    against = {**_interval(decision.interval), "seeds": decision.seeds}
    if decision.outcome == "within":
        return "recommended", against
    if decision.outcome == "beyond":
        return "acceptable", against
    return "inconclusive", {**against, "seeds_to_decide": decision.seeds_to_decide}


def _seed_values(summary: Mapping, sign: float) -> dict[int, float]:
    """seed -> the run's metric, signed so that more is better (a diverged run's kept
    checkpoint counts)."""
    return {r["seed"]: sign * r["metric"] for r in summary["runs"] if r["metric"] is not None}


def _versus_none(
    summary: Mapping, none: Mapping | None, confidence: float, sign: float
) -> dict | None:
    if none is None or summary is none:
        return None
    remedy, control = _seed_values(summary, sign), _seed_values(none, sign)
    paired = _paired(remedy, control, confidence)
    if paired is None:
        return None
    differences, interval = paired
    seeds = sorted(set(remedy) & set(control))
    improvement = stats.probability_of_improvement(
        [remedy[s] for s in seeds], [control[s] for s in seeds]
    )
    return {
        **_interval(interval),
        "seeds": len(differences),
        "probability_of_improvement": _round(improvement),
    }


def _headroom(plan: Plan, results: Sequence[RunResult], name: str) -> dict | None:
    """Per ladder rate, healthy runs of all seeds; and the highest rate with every seed healthy."""
    if not plan.ladder:
        return None
    found = {(r.cell.remedy, r.cell.seed, r.cell.learning_rate): r for r in results}
    rates, highest = {}, None
    for rate in sorted(plan.ladder):
        runs = [found.get((name, seed, rate)) for seed in plan.seeds]
        healthy = sum(r is not None and r.verdict == "healthy" for r in runs)
        rates[f"{rate:g}"] = f"{healthy}/{len(runs)}"
        if healthy == len(runs):
            highest = rate
    return {"healthy_runs": rates, "highest_healthy_rate": highest}


def summarize(
    plan: Plan,
    results: Sequence[RunResult],
    base: str,
    confidence: float = stats.CONFIDENCE,
) -> dict:
    """The report as a JSON-ready mapping (see `compare.json` in the README).

    Args:
        plan: the plan the runs came from (remedies, seeds, margin, ladder).
        results: one per run found, finished or failed to run.
        base: how the base params are described (a preset's name, or the file).
        confidence: every interval's level (`stats.look_confidence` under --until-decided).
    """
    sign = 1.0 if plan.higher_is_better else -1.0
    summaries = [_summary(plan, results, name, confidence) for name in plan.remedies]
    best = _best(summaries, sign)
    none = next((s for s in summaries if s["name"] == "none"), None)
    for summary in summaries:
        summary["label"], summary["vs_best"] = _label(summary, best, plan.margin, confidence, sign)
        summary["vs_none"] = _versus_none(summary, none, confidence, sign)
        summary["headroom"] = _headroom(plan, results, summary["name"])
    return {
        "base": base,
        "base_overrides": plan.presets.get(plan.base, {}) if plan.base else {},
        "neutral": plan.neutral,
        "seeds": list(plan.seeds),
        "margin": plan.margin,
        "confidence": confidence,
        "best": best["name"] if best else None,
        **_reading(plan),
        "rules": _rules(plan),
        "remedies": summaries,
    }


def _reading(plan: Plan) -> dict:
    """What the runs were read by: left out for gradguard's own (the report as before)."""
    if (plan.metric, plan.higher_is_better, plan.seed_param) == (OURS, True, "seed"):
        return {}
    return {
        "metric": plan.metric,
        "higher_is_better": plan.higher_is_better,
        "seed_param": plan.seed_param,
    }


def _rules(plan: Plan) -> list[str]:
    """`RULES`, about the plan's metric (differences signed so that more is better)."""
    if plan.metric == OURS and plan.higher_is_better:
        return list(RULES)
    name = f"`{plan.metric}`" + ("" if plan.higher_is_better else " (lower is better)")
    text = [rule.replace("test accuracy", name) for rule in RULES]
    if not plan.higher_is_better:
        text = [
            rule.replace("highest", "lowest").replace(
                "per-seed differences", "per-seed differences, signed so that more is better,"
            )
            for rule in text
        ]
    return text


def rebuild(report: Mapping[str, Any], confidence: float | None = None) -> dict:
    """`summarize` again from the runs a report lists (its `compare.json`).

    For a report whose experiments are gone (a fresh clone holds no experiment refs):
    every run row keeps what the statistics read (seed, accuracy, verdict, gradient
    keys), so the labels and intervals can be recomputed under new rules. The ladder's
    runs are not listed: each remedy's `headroom` is kept as the report had it.

    Args:
        report: a compare.json's mapping.
        confidence: the intervals' level; None keeps the report's own.
    """
    base = report["base"]
    plan = Plan(
        remedies={s["name"]: dict(s["params"]) for s in report["remedies"]},
        presets={base: dict(report["base_overrides"])} if report["base_overrides"] else {},
        neutral=dict(report["neutral"]),
        seeds=tuple(report["seeds"]),
        margin=float(report["margin"]),
        base=base if report["base_overrides"] else None,
        metric=report.get("metric", OURS),
        higher_is_better=report.get("higher_is_better", True),
        seed_param=report.get("seed_param", "seed"),
    )
    results = []
    for summary in report["remedies"]:
        for row in summary["runs"]:
            cell = Cell(summary["name"], int(row["seed"]), base=plan.base)
            if row["verdict"] == FAILED_TO_RUN:
                results.append(RunResult(cell, None, row.get("error", "")))
            else:
                metrics = {k: v for k, v in row.items() if k not in ("seed", "experiment")}
                results.append(RunResult(cell, metrics))
    level = report["confidence"] if confidence is None else confidence
    rebuilt = summarize(plan, results, base, level)
    for new, old in zip(rebuilt["remedies"], report["remedies"], strict=True):
        new["headroom"] = old["headroom"]
    if "gradient_plot" in report:
        rebuilt["gradient_plot"] = report["gradient_plot"]
    return rebuilt
