"""gradguard.experiments.summary: the labels on constructed runs."""

from __future__ import annotations

import pytest

from gradguard.experiments.plan import Cell, choose, parse_plan
from gradguard.experiments.report import markdown, plot_compare
from gradguard.experiments.results import RunResult, outcome
from gradguard.experiments.summary import summarize
from tests.compare_helpers import FOREIGN, runs_of, small_plan


def test_each_label_rule_on_a_constructed_case(plan):
    chosen = small_plan(plan, ["none", "global_norm", "norm", "agc", "autoclip"])
    ok = "healthy"
    table = {
        "none": [(0.90, ok), (0.80, ok), (0.85, ok), (0.95, ok)],
        # the best: the highest mean, all healthy
        "global_norm": [(0.96, ok), (0.94, ok), (0.95, ok), (0.97, ok)],
        # the same as the best on every seed: the interval is [0, 0], within any margin
        "norm": [(0.96, ok), (0.94, ok), (0.95, ok), (0.97, ok)],
        # exactly 5 points worse on every seed: the interval is [-0.05, -0.05] < -0.01
        "agc": [(0.91, ok), (0.89, ok), (0.90, ok), (0.92, ok)],
        # one run collapsed: unsafe, however good the rest
        "autoclip": [(0.99, ok), (0.10, "collapsed"), (0.99, ok), (0.99, ok)],
    }
    report = summarize(chosen, runs_of(chosen, table), "params.yaml")
    by = {s["name"]: s for s in report["remedies"]}
    assert report["best"] == "global_norm"
    assert by["global_norm"]["label"] == "recommended"
    assert by["norm"]["label"] == "recommended"
    assert by["norm"]["vs_best"] == {"estimate": 0.0, "low": 0.0, "high": 0.0, "seeds": 4}
    assert by["agc"]["label"] == "acceptable"
    assert by["agc"]["vs_best"]["low"] == by["agc"]["vs_best"]["high"] == pytest.approx(-0.05)
    assert by["autoclip"]["label"] == "unsafe"
    assert by["autoclip"]["verdicts"] == {
        "healthy": 3,
        "diverged": 0,
        "exploded": 0,
        "collapsed": 1,
        "unlearned": 0,
    }
    # Clopper-Pearson, 1 failure in 4: low solves 1 - (1-p)^4 = 0.025, so 1 - 0.975^(1/4);
    # high solves (1-p)^4 + 4p(1-p)^3 = 0.025 (root found by hand with bisection: 0.8058796)
    share = by["autoclip"]["not_healthy"]
    assert share["estimate"] == 0.25
    assert share["low"] == pytest.approx(1 - 0.975**0.25, abs=1e-6)
    assert share["high"] == pytest.approx(0.8058796, abs=1e-6)
    # 0 of 4: the exact upper bound is 1 - 0.025^(1/4)
    assert by["none"]["not_healthy"]["high"] == pytest.approx(1 - 0.025**0.25, abs=1e-6)
    # against none: global_norm is +0.08 on average, better on every seed (+0.06, +0.14,
    # +0.10, +0.02), yet 4 seeds do not show it at 95 %: std 0.05164, standard error 0.02582,
    # t(0.975, 3) = 3.182446, so the interval is 0.08 -+ 0.082170
    versus = by["global_norm"]["vs_none"]
    assert versus["estimate"] == pytest.approx(0.08)
    assert (versus["low"], versus["high"]) == pytest.approx((-0.00217, 0.16217), abs=2e-6)
    # over all runs the collapsed run counts; over the healthy ones it does not
    assert by["autoclip"]["accuracy"]["all"]["mean"] == pytest.approx((0.99 * 3 + 0.10) / 4)
    assert by["autoclip"]["accuracy"]["healthy"]["mean"] == pytest.approx(0.99)


