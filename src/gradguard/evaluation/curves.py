"""The training curves of a run as one PNG: read from DVCLive's files, drawn with matplotlib."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from gradguard.io import atomic_path
from gradguard.training.live import CURVES, LiveFolder


def read_curve(path: Path) -> list[float]:
    """The values column of one DVCLive .tsv (step, timestamp, value)."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [float(row[path.stem]) for row in rows]


def read_curves(folder: LiveFolder) -> dict[str, dict[str, list[float]]]:
    """Every panel of `CURVES` whose files the run wrote: {panel: {line: values}}."""
    return {
        title: {
            label: read_curve(folder.curves / file)
            for label, file in lines.items()
            if (folder.curves / file).is_file()
        }
        for title, lines in CURVES.items()
    }


def plot_training_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], path) -> None:
    """One PNG panel per quantity (loss, accuracy, gradient norm), each split a line.

    Args:
        curves: {panel title: {line label: values per epoch}}.
        path: the PNG file to write (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for axis, (title, lines) in zip(axes[0], curves.items(), strict=True):
        for label, values in lines.items():
            axis.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=label)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
