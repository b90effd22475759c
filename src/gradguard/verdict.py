"""The verdict on a finished run: healthy, diverged, exploded, collapsed or unlearned.

`diverged` alone (a non-finite update, or skips that ran out) misses the runs
that blow up and die without a NaN: a gradient step of norm 1e9 applied once
leaves finite weights a billion times too large and a network at chance. The
verdict adds two rules for those, each with its threshold as a parameter. A model
at chance that never learned (vanishing rather than exploding gradients, or too
short a run) is `unlearned`, told apart from one that learned and `collapsed`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

VERDICTS = ("healthy", "diverged", "exploded", "collapsed", "unlearned")


@dataclasses.dataclass(frozen=True)
class VerdictRules:
    """Thresholds of `run_verdict`.

    Attributes:
        explode_factor: a run whose global weight norm, at some epoch's end,
            reached this many times its value at initialisation has exploded.
            Healthy runs of this project's CNNs stay below 2x (clipped or not)
            and an exploded one reaches 1e7x, so 100 leaves room on both sides;
            raise it when starting from a deliberately tiny `init_scale`.
        collapse_margin: a model whose test accuracy closes less than this share
            of the gap between chance (the largest class's share) and 1 has
            collapsed: 0.1 on 10 balanced classes means below 19 %.
        collapse_learned: a run whose training loss never fell below this many
            times ln K (K classes, the loss at chance) never learned; at chance, it
            is `unlearned`, not `collapsed` (`train.collapse_learned`).
    """

    explode_factor: float = 100.0
    collapse_margin: float = 0.1
    collapse_learned: float = 0.5


def run_verdict(
    *,
    diverged: bool,
    weight_growth: float,
    accuracy: float,
    class_shares: Sequence[float],
    rules: VerdictRules,
    lowest_loss: float | None = None,
) -> str:
    """The verdict: the first of diverged, exploded, collapsed (or unlearned) that holds,
    else healthy.

    Args:
        diverged: the run went non-finite (or skipped updates until it stopped).
        weight_growth: see `gradguard.training.fit.weight_growth`.
        accuracy: test accuracy of the kept model.
        class_shares: each class's share of the test set (chance is the largest).
        rules: the thresholds.
        lowest_loss: the lowest training loss the run reached (None: unknown, and a
            model at chance is `collapsed`).

    Returns:
        One of `VERDICTS`.
    """
    if diverged:
        return "diverged"
    if not weight_growth < rules.explode_factor:  # NaN or inf too
        return "exploded"
    chance = max(class_shares)
    if accuracy >= chance + rules.collapse_margin * (1.0 - chance):
        return "healthy"
    learned_below = rules.collapse_learned * math.log(len(class_shares))
    if lowest_loss is not None and not lowest_loss < learned_below:
        return "unlearned"
    return "collapsed"
