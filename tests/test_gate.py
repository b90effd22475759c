"""The metrics gate: synthetic comparisons, and one run against a real git + DVC repository."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest
import yaml

from gradguard.evaluation.gate import (
    GateUsageError,
    Rule,
    check,
    check_rule,
    check_seeded,
    markdown,
    parse_rules,
)
from stages import gate as gate_stage

ACCURACY = Rule("m.json:accuracy", "higher", abs_tol=0.005)


def diff(**metrics):
    """`dvc metrics diff --json --all` shape for one file, m.json: key -> (old, new)."""
    return {"m.json": {k: {"old": old, "new": new} for k, (old, new) in metrics.items()}}


@pytest.mark.parametrize(
    ("old", "new", "ok"),
    [
        (0.90, 0.95, True),  # improvement
        (0.90, 0.896, True),  # worse by 0.004, inside 0.005
        (0.90, 0.895, True),  # exactly on the tolerance
        (0.90, 0.894, False),  # worse by 0.006
    ],
)
def test_absolute_tolerance_on_a_higher_is_better_metric(old, new, ok):
    assert check_rule(ACCURACY, old, new).ok is ok


def test_relative_tolerance_on_a_lower_is_better_metric():
    rule = Rule("m.json:grad", "lower", rel_tol=9.0)  # may grow up to 10x
    assert check_rule(rule, 2.0, 20.0).ok
    assert not check_rule(rule, 2.0, 20.1).ok
    assert check_rule(rule, 2.0, 0.5).ok
    assert "may not grow beyond 10x" in check_rule(rule, 2.0, 30.0).reason


def test_relative_versus_absolute_on_the_same_numbers():
    # accuracy 0.80 -> 0.79: worse by 0.01 = 1.25 % of 0.80.
    assert not check_rule(Rule("m.json:a", "higher", abs_tol=0.005), 0.80, 0.79).ok
    assert check_rule(Rule("m.json:a", "higher", rel_tol=0.02), 0.80, 0.79).ok
    assert not check_rule(Rule("m.json:a", "higher", rel_tol=0.01), 0.80, 0.79).ok


def test_nan_always_fails_even_where_the_direction_would_not_care():
    assert not check_rule(ACCURACY, 0.9, math.nan).ok
    assert not check_rule(ACCURACY, math.nan, 0.9).ok
    assert not check_rule(Rule("m.json:loss", "lower", rel_tol=100.0), 0.1, math.nan).ok
    assert not check_rule(Rule("m.json:loss", "lower", abs_tol=1.0), 0.1, math.inf).ok


def test_equal_rules_with_and_without_expect():
    stay_false = Rule("m.json:diverged", "equal", expect=False)
    assert check_rule(stay_false, False, False).ok
    assert not check_rule(stay_false, False, True).ok
    assert not check_rule(stay_false, True, True).ok  # expect wins over the baseline
    assert check_rule(Rule("m.json:n", "equal"), 270, 270).ok


def test_missing_and_non_numeric_metrics_are_usage_errors():
    with pytest.raises(GateUsageError, match=r"m\.json:accuracy: not in either"):
        check({"m.json": {}}, [ACCURACY])
    with pytest.raises(GateUsageError, match="null or missing in both"):
        check({"m.json": {"accuracy": {"old": None, "new": None}}}, [ACCURACY])
    with pytest.raises(GateUsageError, match="'high' is not a number"):
        check(diff(accuracy=(0.9, "high")), [ACCURACY])


def test_a_null_value_fails_its_rule_like_nan_once_or_on_any_seed():
    # Metrics files are strict JSON: a non-finite norm is written as null.
    norm = Rule("m.json:max_grad_norm", "lower", rel_tol=9.0)
    (verdict,) = check({"m.json": {"max_grad_norm": {"old": 2.0, "new": None}}}, [norm])
    assert not verdict.ok
    assert verdict.reason.startswith("m.json:max_grad_norm is null in the workspace")
    (verdict,) = check({"m.json": {"accuracy": {"old": None, "new": 0.9}}}, [ACCURACY])
    assert not verdict.ok and "null in the baseline" in verdict.reason
    seeded = check_seeded(norm, [1, 2, 3], [2.0, 2.0, 2.0], [2.0, None, 2.0])
    assert seeded.outcome == "fail" and seeded.reason.startswith("seed 2: ")


def test_report_has_a_row_per_rule_and_marks_failures():
    verdicts = check(
        diff(accuracy=(0.9, 0.8), diverged=(False, False)),
        [ACCURACY, Rule("m.json:diverged", "equal", expect=False)],
    )
    report = markdown(verdicts, "main")
    assert (
        "| `m.json:accuracy` | 0.9 | 0.8 | -0.1 | may not fall by more than 0.005 | **FAIL** |"
        in report
    )
    assert "| `m.json:diverged` | false | false |  | must be false | pass |" in report
    assert "Rules holding: 1 of 2." in report


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({}, "non-empty list under 'rules:'"),
        ({"rules": [{"metric": "accuracy", "direction": "higher"}]}, "'<file>:<key>'"),
        ({"rules": [{"metric": "m.json:a", "direction": "up"}]}, "direction='up'"),
        ({"rules": [{"metric": "m.json:a", "direction": "higher", "abs_tol": -1}]}, "abs_tol=-1"),
        ({"rules": [{"metric": "m.json:a", "direction": "higher", "tol": 1}]}, "unknown field"),
    ],
)
def test_bad_rules_name_what_is_wrong(raw, fragment):
    with pytest.raises(GateUsageError, match=re.escape(fragment)):
        parse_rules(raw)


def test_the_repository_rules_read_keys_the_committed_metrics_hold_and_pass_on_them():
    # Each rule of gate.yaml names a key of metrics/eval.json (a typo there would make the
    # gate a usage error in CI), and the committed metrics against themselves pass.
    with open("gate.yaml", encoding="utf-8") as handle:
        rules = parse_rules(yaml.safe_load(handle))
    with open("metrics/eval.json", encoding="utf-8") as handle:
        committed = json.load(handle)
    same = {"metrics/eval.json": {k: {"old": v, "new": v} for k, v in committed.items()}}
    verdicts = check(same, rules)
    assert [v.rule.metric for v in verdicts] == [r.metric for r in rules]
    assert all(v.ok for v in verdicts), [v.reason for v in verdicts if not v.ok]


def run(*args, cwd):
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)


def test_gate_in_a_git_repository_fails_a_regression_then_passes_the_restore(
    tmp_path, monkeypatch, capsys
):
    run("git", "init", "-q", "-b", "main", cwd=tmp_path)
    run(sys.executable, "-m", "dvc", "init", "-q", cwd=tmp_path)
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - eval.json\n")
    (tmp_path / "gate.yaml").write_text(
        yaml.safe_dump(
            {
                "rules": [
                    {"metric": "eval.json:accuracy", "direction": "higher", "abs_tol": 0.005},
                    {"metric": "eval.json:diverged", "direction": "equal", "expect": False},
                ]
            }
        )
    )
    good = {"accuracy": 0.95, "diverged": False}
    (tmp_path / "eval.json").write_text(json.dumps(good))
    run("git", "add", "-A", cwd=tmp_path)
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base", cwd=tmp_path)
    monkeypatch.chdir(tmp_path)

    (tmp_path / "eval.json").write_text(json.dumps({"accuracy": 0.90, "diverged": True}))
    assert gate_stage.main_cli(["--baseline", "main", "--md", "report.md"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("gate: FAIL") for line in err)
    assert "**FAIL**" in (tmp_path / "report.md").read_text()

    (tmp_path / "eval.json").write_text(json.dumps(good))
    assert gate_stage.main_cli(["--baseline", "main"]) == 0
    assert gate_stage.main_cli(["--baseline", "no-such-rev"]) == 2
    assert "unknown Git revision" in capsys.readouterr().err


def test_a_bad_rules_file_is_a_usage_error_not_a_regression(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.yaml").write_text("rules: [\n")
    (tmp_path / "list.yaml").write_text("- metric: a\n")
    assert gate_stage.main_cli(["--rules", "broken.yaml"]) == 2
    assert gate_stage.main_cli(["--rules", "list.yaml"]) == 2
    assert gate_stage.main_cli(["--rules", "missing.yaml"]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err and "got list" in err and "not found" in err


# --- the seeded decision, on constructed pairs ------------------------------------------------


def test_seeded_clear_regression_fails_with_its_constant_interval():
    # every seed 5 points worse: the change is -0.05 on each, so the interval is [-0.05, -0.05]
    verdict = check_seeded(ACCURACY, [1, 2, 3], [0.95, 0.96, 0.97], [0.90, 0.91, 0.92])
    assert verdict.outcome == "fail"
    assert verdict.interval.low == pytest.approx(-0.05) == verdict.interval.high
    assert verdict.noise == pytest.approx(0.01)  # std of 0.95, 0.96, 0.97
    assert "changed by -0.05 on average over 3 seeds" in verdict.reason


def test_seeded_no_change_passes_and_a_straddle_is_inconclusive():
    same = check_seeded(ACCURACY, [1, 2], [0.9, 0.8], [0.9, 0.8])
    assert same.outcome == "pass" and same.interval.low == same.interval.high == 0.0
    # changes -0.03, +0.01, -0.02, 0.00: mean -0.01, std 0.018257, standard error 0.0091287,
    # t(0.975, 3) = 3.182446: the 95 % interval [-0.039051, +0.019051] holds -0.005
    straddle = check_seeded(ACCURACY, [1, 2, 3, 4], [0.95] * 4, [0.92, 0.96, 0.93, 0.95])
    assert straddle.outcome == "inconclusive"
    assert (straddle.interval.low, straddle.interval.high) == pytest.approx(
        (-0.039051, 0.019051), abs=1e-6
    )
    assert straddle.seeds_to_decide == 136  # 4 * (0.029051 / 0.005)^2 = 135.03


def test_seeded_lower_rules_use_the_baseline_mean_and_verdict_rules_any_seed():
    norm = Rule("m.json:max_grad_norm", "lower", rel_tol=9.0)
    # tolerance 9 x mean(2, 4) = 27; growth of +98 on each seed is beyond it
    grown = check_seeded(norm, [1, 2], [2.0, 4.0], [100.0, 102.0])
    assert grown.outcome == "fail" and grown.tolerance == pytest.approx(27.0)
    assert grown.interval.low == pytest.approx(98.0) == grown.interval.high
    # changes +18, +19: mean 18.5, standard error 0.5, t(0.975, 1) = 12.706: [12.15, 24.85]
    # lies within the 27 allowed
    assert check_seeded(norm, [1, 2], [2.0, 4.0], [20.0, 23.0]).outcome == "pass"
    # +18 and +26: the same mean growth, but [-28.8, +72.8] holds 27: two seeds cannot tell
    assert check_seeded(norm, [1, 2], [2.0, 4.0], [20.0, 30.0]).outcome == "inconclusive"
    blown = check_seeded(norm, [1, 2], [2.0, 4.0], [3.0, math.inf])
    assert blown.outcome == "fail" and blown.reason.startswith("seed 2: ")
    healthy = Rule("m.json:healthy", "equal", expect=True)
    one_bad = check_seeded(healthy, [5, 6, 7], [True] * 3, [True, False, True])
    assert one_bad.outcome == "fail" and one_bad.reason.startswith("seed 6: ")
    with pytest.raises(GateUsageError, match="at least 2"):
        check_seeded(healthy, [5], [True], [True])
