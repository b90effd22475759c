"""gradguard.experiments.sweep: a compare per value, and success against the value."""

from __future__ import annotations

import pytest

from gradguard.errors import ParamsError
from gradguard.experiments.plan import Cell, choose
from gradguard.experiments.sweep import (
    nudge,
    parse_sweep,
    success,
    sweep_markdown,
    sweep_plans,
    sweep_report,
    write_sweep,
    x_scale,
)


def test_values_are_read_as_dvc_reads_them_and_bad_sweeps_are_one_line():
    assert parse_sweep("data.length=20,40,60") == ("data.length", [20, 40, 60])
    assert parse_sweep("model.rnn=lstm,gru") == ("model.rnn", ["lstm", "gru"])
    assert parse_sweep("train.learning_rate=0.01,0.001") == ("train.learning_rate", [0.01, 0.001])
    for bad in ("data.length=20", "data.length=20,20", "=1,2", "data.length"):
        with pytest.raises(ParamsError, match="--sweep"):
            parse_sweep(bad)


def test_each_value_is_a_derived_preset_whose_runs_are_named_by_it(plan):
    chosen = choose(plan, base="temporal-order", remedies=["none"], seeds=[1, 2])
    plans = sweep_plans(chosen, "data.length", [20, 40])
    assert [value for value, _ in plans] == [20, 40]
    first = plans[0][1]
    assert first.base == "temporal-order-length20"
    (cell, _) = first.cells()
    assert cell == Cell("none", 1, None, "temporal-order-length20")
    assert cell.experiment == "cmp-temporal-order-length20-none-s1"
    overrides = first.overrides(cell)
    assert overrides["data.length"] == 20 and overrides["model.rnn"] == "simple"
    assert plans[1][1].overrides(plans[1][1].cells()[0])["data.length"] == 40
    bare = sweep_plans(choose(plan, remedies=["none"], seeds=[1, 2]), "seed", [3, 4])
    assert bare[0][1].base == "seed3"


def _report(solved=None, failed=(0, 5)):
    share = {"estimate": failed[0] / failed[1], "low": 0.0, "high": 0.52}
    remedy = {"name": "none", "not_healthy": share, "solved": solved, "headroom": None}
    return {"remedies": [remedy]}


def test_success_is_the_share_solved_else_the_share_healthy(tmp_path):
    solved = {"solved": 2, "runs": 5, "estimate": 0.4, "low": 0.05, "high": 0.85}
    assert success(_report(solved))["none"]["estimate"] == 0.4
    healthy = success(_report(None, failed=(0, 5)))["none"]
    assert healthy["what"] == "healthy" and healthy["estimate"] == 1.0
    assert (healthy["low"], healthy["high"]) == (0.48, 1.0)  # 1 - [0, 0.52]
    sweep = sweep_report("data.length", [20, 40], [_report(solved), _report(None)])
    assert sweep["success"][0]["none"]["what"] == "solved"
    text = sweep_markdown({**sweep, "reports": []} | {"values": []})
    assert "Compare swept over `data.length`" in text


def test_a_sweep_report_is_written_with_its_figure(plan, tmp_path):
    from gradguard.experiments.results import RunResult
    from gradguard.experiments.summary import summarize

    reports = []
    for length, flags in ((20, [True, True]), (40, [True, False])):
        chosen = choose(plan, remedies=["none"], seeds=[1, 2])
        runs = [
            RunResult(Cell("none", s), {"accuracy": 0.99, "verdict": "healthy", "solved": f})
            for s, f in zip([1, 2], flags, strict=True)
        ]
        reports.append(summarize(chosen, runs, f"length {length}"))
    sweep = sweep_report("data.length", [20, 40], reports)
    write_sweep(sweep, tmp_path)
    text = (tmp_path / "sweep.md").read_text()
    assert "| `none` | 100 % [16, 100] | 50 % [1, 99] |" in text  # 2/2 and 1/2, exact CIs
    assert "## data.length = 40" in text and (tmp_path / "sweep.png").stat().st_size > 1000


def test_a_ladder_is_drawn_on_a_log_axis_and_lines_stand_apart_by_one_percent():
    assert x_scale([0.01, 0.1, 0.5, 1.0, 2.0]) == "log"  # a factor of 200
    assert x_scale([20, 30, 40, 50]) == "linear"  # a factor of 2.5
    assert x_scale([0.0, 1.0, 10.0]) == "linear"  # 0 has no place on a log axis
    assert x_scale(["simple", "lstm"]) == "linear" and x_scale([True, False]) == "linear"
    # linear: the first of two lines 0.5 % of the span (80 - 20 = 60) left of 20
    assert nudge(20, 0, 2, [20, 80], "linear") == pytest.approx(20 - 0.3)
    assert nudge(20, 1, 3, [20, 80], "linear") == 20  # the middle line stays
    # log: a factor of (2.0 / 0.01) ** 0.005 per half step, 200 ** 0.005 = 1.02685...
    assert nudge(0.1, 1, 2, [0.01, 2.0], "log") == pytest.approx(0.1026846, abs=1e-7)
    assert nudge(0.1, 0, 2, [0.01, 2.0], "log") == pytest.approx(0.0973856, abs=1e-7)
