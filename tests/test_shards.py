"""Shard sets: layout independent of chunking, seeded sampling, the index."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gradguard.data import shards
from gradguard.data.shards import ShardWriter, read_index, write_shards
from gradguard.errors import DataError
from tests.shard_cases import images


def test_the_layout_depends_on_the_images_not_on_the_chunks(tmp_path, small_shards):
    x, y = images(25)
    (tmp_path / "whole").mkdir()
    (tmp_path / "chunks").mkdir()
    whole = write_shards(tmp_path / "whole", x, y, num_classes=3)
    writer = ShardWriter(tmp_path / "chunks", (2, 2, 1), 3)
    for start in range(0, 25, 7):
        writer.add(x[start : start + 7], y[start : start + 7])
    assert writer.close() == whole
    assert [entry["examples"] for entry in whole["shards"]] == [10, 10, 5]
    for entry in whole["shards"]:
        a = (tmp_path / "whole" / entry["file"]).read_bytes()
        assert a == (tmp_path / "chunks" / entry["file"]).read_bytes()
    back = np.concatenate([part[0] for part in shards.iter_shards(tmp_path / "whole")])
    assert (
        back.tobytes() == x.tobytes() and shards.labels(tmp_path / "whole").tolist() == y.tolist()
    )
    # One byte a pixel on disk, plus the 4-byte labels and the .npz headers.
    stored = sum(f.stat().st_size for f in (tmp_path / "whole").glob("*.npz"))
    assert x.size <= stored < x.size + 25 * 4 + 3 * 600


def test_a_writer_refuses_float_chunks_and_a_missing_index_is_one_line(tmp_path):
    writer = ShardWriter(tmp_path, (2, 2, 1), 3)
    with pytest.raises(ValueError, match="expected uint8"):
        writer.add(np.zeros((2, 2, 2, 1), np.float32), np.zeros(2, np.int32))
    with pytest.raises(DataError, match=r"index\.json: not a shard index"):
        read_index(tmp_path / "nowhere")


def test_sample_is_seeded_without_repeats_and_whole_when_small(tmp_path, small_shards):
    x, y = images(25)
    write_shards(tmp_path, x, y, num_classes=3)
    picked, labels = shards.sample(tmp_path, 12, seed=1)
    ids = picked[:, 0, 0, 0].tolist()
    assert len(set(ids)) == 12 and ids == sorted(ids)  # set order, no repeats
    assert labels.tolist() == [i % 3 for i in ids]
    assert shards.sample(tmp_path, 12, seed=1)[0].tobytes() == picked.tobytes()
    assert shards.sample(tmp_path, 12, seed=2)[0].tobytes() != picked.tobytes()
    assert shards.sample(tmp_path, 100, seed=1)[0].tobytes() == x.tobytes()


def test_index_records_shape_classes_and_counts(tmp_path, small_shards):
    x, y = images(12, (2, 1, 2))  # 4 bytes an image: 10 to a shard
    index = write_shards(tmp_path, x, y, num_classes=5)
    saved = json.loads((tmp_path / "index.json").read_text())
    assert saved == index and index["example_shape"] == [2, 1, 2] and index["num_classes"] == 5
    assert index["examples"] == 12 and len(index["shards"]) == 2
