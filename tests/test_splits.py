"""gradguard.data.splits: the stratified, seeded split and its refusals."""

from __future__ import annotations

import numpy as np
import pytest

from gradguard.data.splits import split
from gradguard.errors import DataError
from gradguard.io import fingerprint
from gradguard.params import DataParams


def test_split_is_stratified_disjoint_and_seeded():
    x = np.arange(100, dtype=np.float32).reshape(100, 1, 1, 1)
    y = np.repeat(np.arange(4), 25).astype(np.int32)
    params = DataParams(val_fraction=0.2, test_fraction=0.2)
    parts = split(x, y, params, seed=3)
    sizes = {name: len(part[1]) for name, part in parts.items()}
    assert sizes == {"train": 60, "val": 20, "test": 20}
    for _, labels in parts.values():  # 25 per class -> 15 / 5 / 5
        assert np.bincount(labels).tolist() in ([15] * 4, [5] * 4)
    ids = np.concatenate([part[0].ravel() for part in parts.values()])
    assert sorted(ids.tolist()) == list(range(100))  # every image exactly once
    again = split(x, y, params, seed=3)
    assert fingerprint(*parts["test"]) == fingerprint(*again["test"])
    assert fingerprint(*split(x, y, params, seed=4)["test"]) != fingerprint(*parts["test"])


def test_a_class_too_small_to_split_is_refused():
    x = np.zeros((32, 4, 4, 1), np.float32)
    y = np.array([0] * 15 + [1] * 15 + [2] * 2, np.int32)
    with pytest.raises(DataError, match="class 2 has 2 image"):
        split(x, y, DataParams(), seed=0)
