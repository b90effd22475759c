"""The verdict: each rule on hand-made numbers, including the runs that blew up without a NaN."""

from __future__ import annotations

import math

import pytest

from gradguard.verdict import VerdictRules, run_verdict

TEN_CLASSES = [0.1] * 10  # chance 0.1: collapsed below 0.1 + 0.1 * 0.9 = 0.19
RULES = VerdictRules()


def verdict(diverged=False, growth=1.2, accuracy=0.98, shares=TEN_CLASSES):
    return run_verdict(
        diverged=diverged,
        weight_growth=growth,
        accuracy=accuracy,
        class_shares=shares,
        rules=RULES,
    )


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        # A healthy run: the default digits run grows its weights 1.2x, accuracy 98.9 %.
        ({}, "healthy"),
        # Non-finite wins over everything else.
        ({"diverged": True, "growth": 1e9, "accuracy": 0.1}, "diverged"),
        # The late scenario without clipping, seed 7: finite, weights 1.1e9 from 19 at
        # init (5.9e7x), test accuracy 10 %: it blew up without a NaN.
        ({"growth": 5.9e7, "accuracy": 0.1}, "exploded"),
        # Exploded even when the checkpoint kept from before the blow-up scores well.
        ({"growth": 150.0, "accuracy": 0.95}, "exploded"),
        ({"growth": 99.9, "accuracy": 0.95}, "healthy"),  # just under the factor
        ({"growth": math.inf}, "exploded"),
        # A dead network: finite, weights barely moved, stuck at chance.
        ({"growth": 1.0, "accuracy": 0.10}, "collapsed"),
        ({"growth": 1.0, "accuracy": 0.1889}, "collapsed"),  # just under 0.19
        ({"growth": 1.0, "accuracy": 0.1900001}, "healthy"),
        ({"accuracy": math.nan}, "collapsed"),
    ],
)
def test_each_rule(case, expected):
    assert verdict(**case) == expected


def test_chance_is_the_largest_class_share():
    # 70 % of one class: predicting it always is chance; 0.7 + 0.1 * 0.3 = 0.73 is the bar.
    shares = [0.7, 0.2, 0.1]
    assert verdict(accuracy=0.72, shares=shares) == "collapsed"
    assert verdict(accuracy=0.74, shares=shares) == "healthy"


def test_a_run_at_chance_that_never_learned_is_unlearned_not_collapsed():
    from gradguard.verdict import VerdictRules, run_verdict

    # 4 balanced classes: chance 0.25, the loss at chance ln 4 = 1.386; learned below 0.693.
    common = {"weight_growth": 1.5, "class_shares": [0.25] * 4, "rules": VerdictRules()}
    at_chance = {**common, "diverged": False, "accuracy": 0.3}
    assert run_verdict(**at_chance, lowest_loss=0.70) == "unlearned"
    assert run_verdict(**at_chance, lowest_loss=0.69) == "collapsed"
    assert run_verdict(**at_chance) == "collapsed"  # the lowest loss unknown
    assert run_verdict(**{**at_chance, "accuracy": 0.9}, lowest_loss=1.2) == "healthy"
    assert run_verdict(**{**at_chance, "diverged": True}, lowest_loss=1.3) == "diverged"