def test_an_interval_that_straddles_the_margin_is_inconclusive_with_seeds_to_decide(plan):
    chosen = small_plan(plan, ["global_norm", "zscore"])
    ok = "healthy"
    table = {
        "global_norm": [(0.95, ok), (0.95, ok), (0.95, ok), (0.95, ok)],
        # differences -0.03, +0.01, -0.02, 0.00: mean -0.01 sits on the margin itself
        "zscore": [(0.92, ok), (0.96, ok), (0.93, ok), (0.95, ok)],
    }
    report = summarize(chosen, runs_of(chosen, table), "params.yaml")
    zscore = report["remedies"][1]
    assert zscore["label"] == "inconclusive"
    assert zscore["vs_best"]["estimate"] == pytest.approx(-0.01)
    assert zscore["vs_best"]["low"] < -0.01 <= zscore["vs_best"]["high"]
    assert zscore["vs_best"]["seeds_to_decide"] is None  # on the margin: no number decides it
    table["zscore"] = [(0.92, ok), (0.97, ok), (0.93, ok), (0.95, ok)]  # mean -0.0075
    zscore = summarize(chosen, runs_of(chosen, table), "params.yaml")["remedies"][1]
    assert zscore["label"] == "inconclusive" and zscore["vs_best"]["seeds_to_decide"] > 4


def test_lower_is_better_picks_the_lowest_and_signs_differences_so_more_is_better(tmp_path):
    # Losses per seed: plain 0.30, 0.32, 0.31; clipped 0.20, 0.21, 0.22 (0.10 lower each).
    plan = choose(parse_plan({**FOREIGN, "margin": 0.01}), seeds=[1, 2, 3])
    losses = {"plain": [0.30, 0.32, 0.31], "clipped": [0.20, 0.22, 0.21]}
    results = [
        RunResult(Cell(name, seed), outcome(plan, {"results/scores.json": {"val": {"loss": v}}}))
        for name, values in losses.items()
        for seed, v in zip(plan.seeds, values, strict=True)
    ]
    report = summarize(plan, results, "params.yaml")
    assert report["best"] == "clipped" and report["metric"] == FOREIGN["metric"]
    plain = report["remedies"][0]
    assert plain["vs_best"]["estimate"] == pytest.approx(-0.10)  # 0.10 worse, signed
    assert plain["label"] == "acceptable"  # credibly more than 0.01 worse
    assert "accuracy" not in plain and "accuracy" not in plain["runs"][0]
    assert plain["runs"][0]["metric"] == pytest.approx(0.30)
    report["gradient_plot"] = False
    text = markdown(report)
    assert "`results/scores.json:val.loss` (lower is better" in text
    assert "0.3 H" in text and "%" not in text.split("## Runs")[1].split("\n")[0]
    assert "No gradient-norm plot" in text and "compare_grad_norms.png" not in text
    assert {p.name for p in plot_compare(report, {}, tmp_path, only=("accuracy",))} == {
        "compare_accuracy.png"
    }


def test_the_share_solved_comes_with_its_exact_interval_beside_accuracy(plan):
    chosen = small_plan(plan, ["none", "global_norm"])
    flags = {"none": [True, True, True, False], "global_norm": [True] * 4}
    runs = [
        RunResult(Cell(name, seed), {"accuracy": 0.99, "verdict": "healthy", "solved": flag})
        for name, row in flags.items()
        for seed, flag in zip(chosen.seeds, row, strict=True)
    ]
    report = summarize(chosen, runs, "params.yaml")
    by = {s["name"]: s["solved"] for s in report["remedies"]}
    # Clopper-Pearson by hand: 4 of 4 -> [0.025 ** (1/4), 1]; 3 of 4 -> high 0.975 ** (1/4).
    assert by["global_norm"]["low"] == pytest.approx(0.025**0.25, abs=1e-4)
    assert (by["none"]["solved"], by["none"]["runs"]) == (3, 4)
    assert by["none"]["estimate"] == 0.75
    assert by["none"]["high"] == pytest.approx(0.975**0.25, abs=1e-4)
    text = markdown(report)
    assert "solved, 95 % CI" in text and "3/4 [19, 99] %" in text and "4/4 [40, 100] %" in text
    without = summarize(chosen, runs_of(chosen, {n: [(0.9, "healthy")] * 4 for n in flags}), "p")
    assert all(s["solved"] is None for s in without["remedies"])
    assert "solved, 95 % CI" not in markdown(without)
