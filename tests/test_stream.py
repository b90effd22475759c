"""The streaming sequence: every image once per epoch in a seeded order, shares, windows."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from gradguard.data.shards import write_shards
from gradguard.data.stream import ShardSequence
from gradguard.errors import DataError
from tests.shard_cases import images, visit


def test_every_image_once_per_epoch_in_a_seeded_order(tmp_path, small_shards):
    x, y = images(25)
    write_shards(tmp_path, x, y, num_classes=3)
    sequence = ShardSequence(tmp_path, 4, seed=7, buffer=10)
    assert len(sequence) == 7  # 25 images in batches of 4
    first = visit(sequence)
    assert sorted(first) == list(range(25)) and first != list(range(25))
    # A buffer of one image: each window is one shard, so each shard's images come together.
    by_shard = [i // 10 for i in visit(ShardSequence(tmp_path, 4, seed=7, buffer=1))]
    runs = [k for n, k in enumerate(by_shard) if n == 0 or by_shard[n - 1] != k]
    assert sorted(runs) == [0, 1, 2]
    x_batch, y_batch = sequence[0]
    assert x_batch.dtype == np.float32 and y_batch.tolist() == [i % 3 for i in first[:4]]
    np.testing.assert_allclose(x_batch[0], x[first[0]] / 255.0, rtol=1e-6)
    sequence.epoch = 1
    second = visit(sequence)
    assert sorted(second) == list(range(25)) and second != first
    assert visit(ShardSequence(tmp_path, 4, seed=7, buffer=10, epoch=1)) == second
    plain = ShardSequence(tmp_path, 4, labelled=False)
    assert visit(plain) == list(range(25)) and len(plain[0]) == 1


def test_processes_split_every_full_batch_and_the_repeats_weigh_nothing(tmp_path, small_shards):
    x, y = images(25)
    write_shards(tmp_path, x, y, num_classes=3)
    whole = ShardSequence(tmp_path, 4, seed=7, buffer=10, full_batches=True)
    halves = [
        ShardSequence(tmp_path, 4, seed=7, buffer=10, full_batches=True, process=p, processes=2)
        for p in (0, 1)
    ]
    order = visit(ShardSequence(tmp_path, 4, seed=7, buffer=10))
    assert len(whole) == len(halves[0]) == 7
    for batch in range(7):
        images_, _, weight = whole[batch]
        assert images_.shape == (4, 2, 2, 1) and weight.dtype == np.float32
        parts = [half[batch] for half in halves]
        for whole_part, *split in zip(whole[batch], *parts, strict=True):
            np.testing.assert_array_equal(whole_part, np.concatenate(split))
        assert [len(part[0]) for part in parts] == [2, 2]
    # 25 = 6 x 4 + 1: the last batch is its one image, then that image again 3 times, weight 0.
    named = (whole[6][0][:, 0, 0, 0] * 255).round().astype(int).tolist()
    assert named == [order[24]] * 4 and whole[6][2].tolist() == [1, 0, 0, 0]
    with pytest.raises(DataError, match="batch size 5 across 2 processes"):
        ShardSequence(tmp_path, 5, full_batches=True, process=1, processes=2)


def test_a_buffer_of_all_images_mixes_every_shard(tmp_path, small_shards):
    x, y = images(25)
    write_shards(tmp_path, x, y, num_classes=3)
    order = visit(ShardSequence(tmp_path, 5, seed=3, buffer=25))
    assert len({i // 10 for i in order[:10]}) > 1  # the first ten come from several shards


def test_fit_streams_every_epoch_once_and_two_runs_give_the_same_weights(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (90, 4, 4, 3), dtype=np.uint8)
    y = (x.mean(axis=(1, 2, 3)) > 127).astype(np.int32)
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    write_shards(tmp_path / "train", x[:60], y[:60], num_classes=2)
    write_shards(tmp_path / "val", x[60:], y[60:], num_classes=2)

    class Recorded(ShardSequence):
        def __getitem__(self, batch):
            self.served.append(self.epoch)
            return super().__getitem__(batch)

    def run(initial_epoch=0):
        keras.utils.set_random_seed(1)
        train = Recorded(tmp_path / "train", 16, seed=5, epoch=initial_epoch)
        train.served = []
        val = ShardSequence(tmp_path / "val", 16)
        model = keras.Sequential(
            [keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(2, "softmax")]
        )
        model.compile("sgd", "sparse_categorical_crossentropy")
        model.fit(
            train,
            validation_data=val,
            epochs=3,
            initial_epoch=initial_epoch,
            shuffle=False,
            callbacks=[train.epoch_callback()],
            verbose=0,
        )
        return train.served, model.get_weights()

    served, weights = run()
    # 60 images in batches of 16: 4 batches an epoch, each epoch in its own order.
    assert sorted(set(served)) == [0, 1, 2] and served.count(1) == served.count(2) == 4
    again = run()[1]
    assert all(np.array_equal(a, b) for a, b in zip(weights, again, strict=True))
    assert set(run(initial_epoch=2)[0]) == {2}  # a resumed run starts at its epoch's order


def test_an_epoch_reads_each_shard_once_whatever_the_window(tmp_path, small_shards, monkeypatch):
    from gradguard.data import stream

    x, y = images(45)  # shards of 10, 10, 10, 10 and 5 images
    write_shards(tmp_path, x, y, num_classes=3)
    reads = []
    load = stream.load_arrays
    monkeypatch.setattr(stream, "load_arrays", lambda path: reads.append(path) or load(path))
    for buffer in (1, 12, 25, 45):  # windows of 1, 2, 3 shards, and all 5
        reads.clear()
        sequence = ShardSequence(tmp_path, 4, seed=3, buffer=buffer)
        for epoch in range(2):
            sequence.epoch = epoch
            assert sorted(visit(sequence)) == list(range(45))
        # Shards are loaded at most once per epoch (the windows are mixed, not re-read).
        assert len(reads) <= 2 * 5, (buffer, len(reads))
