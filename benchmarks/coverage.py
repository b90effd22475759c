"""How often does a 95 % interval of a mean paired difference hold the true mean?

Two tables, from a fixed generator (the same numbers on every run):

1. Coverage of one interval: paired differences with a known mean, drawn again and again;
   each time the interval is asked for and checked against the true mean. Rows are
   distributions x seeds; columns are `gradguard.evaluation.stats.paired_difference` (the
   Student-t interval), the percentile bootstrap it replaced (scipy.stats.bootstrap, paired,
   percentile method: the code before issue 27, here with 1,999 resamples instead of 9,999
   to keep the table to minutes; its coverage does not depend on the count), and, as a
   cross-check, the exact sign-flip permutation test (scipy.stats.permutation_test on the
   differences less the true mean): its share of "not rejected" at 5 %, which is 100 % at
   3 and 5 seeds because 2^3 and 2^5 sign patterns cannot give a p-value under 0.05.
2. Adding seeds until decided (compare's --until-decided): the whole procedure at a true
   difference of exactly -margin (how often it ends `recommended`: credibly within the margin
   when it is not) and of 0 (how often it ends `acceptable`: credibly worse when it is not),
   for the old rule (95 % bootstrap at every look, looks sized by `seeds_to_decide`) and the
   new one (planned doubling looks, Bonferroni-widened t intervals).

    python benchmarks/coverage.py                 # 2,000 trials a cell, about 10 minutes
    python benchmarks/coverage.py --trials 500    # quicker, coarser
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from scipy import stats as scipy_stats

from gradguard.evaluation import stats

SEEDS = (3, 5, 10, 20)
TEST_IMAGES = 270  # the digits' test split


def _normal(rng, n):
    return rng.normal(0.0, 1.0, n), 0.0


def _heavy(rng, n):
    return rng.standard_t(3, n), 0.0  # Student-t, 3 degrees of freedom: finite variance


def _skewed(rng, n):
    # lognormal(0, 1) has mean exp(1/2): a long right tail
    return rng.lognormal(0.0, 1.0, n), float(np.exp(0.5))


def _accuracy(rng, n):
    """Two runs' test accuracies on 270 images, paired by seed: a seed effect both share,
    each run's own effect, then 270 Bernoulli draws each. The true accuracies (97 % and
    96.5 %) sit far enough from 1 that nothing is clipped, so E[a - b] is 0.005 exactly."""
    seed_effect = rng.normal(0.0, 0.005, n)
    first = np.clip(0.970 + seed_effect + rng.normal(0.0, 0.004, n), 0, 1)
    second = np.clip(0.965 + seed_effect + rng.normal(0.0, 0.004, n), 0, 1)
    a = rng.binomial(TEST_IMAGES, first) / TEST_IMAGES
    b = rng.binomial(TEST_IMAGES, second) / TEST_IMAGES
    return a - b, 0.005


DISTRIBUTIONS = {
    "normal": _normal,
    "Student-t(3)": _heavy,
    "test accuracy, 270 images": _accuracy,
    "lognormal (skewed)": _skewed,
}


def percentile_bootstrap(differences, confidence: float = stats.CONFIDENCE) -> stats.Interval:
    """The interval `paired_difference` gave before issue 27 (pairs (d, 0) resample as d)."""
    d = np.asarray(differences, np.float64)
    mean = float(d.mean())
    if np.all(d == d[0]):
        return stats.Interval(mean, mean, mean)
    ci = scipy_stats.bootstrap(
        (d,),
        np.mean,
        vectorized=True,
        confidence_level=confidence,
        n_resamples=1_999,
        method="percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval
    return stats.Interval(mean, float(ci.low), float(ci.high))


def student_t(differences, confidence: float = stats.CONFIDENCE) -> stats.Interval:
    return stats.mean_interval(differences, confidence=confidence)


def _sign_flip_keeps(differences, truth: float, rng) -> bool:
    """Whether the exact (or, past 2^12 patterns, sampled) sign-flip test keeps `truth`."""
    result = scipy_stats.permutation_test(
        (np.asarray(differences) - truth,),
        lambda x, axis: np.mean(x, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=4_096,
        rng=rng,
    )
    return bool(result.pvalue >= 1 - stats.CONFIDENCE)


def coverage_table(trials: int) -> list[str]:
    rng = np.random.default_rng(2026)
    rows = [
        "| differences | seeds | Student-t (ours) | percentile bootstrap (before) "
        "| sign-flip test keeps the truth |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, draw in DISTRIBUTIONS.items():
        for n in SEEDS:
            held = {"t": 0, "boot": 0, "flip": 0}
            flips = min(trials, 500)  # the permutation test is the slow one
            for trial in range(trials):
                d, truth = draw(rng, n)
                held["t"] += student_t(d).straddles(truth)
                held["boot"] += percentile_bootstrap(d).straddles(truth)
                if trial < flips:
                    held["flip"] += _sign_flip_keeps(d, truth, rng)
            rows.append(
                f"| {name} | {n} | {100 * held['t'] / trials:.1f} % "
                f"| {100 * held['boot'] / trials:.1f} % | {100 * held['flip'] / flips:.1f} % |"
            )
    return rows


def _until_decided_old(draw, truth, margin, start, max_seeds, rng) -> str:
    """The rule before issue 27: a 95 % bootstrap at every look, looks sized by the data."""
    d = list(draw(rng, start, truth))
    while True:
        interval = percentile_bootstrap(d)
        if interval.low >= -margin:
            return "recommended"
        if interval.high < -margin:
            return "acceptable"
        if len(d) >= max_seeds:
            return "inconclusive"
        wanted = stats.seeds_to_decide(d, -margin, len(d)) or 0
        target = min(max_seeds, max(len(d) + 1, wanted))
        d += list(draw(rng, target - len(d), truth))


def _until_decided_new(draw, truth, margin, start, max_seeds, rng) -> str:
    """compare's rule now: planned doubling looks, each at `look_confidence`."""
    looks = stats.planned_looks(start, max_seeds)
    confidence = stats.look_confidence(looks)
    d: list[float] = []
    for look in looks:
        d += list(draw(rng, look - len(d), truth))
        decision = stats.decide(d, [0.0] * len(d), margin, confidence=confidence)
        if decision.outcome == "within":
            return "recommended"
        if decision.outcome == "beyond":
            return "acceptable"
    return "inconclusive"


