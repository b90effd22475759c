"""gradguard.evaluation.curves: DVCLive's per-epoch files read back and drawn as one PNG."""

from __future__ import annotations

import struct

from gradguard.evaluation.curves import plot_training_curves, read_curve, read_curves
from gradguard.training.live import CURVES, LiveFolder


def write_tsv(path, name, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"step\t{name}"] + [f"{step}\t{value}" for step, value in enumerate(values)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def test_a_curve_is_the_column_named_after_its_file(tmp_path):
    write_tsv(tmp_path / "loss.tsv", "loss", [1.5, 0.25, float("nan")])
    values = read_curve(tmp_path / "loss.tsv")
    assert values[:2] == [1.5, 0.25] and values[2] != values[2]  # NaN read back as NaN


def test_read_curves_has_every_panel_and_only_the_lines_the_run_wrote(tmp_path):
    folder = LiveFolder(tmp_path)
    write_tsv(folder.curves / "train" / "loss.tsv", "loss", [2.0, 1.0])
    write_tsv(folder.curves / "val" / "loss.tsv", "loss", [2.5, 1.5])
    curves = read_curves(folder)
    assert list(curves) == list(CURVES)
    assert curves["loss"] == {"train": [2.0, 1.0], "val": [2.5, 1.5]}
    assert curves["accuracy"] == {} and curves["pre-clip gradient norm"] == {}


def test_the_png_has_one_420_pixel_panel_per_quantity_and_no_leftovers(tmp_path):
    curves = {"loss": {"train": [2.0, 1.0, 0.5]}, "accuracy": {"train": [0.1, 0.5, 0.9]}}
    plot_training_curves(curves, tmp_path / "curves.png")
    data = (tmp_path / "curves.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (2 * 420, 340)  # figsize 4.2 x 3.4 inches a panel at 100 dpi
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # written atomically
