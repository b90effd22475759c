"""Statistics over paired seeds, for comparing remedies and for the seeded metrics gate.

Every interval comes from scipy: the exact (Clopper-Pearson) interval on a share
of failed runs, and a paired percentile bootstrap of a mean difference with a
fixed random generator, so the same runs give the same report. The interquartile
mean and the probability of improvement follow rliable (Agarwal et al. 2021,
"Deep Reinforcement Learning at the Edge of the Statistical Precipice").
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 9_999
BOOTSTRAP_SEED = 0  # fixed: rebuilding a report from the same runs gives the same bytes


@dataclasses.dataclass(frozen=True)
class Interval:
    """An estimate with its interval."""

    estimate: float
    low: float
    high: float

    def straddles(self, value: float) -> bool:
        """Whether `value` lies inside the interval (bounds included)."""
        return self.low <= value <= self.high


def failure_share(failures: int, runs: int, confidence: float = CONFIDENCE) -> Interval:
    """The share of runs that failed, with its exact (Clopper-Pearson) interval.

    Args:
        failures: runs that were not healthy.
        runs: runs in all (>= 1).
        confidence: the interval's confidence level.

    Raises:
        ValueError: `runs` < 1 or `failures` outside 0..runs.
    """
    from scipy.stats import binomtest

    if runs < 1 or not 0 <= failures <= runs:
        raise ValueError(
            f"failures={failures}, runs={runs}; expected 0 <= failures <= runs, runs >= 1"
        )
    ci = binomtest(failures, runs).proportion_ci(confidence_level=confidence, method="exact")
    return Interval(failures / runs, float(ci.low), float(ci.high))


def iqm(values: Sequence[float]) -> float:
    """The interquartile mean: the mean of the middle half (scipy's 25 % trimmed mean)."""
    from scipy.stats import trim_mean

    return float(trim_mean(np.asarray(values, np.float64), 0.25))


def paired_difference(
    first: Sequence[float],
    second: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Interval:
    """The mean of `first - second` over paired seeds, with a paired bootstrap interval.

    The pairs are resampled together (scipy.stats.bootstrap, `paired=True`,
    percentile method, a generator seeded with `seed`). When every difference
    is the same, the interval is that value: no resampling can move it.

    Raises:
        ValueError: the sequences differ in length or hold fewer than 2 pairs.
    """
    from scipy.stats import bootstrap

    a, b = np.asarray(first, np.float64), np.asarray(second, np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"paired values of lengths {len(a)} and {len(b)}; expected equal, >= 2")
    differences = a - b
    mean = float(differences.mean())
    if np.all(differences == differences[0]):
        return Interval(mean, mean, mean)
    result = bootstrap(
        (a, b),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        paired=True,
        vectorized=True,
        confidence_level=confidence,
        n_resamples=resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return Interval(mean, float(ci.low), float(ci.high))


def mean_interval(values: Sequence[float], **bootstrap_options) -> Interval:
    """The mean of `values` with `paired_difference`'s interval against zeros.

    Resampling the pairs (v, 0) resamples the values: the percentile bootstrap of the
    mean, with the same fixed generator. Options as `paired_difference`'s.

    Raises:
        ValueError: fewer than 2 values.
    """
    return paired_difference(values, [0.0] * len(values), **bootstrap_options)


def probability_of_improvement(first: Sequence[float], second: Sequence[float]) -> float:
    """P(X > Y) for X drawn from `first` and Y from `second`, ties counted half (rliable's)."""
    a, b = np.asarray(first, np.float64), np.asarray(second, np.float64)
    greater = (a[:, None] > b[None, :]).mean()
    ties = (a[:, None] == b[None, :]).mean()
    return float(greater + 0.5 * ties)


def seeds_to_decide(differences: Sequence[float], margin: float, seeds_now: int) -> int | None:
    """Roughly how many paired seeds would put the interval clear of `margin`.

    The interval's half-width shrinks as 1/sqrt(n): with half-width h now and the
    mean d at |d - margin| from the margin, about n * (h / |d - margin|)^2 seeds.
    None when the mean sits on the margin (no number of seeds decides it).
    """
    values = np.asarray(differences, np.float64)
    distance = abs(float(values.mean()) - margin)
    if distance <= 1e-12 or len(values) < 2:  # on the margin, to rounding
        return None
    spread = float(values.std(ddof=1))
    # The t-based half-width of the mean at 95 %, an estimate of the bootstrap's.
    from scipy.stats import t

    half_width = t.ppf(0.975, len(values) - 1) * spread / math.sqrt(len(values))
    return max(seeds_now + 1, math.ceil(seeds_now * (half_width / distance) ** 2))


@dataclasses.dataclass(frozen=True)
class Decision:
    """Where a paired difference's interval lies against a tolerance.

    `within`: the whole interval is at or above -tolerance (no credible loss beyond it);
    `beyond`: the whole interval is below -tolerance (a credible loss beyond it);
    `straddles`: it holds -tolerance strictly inside, so more seeds are needed
    (`seeds_to_decide`, None when the mean sits on the bound).
    """

    outcome: str  # within | beyond | straddles
    interval: Interval
    seeds: int
    seeds_to_decide: int | None = None


def decide(first: Sequence[float], second: Sequence[float], tolerance: float) -> Decision:
    """Is `first` credibly worse than `second` by more than `tolerance` (higher is better)?

    The compare report's labels and the seeded gate's verdicts both come from here:
    the mean of `first - second` over paired seeds with `paired_difference`'s interval.

    Raises:
        ValueError: as `paired_difference`.
    """
    interval = paired_difference(first, second)
    n = len(first)
    if interval.low >= -tolerance:
        return Decision("within", interval, n)
    if interval.high < -tolerance:
        return Decision("beyond", interval, n)
    differences = np.asarray(first, np.float64) - np.asarray(second, np.float64)
    return Decision("straddles", interval, n, seeds_to_decide(differences, -tolerance, n))