def _normal_shifted(rng, n, truth, spread=0.01):
    return rng.normal(truth, spread, n)


def _accuracy_shifted(rng, n, truth):
    """Test-accuracy-like differences (as in table 1) with their mean moved to `truth`."""
    d, mean = _accuracy(rng, n)
    return d - mean + truth


def until_decided_table(trials: int, margin: float = 0.01) -> list[str]:
    rng = np.random.default_rng(2027)
    rows = [
        "| differences | seeds: start, max | true difference | wrong end | before: share "
        "| now: share | now: inconclusive |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    cases = {
        "normal, std = margin": _normal_shifted,
        "test accuracy, 270 images": _accuracy_shifted,
    }
    for name, draw in cases.items():
        for start, max_seeds in ((3, 10), (5, 10), (5, 20)):
            for truth, wrong in ((-margin, "recommended"), (0.0, "acceptable")):
                old = new = undecided = 0
                for _ in range(trials):
                    old += _until_decided_old(draw, truth, margin, start, max_seeds, rng) == wrong
                    end = _until_decided_new(draw, truth, margin, start, max_seeds, rng)
                    new += end == wrong
                    undecided += end == "inconclusive"
                rows.append(
                    f"| {name} | {start}, {max_seeds} | {100 * truth:+g} points | `{wrong}` "
                    f"| {100 * old / trials:.1f} % | {100 * new / trials:.1f} % "
                    f"| {100 * undecided / trials:.1f} % |"
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2000, help="trials a cell (%(default)s)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(f"Coverage of 95 % intervals, {args.trials} trials a cell (sign flips: up to 500)\n")
    print("\n".join(coverage_table(args.trials)))
    print(f"\nAdding seeds until decided, margin 1 point, {args.trials} trials a row\n")
    print("\n".join(until_decided_table(args.trials)))
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
