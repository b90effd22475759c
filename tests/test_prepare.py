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


def test_feature_moments_and_standardise_by_hand():
    from gradguard.data.prepare import feature_moments, standardise

    # Two features over rows 0, 1 and 3 (row 2 is not training data):
    # feature 0: 1, 3, 5 -> mean 3, population std sqrt(8/3); feature 1 is constant -> std 1.
    x = np.array([[1.0, 2.0], [3.0, 2.0], [100.0, -7.0], [5.0, 2.0]], np.float32)
    moments = feature_moments(x, np.array([0, 1, 3]))
    assert moments["mean"] == pytest.approx([3.0, 2.0])
    assert moments["std"] == pytest.approx([np.sqrt(8 / 3), 1.0])
    scaled = standardise(x, moments)
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled[:, 0], [-2, 0, 97, 2] / np.sqrt(8 / 3), rtol=1e-6)
    np.testing.assert_allclose(scaled[:, 1], [0, 0, -9, 0], rtol=1e-6)
    # Sequences (N, T, F): each feature over every example and step.
    seq = np.stack([x[:2], x[2:]])  # (2, 2, 2)
    both = feature_moments(seq, np.array([0]))
    assert both["mean"] == pytest.approx([2.0, 2.0]) and both["std"] == pytest.approx([1.0, 1.0])


def test_prepare_standardises_every_split_by_the_training_split_only(tmp_path):
    import json

    from gradguard.data.prepare import standardise
    from gradguard.data.shards import iter_shards

    rng = np.random.default_rng(3)
    x = rng.normal(50.0, 10.0, (200, 5, 2)).astype(np.float32)
    y = np.arange(200) % 2
    np.savez(tmp_path / "d.npz", x=x, y=y)
    params = DataParams(source="npz", path=str(tmp_path / "d.npz"))
    stats = prepare(params, 0, tmp_path, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == stats
    train = np.concatenate([part for part, _ in iter_shards(tmp_path / "out" / "train")])
    assert train.dtype == np.float32
    np.testing.assert_allclose(train.reshape(-1, 2).mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(train.reshape(-1, 2).std(axis=0), 1.0, atol=1e-4)
    val = np.concatenate([part for part, _ in iter_shards(tmp_path / "out" / "val")])
    assert np.abs(val.reshape(-1, 2).mean(axis=0)).max() > 1e-4  # scaled, not re-centred
    again = prepare(params, 0, tmp_path, tmp_path / "again")
    assert again == stats  # the same bytes' fingerprints: byte-reproducible
    plain = prepare(
        DataParams(source="npz", path=str(tmp_path / "d.npz"), standardize=False),
        0,
        tmp_path,
        tmp_path / "plain",
    )
    assert plain["standardize"] is None
    raw = np.concatenate([part for part, _ in iter_shards(tmp_path / "plain" / "train")])
    # The stored training split is the raw one scaled by the moments stats.json keeps.
    np.testing.assert_allclose(standardise(raw, stats["standardize"]), train, rtol=1e-5, atol=1e-5)


def test_feature_moments_keep_their_precision_far_from_zero():
    from gradguard.data.prepare import feature_moments

    # 1e8 + (-1, 0, 1): std sqrt(2/3) exactly; E[x^2] - E[x]^2 would lose it to rounding.
    x = np.array([[1e8 - 1], [1e8], [1e8 + 1]], np.float64)
    moments = feature_moments(x, np.arange(3))
    assert moments["mean"] == [1e8] and moments["std"] == pytest.approx([np.sqrt(2 / 3)], 1e-12)
