"""How often does the seeded gate fail a no-op change, or pass a real regression, on real runs?

Input: compare reports (`compare.json`) whose `none` runs are one configuration over many
seeds (here the default params: docs/study/default, seeds 200-204, and docs/study/noop,
seeds 300-321). The gate's accuracy rule (`gate.yaml`: higher, abs_tol 0.005) is applied
to groups of those runs, exactly as `python -m stages.gate --seeds N` applies it
(`gradguard.evaluation.gate.check_seeded`):

- a no-op change: the baseline's N runs and the workspace's N runs are the same params on
  other seeds (two disjoint groups, paired in order), so any failure is a false alarm;
- a real regression of twice the tolerance: the same, with the workspace's accuracies
  lowered by 0.01 (real runs shifted by that amount: a change whose whole effect is a loss
  of 2.7 test images of 270 on every seed would give exactly these runs).

Two counts per cell: over disjoint groups only (independent trials, with an exact
Clopper-Pearson interval on each share), and over 2,000 random splits into disjoint groups
(more precise shares, but the splits share runs: no interval).

    python benchmarks/gate_errors.py docs/study/default/compare.json docs/study/noop/compare.json
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

import numpy as np

from gradguard.evaluation.gate import Rule, check_seeded
from gradguard.evaluation.stats import share_interval

ACCURACY = Rule("metrics/eval.json:accuracy", "higher", abs_tol=0.005)
SHIFT = -2 * 0.005  # a regression of twice the tolerance


def accuracies(paths: list[str], remedy: str = "none") -> dict[int, float]:
    """seed -> test accuracy of the healthy `remedy` runs in every report."""
    found = {}
    for path in paths:
        with open(path, encoding="utf-8") as file:
            report = json.load(file)
        for summary in report["remedies"]:
            if summary["name"] == remedy:
                for run in summary["runs"]:
                    if run["verdict"] == "healthy":
                        found[int(run["seed"])] = float(run["accuracy"])
    return found


def outcomes(values: np.ndarray, seeds: int, shift: float, order: np.ndarray) -> list[str]:
    """The gate's outcome for each disjoint pair of groups of `seeds` runs in `order`."""
    groups = len(order) // (2 * seeds)
    result = []
    for g in range(groups):
        chosen = order[2 * seeds * g : 2 * seeds * (g + 1)]
        old, new = values[chosen[:seeds]], values[chosen[seeds:]] + shift
        result.append(check_seeded(ACCURACY, range(seeds), old, new).outcome)
    return result


def table(values: np.ndarray, splits: int) -> list[str]:
    rows = [
        "| change | seeds | disjoint trials | fail | pass | inconclusive "
        "| over random splits: fail, pass, inconclusive |",
        "|---|---:|---:|---|---|---|---|",
    ]
    rng = np.random.default_rng(31)
    for name, shift in (("no-op", 0.0), ("regression, 2x tolerance", SHIFT)):
        for seeds in (3, 5):
            disjoint = collections.Counter(outcomes(values, seeds, shift, np.arange(len(values))))
            trials = sum(disjoint.values())
            cells = []
            for outcome in ("fail", "pass", "inconclusive"):
                share = share_interval(disjoint[outcome], trials)
                cells.append(
                    f"{disjoint[outcome]} of {trials} "
                    f"[{100 * share.low:.0f}, {100 * share.high:.0f} %]"
                )
            pooled: collections.Counter = collections.Counter()
            for _ in range(splits):
                pooled.update(outcomes(values, seeds, shift, rng.permutation(len(values))))
            total = sum(pooled.values())
            shares = ", ".join(
                f"{100 * pooled[o] / total:.1f} %" for o in ("fail", "pass", "inconclusive")
            )
            rows.append(f"| {name} | {seeds} | {trials} | " + " | ".join(cells) + f" | {shares} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", help="compare.json files")
    parser.add_argument("--splits", type=int, default=2000, help="random splits (%(default)s)")
    args = parser.parse_args(argv)
    found = accuracies(args.reports)
    seeds = sorted(found)
    values = np.array([found[s] for s in seeds])
    print(
        f"{len(values)} healthy runs of one configuration (seeds {seeds[0]}-{seeds[-1]}): "
        f"accuracy {100 * values.mean():.2f} % mean, {100 * values.std(ddof=1):.2f} std\n"
    )
    print("\n".join(table(values, args.splits)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
