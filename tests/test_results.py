"""gradguard.experiments.results: a run's metric and verdict, read from its files."""

from __future__ import annotations

import pytest

from gradguard.experiments.plan import parse_plan
from gradguard.experiments.results import outcome
from tests.compare_helpers import FOREIGN


@pytest.mark.parametrize(
    ("files", "metric", "verdict"),
    [
        ({"results/scores.json": {"val": {"loss": 0.25}}}, 0.25, "healthy"),
        ({"results/scores.json": {"val": {"loss": float("nan")}}}, None, "diverged"),
        ({"results/scores.json": {"val": {}}}, None, "diverged"),
        ({}, None, "diverged"),  # the stages succeeded but wrote no metric
    ],
)
def test_without_a_verdict_key_a_finite_metric_is_healthy(files, metric, verdict):
    result = outcome(parse_plan(FOREIGN), files)
    assert (result["metric"], result["verdict"]) == (metric, verdict)


def test_a_verdict_key_is_read_and_a_missing_metric_is_never_healthy():
    plan = parse_plan({**FOREIGN, "verdict": "results/run.json:state"})
    assert plan.files == ("results/scores.json", "results/run.json")
    files = {
        "results/scores.json": {"val": {"loss": 0.5}},
        "results/run.json": {"state": "exploded"},
    }
    assert outcome(plan, files)["verdict"] == "exploded"
    files["results/run.json"]["state"] = "healthy"
    del files["results/scores.json"]["val"]["loss"]
    assert outcome(plan, files)["verdict"] == "diverged"
