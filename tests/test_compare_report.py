"""gradguard.experiments.report: the report, byte-stable and rebuilt from its JSON."""

from __future__ import annotations

import json

from gradguard.experiments.plan import Cell
from gradguard.experiments.report import markdown, plot_compare
from gradguard.experiments.results import RunResult
from gradguard.experiments.summary import summarize
from stages import compare
from tests.compare_helpers import runs_of, small_plan


def test_a_failed_run_is_not_a_verdict_and_the_report_is_byte_stable(plan, tmp_path):
    chosen = small_plan(plan, ["none", "skip"], seeds=(1, 2, 3))
    results = runs_of(chosen, {"none": [(0.9, "healthy")] * 3, "skip": [(0.9, "healthy")] * 3})
    results[-1] = RunResult(Cell("skip", 3), None, "MemoryError")
    report = summarize(chosen, results, "stress")
    skip = report["remedies"][1]
    assert skip["failed_to_run"] == [3] and skip["verdicts"]["healthy"] == 2
    assert skip["runs"][-1] == {
        "seed": 3,
        "experiment": "cmp-skip-s3",
        "metric": None,
        "accuracy": None,  # the metric is gradguard's accuracy: its old name stays
        "verdict": "failed to run",
        "error": "MemoryError",
    }
    assert skip["label"] == "recommended"  # 2 healthy paired seeds, equal to the best
    text = markdown(report)
    assert "failed to run twice (not a divergence): MemoryError" in text
    assert text.index("## Labels") < text.index("| remedy | label")  # rules before the table
    assert markdown(json.loads(json.dumps(report))) == text
    norms = {"none": [([1, 2, 3], [1.0, 2.0, 4.0]), ([1, 2], [1.0, 8.0])]}
    first = [p.read_bytes() for p in plot_compare(report, norms, tmp_path / "a")]
    again = [p.read_bytes() for p in plot_compare(report, norms, tmp_path / "b")]
    assert first == again and all(b.startswith(b"\x89PNG") for b in first)
    keys = {"base", "seeds", "remedies"}
    assert keys <= set(report) and {"name", "params", "label", "runs"} <= set(skip)


def test_a_report_rebuilt_from_its_json_is_the_report(plan, tmp_path):
    # --from-json: the runs a compare.json lists are all its statistics need, so a report
    # rebuilt from its own JSON is that report, key for key; and its files are written.
    chosen = small_plan(plan, ["none", "global_norm", "autoclip"], seeds=(1, 2, 3))
    ok = "healthy"
    table = {
        "none": [(0.90, ok), (0.10, "diverged"), (0.85, ok)],
        "global_norm": [(0.96, ok), (0.94, ok), (0.95, ok)],
        "autoclip": [(0.95, ok), (0.91, ok), (0.96, ok)],
    }
    report = json.loads(json.dumps(summarize(chosen, runs_of(chosen, table), "params.yaml")))
    source = tmp_path / "old" / "compare.json"
    source.parent.mkdir()
    source.write_text(json.dumps(report))
    (source.parent / "compare_grad_norms.png").write_bytes(b"kept")
    assert compare.main(["--from-json", str(source), "--out", str(tmp_path / "new")]) == 0
    rebuilt = json.loads((tmp_path / "new" / "compare.json").read_text())
    assert rebuilt == report
    assert (tmp_path / "new" / "compare_grad_norms.png").read_bytes() == b"kept"
    assert (tmp_path / "new" / "compare_accuracy.png").stat().st_size > 0
    assert compare.main(["--from-json", str(tmp_path / "missing.json")]) == 2
