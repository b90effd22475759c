"""The run's DVCLive folder: the step log's files and events, and dvc.yaml naming them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from gradguard.functional.state import StepRow
from gradguard.settings import EVENT_CODES
from gradguard.training.live import CURVES, STEP_PLOTS, LiveFolder, append_step_log, step_events

ROOT = Path(__file__).resolve().parents[1]
INF, NAN = math.inf, math.nan


def row(step, pre, post, event=0, loss=0.5, layers=None):
    layers = layers or {"conv0": 1.0, "hidden": 2.0, "classifier": 3.0, "bn0": 0.5}
    return StepRow(step, pre, post, INF, event, loss, layers)


def test_the_step_log_writes_finite_values_and_one_event_per_flagged_step(tmp_path):
    folder = LiveFolder(tmp_path / "live")
    append_step_log(folder, [row(0, 1.5, 1.0), row(1, NAN, NAN, EVENT_CODES["nonfinite"], INF)])
    spike = row(2, 40.0, 1.0, EVENT_CODES["spike"], loss=2.25)
    append_step_log(folder, [spike])  # a second epoch appends
    pre = (folder.steps / "pre_clip_norm.tsv").read_text()
    assert pre == "step\tpre_clip_norm\n0\t1.5\n2\t40\n"  # NaN left out: Vega cannot draw it
    assert (folder.steps / "clip_threshold.tsv").read_text() == "step\tclip_threshold\n"
    assert (folder.steps / "batch_loss.tsv").read_text() == "step\tbatch_loss\n0\t0.5\n2\t2.25\n"
    events = step_events(folder)
    assert [e["kind"] for e in events] == ["nonfinite", "spike"]
    assert "batch_loss" not in events[0]  # unrecorded: +Inf
    assert events[1] == {
        "step": 2,
        "kind": "spike",
        "grad_norm": 40.0,
        "batch_loss": 2.25,
        "largest_layers": {"classifier": 3.0, "hidden": 2.0, "conv0": 1.0},
    }


def test_a_nonfinite_event_names_the_layers_it_started_in(tmp_path):
    folder = LiveFolder(tmp_path)
    layers = {"conv0": 1.0, "hidden": INF, "classifier": NAN}
    append_step_log(folder, [row(7, INF, INF, EVENT_CODES["nonfinite"], layers=layers)])
    (event,) = [json.loads(line) for line in folder.step_events.read_text().splitlines()]
    assert event["nonfinite_layers"] == ["hidden", "classifier"]
    assert step_events(LiveFolder(tmp_path / "none")) == []


def test_dvc_yaml_names_the_files_the_tables_name():
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    live = LiveFolder("metrics/train")
    outs = spec["stages"]["train"]["outs"]
    for path in (live.events, live.layers, live.summary):
        assert str(path) in outs
    plotted = {file for plot in spec["plots"] for y in plot.values() for file in y["y"]}
    steps = {str(live.steps / f"{name}.tsv") for name in STEP_PLOTS}
    curves = {str(live.curves / file) for lines in CURVES.values() for file in lines.values()}
    assert steps <= plotted and curves <= plotted
    assert str(live.layer_plot) in plotted


def test_compare_reads_the_files_dvc_yaml_writes():
    from gradguard.experiments.plan import EVAL_FILE, OURS, TRAIN_SUMMARY

    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    declared = spec["stages"]["evaluate"]["metrics"]
    metrics = [next(iter(m)) if isinstance(m, dict) else m for m in declared]
    assert EVAL_FILE in metrics and OURS.startswith(f"{EVAL_FILE}:")
    assert str(LiveFolder("metrics/train").summary) == TRAIN_SUMMARY
    assert TRAIN_SUMMARY in spec["stages"]["train"]["outs"]
