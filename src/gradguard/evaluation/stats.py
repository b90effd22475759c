"""Statistics over paired seeds, for comparing remedies and for the seeded metrics gate.

Every interval comes from scipy: the exact (Clopper-Pearson) interval on a share
of failed runs, and the Student-t interval of a mean paired difference. The t
interval was chosen by measurement (`benchmarks/coverage.py`, docs/compare.md):
it holds 94-96 % coverage at 3, 5 and 10 seeds for normal, heavy-tailed and
test-accuracy-like differences, where the percentile bootstrap used before held
71-85 % at 3-5 seeds. The interquartile mean and the probability of improvement
follow rliable (Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of
the Statistical Precipice").

Adding seeds until an interval decides is a sequence of looks at the data; a
procedure that stops at the first decisive look keeps its error rate only if each
look is widened. `planned_looks` fixes the look sizes in advance (doubling up to a
maximum) and `look_confidence` spends the error rate evenly over them (Bonferroni):
whatever the data, the chance that any look's interval misses the true mean is at
most 1 - confidence.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
    """An estimate with its interval."""

    estimate: float
    low: float
    high: float

    def straddles(self, value: float) -> bool:
        """Whether `value` lies inside the interval (bounds included)."""
        return self.low <= value <= self.high


def share_interval(count: int, runs: int, confidence: float = CONFIDENCE) -> Interval:
    """The share of runs with some outcome (not healthy; solved), with its exact
    (Clopper-Pearson) interval.

    Args:
        count: runs with the outcome.
        runs: runs in all (>= 1).
        confidence: the interval's confidence level.

    Raises:
        ValueError: `runs` < 1 or `count` outside 0..runs.
    """
    from scipy.stats import binomtest

    if runs < 1 or not 0 <= count <= runs:
        raise ValueError(f"count={count}, runs={runs}; expected 0 <= count <= runs, runs >= 1")
    ci = binomtest(count, runs).proportion_ci(confidence_level=confidence, method="exact")
    return Interval(count / runs, float(ci.low), float(ci.high))


def iqm(values: Sequence[float]) -> float:
    """The interquartile mean: the mean of the middle half (scipy's 25 % trimmed mean)."""
    from scipy.stats import trim_mean

    return float(trim_mean(np.asarray(values, np.float64), 0.25))


def paired_difference(
    first: Sequence[float], second: Sequence[float], *, confidence: float = CONFIDENCE
) -> Interval:
    """The mean of `first - second` over paired seeds, with its Student-t interval.

    mean(d) -+ t(1 - (1 - confidence) / 2, n - 1) * std(d, ddof=1) / sqrt(n) over the n
    paired differences d (the quantile from scipy.stats.t). It assumes
    the differences are roughly normal across seeds; measured coverage of its 95 %
    interval (benchmarks/coverage.py): 94-96 % for normal, Student-t(3) and
    test-accuracy-like differences at 3, 5, 10 and 20 seeds. For skewed differences
    (a lognormal) it falls below nominal: 83-87 % at 3-20 seeds, a long tail one way
    being what few seeds cannot see. When every difference is the same, the interval
    is that value (zero width).

    Args:
        first, second: one value per seed, in the same seed order.
        confidence: the interval's confidence level.

    Returns:
        The mean difference and its interval.

    Raises:
        ValueError: the sequences differ in length or hold fewer than 2 pairs.

    References:
        Student (1908), "The probable error of a mean"; the paired t interval.
    """
    a, b = np.asarray(first, np.float64), np.asarray(second, np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"paired values of lengths {len(a)} and {len(b)}; expected equal, >= 2")
    differences = a - b
    mean = float(differences.mean())
    if np.all(differences == differences[0]):
        return Interval(mean, mean, mean)  # no spread, no width
    half_width = _half_width(differences, confidence)
    return Interval(mean, mean - half_width, mean + half_width)


def _half_width(differences: np.ndarray, confidence: float) -> float:
    """t(1 - (1 - confidence) / 2, n - 1) * std(d, ddof=1) / sqrt(n): the t interval's."""
    from scipy.stats import t

    quantile = float(t.ppf(1 - (1 - confidence) / 2, len(differences) - 1))
    return quantile * float(differences.std(ddof=1)) / math.sqrt(len(differences))


def mean_interval(values: Sequence[float], *, confidence: float = CONFIDENCE) -> Interval:
    """The mean of `values` with its Student-t interval (`paired_difference` against zeros).

    Raises:
        ValueError: fewer than 2 values.
    """
    return paired_difference(values, [0.0] * len(values), confidence=confidence)


def probability_of_improvement(first: Sequence[float], second: Sequence[float]) -> float:
    """P(X > Y) for X drawn from `first` and Y from `second`, ties counted half (rliable's)."""
    a, b = np.asarray(first, np.float64), np.asarray(second, np.float64)
    greater = (a[:, None] > b[None, :]).mean()
    ties = (a[:, None] == b[None, :]).mean()
    return float(greater + 0.5 * ties)


def seeds_to_decide(
    differences: Sequence[float],
    margin: float,
    seeds_now: int,
    *,
    confidence: float = CONFIDENCE,
) -> int | None:
    """Roughly how many paired seeds would put the interval clear of `margin`.

    The interval's half-width shrinks as 1/sqrt(n): with half-width h now and the
    mean d at |d - margin| from the margin, about n * (h / |d - margin|)^2 seeds
    (an overestimate by the t quantile's fall with n). None when the mean sits on
    the margin (no number of seeds decides it).
    """
    values = np.asarray(differences, np.float64)
    distance = abs(float(values.mean()) - margin)
    if distance <= 1e-12 or len(values) < 2:  # on the margin, to rounding
        return None
    half_width = _half_width(values, confidence)  # paired_difference's, now
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


def decide(
    first: Sequence[float],
    second: Sequence[float],
    tolerance: float,
    *,
    confidence: float = CONFIDENCE,
) -> Decision:
    """Is `first` credibly worse than `second` by more than `tolerance` (higher is better)?

    The compare report's labels and the seeded gate's verdicts both come from here:
    the mean of `first - second` over paired seeds with `paired_difference`'s interval
    at `confidence` (`look_confidence` when seeds are added until it decides).

    Raises:
        ValueError: as `paired_difference`.
    """
    interval = paired_difference(first, second, confidence=confidence)
    n = len(first)
    if interval.low >= -tolerance:
        return Decision("within", interval, n)
    if interval.high < -tolerance:
        return Decision("beyond", interval, n)
    differences = np.asarray(first, np.float64) - np.asarray(second, np.float64)
    more = seeds_to_decide(differences, -tolerance, n, confidence=confidence)
    return Decision("straddles", interval, n, more)


def planned_looks(start: int, max_seeds: int) -> tuple[int, ...]:
    """The seed counts at which a procedure that adds seeds until decided may look.

    Fixed before any run: `start`, then doubling, then `max_seeds` itself (5 and 20:
    5, 10, 20; 3 and 10: 3, 6, 10). Doubling keeps the looks few (their count grows
    as log2(max / start)), so each is widened little by `look_confidence`.

    Raises:
        ValueError: `start` < 2.
    """
    if start < 2:
        raise ValueError(f"start={start}; expected at least 2 seeds at the first look")
    looks = [start]
    while looks[-1] < max_seeds:
        looks.append(min(2 * looks[-1], max_seeds))
    return tuple(looks)


def look_confidence(looks: Sequence[int], confidence: float = CONFIDENCE) -> float:
    """Each look's confidence so that all `looks` together err with at most 1 - confidence.

    Bonferroni: the chance that some look's interval misses the true mean is at most the
    sum of each look's, (1 - confidence) / len(looks) each. This holds whatever the
    looks' dependence and whichever look the procedure stops at, provided the look
    sizes were fixed in advance (`planned_looks`). The whole procedure's error rate,
    measured by simulation, is in docs/compare.md (`benchmarks/coverage.py`).
    """
    return 1 - (1 - confidence) / len(looks)
