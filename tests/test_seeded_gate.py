"""gradguard.experiments.gate: the seeded gate's runs, their names, values and report.

(Judging one rule over paired seeds, `check_seeded`: tests/test_gate.py. Both sides run as
DVC experiments: tests/test_gate_e2e.py.)
"""

from __future__ import annotations

import subprocess

import pytest

from gradguard.evaluation.gate import GateUsageError, Rule, check_seeded
from gradguard.experiments.gate import _values, plan_for, seeded_markdown, uncommitted


def test_the_seeded_gate_writes_the_projects_seed_key_and_shows_its_metric():
    plan = plan_for([3, 4], "wip", "trainer.random_state", "results/scores.json:test.f1")
    cell = plan.cells()[1]
    assert cell.experiment == "gate-wip-s4"
    assert plan.overrides(cell) == {"trainer.random_state": 4}
    assert plan.files == ("results/scores.json",)


def test_a_rules_value_is_dug_out_of_its_file_or_named_as_missing():
    metrics = {"files": {"results/scores.json": {"test": {"f1": 0.75}}}}
    assert _values(Rule("results/scores.json:test.f1", "higher"), metrics) == 0.75
    with pytest.raises(GateUsageError, match=r"results/scores.json:test.auc: not in a run's"):
        _values(Rule("results/scores.json:test.auc", "higher"), metrics)


def test_uncommitted_sees_a_tracked_edit_and_ignores_untracked_files(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("1\n")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a")
    (tmp_path / "new.txt").write_text("untracked\n")
    assert not uncommitted(tmp_path)
    (tmp_path / "a.txt").write_text("2\n")
    assert uncommitted(tmp_path)


def test_the_report_shows_each_pair_the_interval_and_the_counts():
    rules = [
        Rule("m.json:accuracy", "higher", abs_tol=0.05),
        Rule("m.json:healthy", "equal", expect=True),
    ]
    results = [
        check_seeded(rules[0], [1, 2, 3], [0.9, 0.8, 0.85], [0.91, 0.81, 0.86]),
        check_seeded(rules[1], [1, 2, 3], [True] * 3, [True, False, True]),
    ]
    text = seeded_markdown(results, "main").splitlines()
    assert text[0] == "### Metrics gate against `main`, over 3 paired seeds"
    assert text[2].startswith("| metric | s1: base → now | s2: base → now | s3: base → now |")
    # Every pair gains 0.01 exactly, so the mean change is 0.01 with no spread.
    assert "| 0.9 → 0.91 | 0.8 → 0.81 | 0.85 → 0.86 | +0.01 [+0.01, +0.01] |" in text[4]
    assert text[4].endswith("| pass |") and text[5].endswith("| **FAIL** |")
    assert text[-1] == "Rules: 1 pass, 1 fail, 0 inconclusive."
