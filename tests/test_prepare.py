"""One check of the decoded data set, for every source kind: each rule, each kind.

Each bad set is refused by `prepare` with one line that names the file, folder or
source and the problem, and nothing is written.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import gradguard.data.sources as sources
import gradguard.data.splits as splits
from gradguard.data.prepare import prepare
from gradguard.errors import DataError
from gradguard.params import DataParams

KINDS = ("npz", "folder", "digits", "mnist", "fashion_mnist")


def images(labels) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, np.int64)
    x = (np.arange(len(y) * 64) % 256).astype(np.uint8).reshape(len(y), 8, 8)
    return x, y


# rule -> (labels, the fragment every kind's message holds); the folder's own wording below
RULES = {
    "no images": ([], "holds no images"),
    "one class": ([0] * 30, "a single class"),
    "a gap in the labels": ([0] * 10 + [1] * 10 + [3] * 10, "classes [2] have no images"),
    "a class too small to split": ([0] * 10 + [1] * 2, "class 1 has 2 image(s)"),
    "a split without every class": ([c for c in range(10) for _ in range(3)], "train/val/test"),
}
FOLDER = {  # a folder cannot hold a label gap: its sub-folders are numbered in sorted order
    "no images": "no .png/.jpg/.jpeg images in this class folder",
    "one class": "found 1 class folder(s)",
}


def source(kind: str, labels, tmp_path, monkeypatch) -> DataParams:
    """A data source of `kind` that decodes to the given labels (8x8 images)."""
    x, y = images(labels)
    if kind == "npz":
        np.savez(tmp_path / "mine.npz", x=x, y=y)
        return DataParams(source="npz", path=str(tmp_path / "mine.npz"), image_size=8)
    if kind == "folder":
        root = tmp_path / "folder"
        for label in sorted(set(y.tolist())) or [0, 1]:  # no images: empty class folders
            (root / f"c{label}").mkdir(parents=True)
        for i, (image, label) in enumerate(zip(x, y, strict=True)):
            Image.fromarray(image).save(root / f"c{label}" / f"{i}.png")
        return DataParams(source="folder", path=str(root), image_size=8)
    if kind == "digits":
        monkeypatch.setattr(sources, "load_digits", lambda: (x, y))
    else:
        monkeypatch.setattr(sources, "load_keras_dataset", lambda name: (x, y))
    return DataParams(source=kind, image_size=8)


# a folder cannot hold a label gap (tested below)
CASES = [(k, r) for k in KINDS for r in RULES if (k, r) != ("folder", "a gap in the labels")]


@pytest.mark.parametrize(("kind", "rule"), CASES)
def test_each_rule_refuses_a_bad_set_of_each_kind_in_one_line_and_writes_nothing(
    kind, rule, tmp_path, monkeypatch
):
    labels, fragment = RULES[rule]
    params = source(kind, labels, tmp_path, monkeypatch)
    with pytest.raises(DataError) as error:
        prepare(params, seed=0, raw=tmp_path, out=tmp_path / "prepared")
    message = str(error.value)
    assert FOLDER.get(rule, fragment) in message if kind == "folder" else fragment in message
    assert "\n" not in message
    assert (params.path or kind) in message  # names the file, folder or source
    assert not (tmp_path / "prepared").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_a_split_check_says_the_sizes_it_found():
    params = DataParams(val_fraction=0.15, test_fraction=0.15)
    y = np.repeat(np.arange(10), 3)  # 30 images: ceil(4.5) = 5 for val and for test
    with pytest.raises(DataError, match=r"^mine: 30 images in 10 classes .* 20/5/5 images"):
        splits.check_dataset(y, params, "mine")
    assert splits.split_sizes(30, params) == {"train": 20, "val": 5, "test": 5}


def test_a_folder_numbers_its_classes_by_sorted_name_so_it_has_no_gap(tmp_path, monkeypatch):
    params = source("folder", [0] * 3 + [3] * 3 + [7] * 3, tmp_path, monkeypatch)
    x, y = sources.load_source(params)
    assert len(x) == 9 and y.tolist() == [0] * 3 + [1] * 3 + [2] * 3  # c0, c3, c7 -> 0, 1, 2


@pytest.mark.parametrize("kind", KINDS)
def test_a_good_set_of_each_kind_passes_the_same_check(kind, tmp_path, monkeypatch):
    params = source(kind, [c for c in range(3) for _ in range(10)], tmp_path, monkeypatch)
    stats = prepare(params, seed=0, raw=tmp_path, out=tmp_path / "prepared")
    assert stats["num_classes"] == 3
    assert [sum(stats["counts"][s]) for s in ("train", "val", "test")] == [20, 5, 5]
