"""gradguard.evaluation.report: the experiment's summary, verdict and `solved` by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradguard.evaluation.report import SUMMARY_KEYS, _metrics
from gradguard.params import parse_params

Y = np.repeat(np.arange(4), 50)  # 200 test examples, 4 balanced classes: chance 0.25


def summary(**changed):
    base = {"diverged": False, "weight_growth": 1.5, "first_nonfinite_step": None}
    return base | {key: 0 for key in SUMMARY_KEYS} | changed


def metrics(accuracy, lowest_loss=0.1, **changed):
    scores = {"accuracy": accuracy, "f1_macro": accuracy}
    return _metrics(summary(**changed), scores, Y, 0.3, parse_params({}), lowest_loss)


@pytest.mark.parametrize(
    "accuracy, errors, solved",
    [(1.0, 0, True), (0.995, 1, True), (0.99, 2, False), (0.5, 100, False)],
)
def test_solved_is_fewer_than_one_percent_of_the_test_set_misclassified(accuracy, errors, solved):
    found = metrics(accuracy)
    assert (found["test_errors"], found["solved"], found["test_images"]) == (errors, solved, 200)


def test_the_verdict_follows_the_rules_in_order():
    assert metrics(0.9)["verdict"] == "healthy"
    # Chance 0.25; collapse_margin 0.1 of the gap to 1 puts the line at 0.325.
    assert metrics(0.33)["verdict"] == "healthy" and metrics(0.32)["verdict"] == "collapsed"
    # A model that never got below collapse_learned (0.5) x ln 4 never learned.
    assert metrics(0.25, lowest_loss=0.5 * math.log(4))["verdict"] == "unlearned"
    assert metrics(0.25, lowest_loss=0.5 * math.log(4) - 1e-6)["verdict"] == "collapsed"
    assert metrics(0.9, weight_growth=100.0)["verdict"] == "exploded"  # explode_factor 100
    assert metrics(0.9, weight_growth=None)["verdict"] == "exploded"  # non-finite weights
    assert metrics(0.9, diverged=True, weight_growth=None)["verdict"] == "diverged"


def test_the_summary_leads_with_what_is_compared_and_carries_trains_keys():
    found = metrics(0.9, max_grad_norm=12.5, spikes=3)
    assert list(found)[:5] == ["accuracy", "verdict", "healthy", "solved", "test_errors"]
    assert (found["max_grad_norm"], found["spikes"], found["healthy"]) == (12.5, 3, True)
    assert found["baseline_accuracy"] == 0.3
