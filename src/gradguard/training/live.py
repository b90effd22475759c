"""A training run's DVCLive folder: one table of its files, and the per-step log written into it.

`dvc.yaml` declares these files (train's `outs`, the top-level `plots`); a test
checks that it names the ones listed here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from gradguard.settings import EVENT_NAMES

# Per-epoch curves, as `gradguard.training.callbacks.EpochMetricsLogger` names them under
# plots/metrics/ (DVCLive's layout): {panel: {line: file}}.
CURVES = {
    "loss": {"train": "train/loss.tsv", "val": "val/loss.tsv"},
    "accuracy": {"train": "train/accuracy.tsv", "val": "val/accuracy.tsv"},
    "pre-clip gradient norm": {
        "max": "train/grad_norm_max.tsv",
        "mean": "train/grad_norm_mean.tsv",
    },
}
# Step-log fields drawn per step: file name in plots/steps/ -> StepRow field.
STEP_PLOTS = {
    "pre_clip_norm": "pre_clip_norm",
    "post_clip_norm": "post_clip_norm",
    "clip_threshold": "threshold",
    "batch_loss": "batch_loss",
}


class LiveFolder:
    """The files of one run's DVCLive folder (`root`), by what they hold."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.summary = self.root / "metrics.json"  # DVCLive's run summary
        self.events = self.root / "events.json"  # spikes, non-finite steps, stops, rollbacks
        self.layers = self.root / "layers.json"  # per epoch, each layer's norms
        self.layer_plot = self.root / "plots" / "layers.json"  # per layer, the run's peaks
        self.curves = self.root / "plots" / "metrics"  # per-epoch .tsv files (CURVES)
        self.steps = self.root / "plots" / "steps"  # per-step .tsv files (STEP_PLOTS)
        self.step_events = self.steps / "events.jsonl"  # the step log's events, as they come

    def read_summary(self) -> dict | None:
        """The run summary train wrote (`{"run": ...}`'s value), or None."""
        if not self.summary.is_file():
            return None
        return json.loads(self.summary.read_text(encoding="utf-8")).get("run")


class NoLive:
    """DVCLive's `Live` for a process that keeps no record (a cluster's processes but 0).

    Their files would land in a scratch folder, deleted at the end; and DVCLive also
    writes a signal file into the repository every process shares and removes it at
    its end, where two processes race (one `os.remove` finds it gone).
    """

    def __init__(self):
        self.summary: dict = {}

    def log_metric(self, name: str, value) -> None:
        """Nothing to record."""

    def next_step(self) -> None:
        """Nothing to record."""

    def __enter__(self) -> NoLive:
        return self

    def __exit__(self, *exc_info) -> bool:
        return False


def describe_event(row) -> dict:
    """A spike or non-finite step of the step log, with the layers it started in."""
    event = {"step": row.step, "kind": EVENT_NAMES[row.event], "grad_norm": row.pre_clip_norm}
    if math.isfinite(row.batch_loss):
        event["batch_loss"] = row.batch_loss
    bad = [name for name, norm in row.layer_norms.items() if not math.isfinite(norm)]
    if bad:
        event["nonfinite_layers"] = bad
    else:
        largest = sorted(row.layer_norms.items(), key=lambda item: -item[1])[:3]
        event["largest_layers"] = dict(largest)
    return event


def append_step_log(folder: LiveFolder, rows) -> None:
    """Append per-step norms to plots/steps/ (one TSV per line of the DVC plot) and events."""
    folder.steps.mkdir(parents=True, exist_ok=True)
    with open(folder.step_events, "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(describe_event(row)) + "\n" for row in rows if row.event)
    for name, field in STEP_PLOTS.items():
        file = folder.steps / f"{name}.tsv"
        new = not file.exists()
        with open(file, "a", encoding="utf-8") as handle:
            if new:
                handle.write(f"step\t{name}\n")
            # Vega cannot draw Inf or NaN: "no bound", non-finite steps, unrecorded losses.
            values = ((row.step, getattr(row, field)) for row in rows)
            handle.writelines(f"{step}\t{v:.6g}\n" for step, v in values if math.isfinite(v))


def step_events(folder: LiveFolder) -> list[dict]:
    """The spikes and non-finite steps `append_step_log` recorded."""
    if not folder.step_events.is_file():
        return []
    lines = folder.step_events.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]
