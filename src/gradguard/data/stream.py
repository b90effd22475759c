"""Streaming shard sets into Keras: batches gathered on the fly, shuffled, prefetched."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from gradguard.data.shards import read_index, rows_of, to_float
from gradguard.errors import DataError
from gradguard.io import load_arrays


class ShardSequence(keras.utils.PyDataset):
    """Batches streamed from shard sets, for `Model.fit`, `evaluate` and `predict`.

    With `seed` set, each epoch visits the shards in a seeded order and shuffles
    the images of each window of consecutive shards holding at least `buffer`
    images (as `tf.data`'s shuffle buffer does, but in whole shards); the order
    is a function of (seed, epoch) alone, so a resumed run sees what an
    uninterrupted one would. Without `seed`, images come in stored order.
    At most two windows of shards are held in memory (the widest window possible,
    twice: a batch spans at most two).

    Pass `shuffle=False` to `Model.fit` (the order is this class's) and
    `epoch_callback()` among its callbacks: Keras's own epoch hooks on a
    `PyDataset` also fire outside epochs (when `fit` starts), so the epoch
    number comes from the callback, which Keras calls with it.

    Args:
        folders: shard sets read as one (e.g. the training split and its copies).
        batch_size: images per batch (the last one may be smaller).
        seed: shuffles when given.
        buffer: images shuffled together (rounded up to whole shards).
        epoch: the first epoch's number (a resumed run passes its own).
        labelled: yield `(x, y)`; else `(x,)` (for `predict`).
        workers: Keras's prefetching worker threads.
        full_batches: every batch holds `batch_size` images: the last one is filled up
            with its own first images again, weighted 0, and batches come as
            `(x, y, sample_weight)`. Batch shapes then never change (one compiled
            step), and a batch splits evenly across processes. Compile with a
            loss whose reduction is `"mean_with_sample_weight"` so that the
            repeats change nothing.
        process, processes: with several processes (multi-host training), this
            process's share of every batch: rows `process * batch_size // processes`
            up to the next process's, of a `batch_size` divisible by `processes`.
            Needs `full_batches`.
    """

    def __init__(
        self,
        folders: str | Path | Sequence[str | Path],
        batch_size: int,
        *,
        seed: int | None = None,
        buffer: int = 20_000,
        epoch: int = 0,
        labelled: bool = True,
        workers: int = 2,
        full_batches: bool = False,
        process: int = 0,
        processes: int = 1,
    ):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=16)
        folders = [folders] if isinstance(folders, (str, Path)) else list(folders)
        indexes = [read_index(folder) for folder in folders]
        shapes = {
            (index["kind"], tuple(index["example_shape"]), index["dtype"]) for index in indexes
        }
        if len(shapes) != 1:
            raise DataError(
                f"{folders}: shard sets of example shapes and dtypes {sorted(shapes)}; expected one"
            )
        self.kind, self.example_shape, self.dtype = shapes.pop()
        self.num_classes = max(index["num_classes"] for index in indexes)
        self.shards = [
            (Path(folder) / entry["file"], entry["examples"])
            for folder, index in zip(folders, indexes, strict=True)
            for entry in index["shards"]
        ]
        self.images = sum(n for _, n in self.shards)
        if self.images == 0:
            raise DataError(f"{folders}: the shard sets hold no images")
        if processes > 1 and not (full_batches and labelled):
            raise ValueError("a batch splits across processes only with full_batches (labelled)")
        if batch_size % processes or not 0 <= process < processes:
            raise DataError(
                f"batch size {batch_size} across {processes} processes (this one {process}): "
                "expected a batch size divisible by the process count"
            )
        self.batch_size = batch_size
        self.full_batches, self.process, self.processes = full_batches, process, processes
        self.seed, self.buffer, self.epoch, self.labelled = seed, buffer, epoch, labelled
        self._order: tuple[int, np.ndarray, np.ndarray] | None = None
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        # A batch spans at most two windows; a window holds the fewest shards whose images
        # reach `buffer`, so at most as many as the smallest shards need to reach it. With
        # fewer cached, every batch of a window would read its shards again.
        smallest_first = np.cumsum(sorted(n for _, n in self.shards))
        widest = int(np.searchsorted(smallest_first, buffer)) + 1 if seed is not None else 1
        self._cache_size = 2 * min(widest, len(self.shards))
        self._lock = threading.Lock()

    @property
    def num_batches(self) -> int:
        return math.ceil(self.images / self.batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard, row) of every image in the order epoch `epoch` visits them."""
        sizes = np.array([n for _, n in self.shards])
        if self.seed is None:
            shard_ids = np.repeat(np.arange(len(sizes)), sizes)
            return shard_ids.astype(np.int32), rows_of(sizes)
        rng = np.random.default_rng([self.seed, epoch])
        visit = rng.permutation(len(sizes))
        shard_parts, row_parts, window = [], [], []
        for position, shard in enumerate(visit):
            window.append(shard)
            if sum(sizes[window]) >= self.buffer or position == len(visit) - 1:
                ids = np.repeat(np.array(window), sizes[window]).astype(np.int32)
                rows = rows_of(sizes[window])
                mix = rng.permutation(len(ids))
                shard_parts.append(ids[mix])
                row_parts.append(rows[mix])
                window = []
        return np.concatenate(shard_parts), np.concatenate(row_parts)

    def _shard(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if shard in self._cache:
                self._cache.move_to_end(shard)
                return self._cache[shard]
            loaded = load_arrays(self.shards[shard][0])
            self._cache[shard] = loaded
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return loaded

    def __getitem__(self, batch: int):
        with self._lock:
            if self._order is None or self._order[0] != self.epoch:
                self._order = (self.epoch, *self.order(self.epoch))
            _, shard_ids, rows = self._order
        picked = slice(batch * self.batch_size, (batch + 1) * self.batch_size)
        shard_ids, rows = shard_ids[picked], rows[picked]
        if len(rows) == 0:
            raise IndexError(f"batch {batch} of {self.num_batches}")
        weight = None
        if self.full_batches:
            filled = np.resize(np.arange(len(rows)), self.batch_size)  # repeats its first rows
            weight = (np.arange(self.batch_size) < len(rows)).astype(np.float32)
            per_process = self.batch_size // self.processes
            ours = slice(self.process * per_process, (self.process + 1) * per_process)
            shard_ids, rows, weight = shard_ids[filled][ours], rows[filled][ours], weight[ours]
        x = np.empty((len(rows), *self.example_shape), self.dtype)
        y = np.empty(len(rows), np.int32)
        for shard in dict.fromkeys(shard_ids.tolist()):  # each shard once, in order of use
            in_shard = shard_ids == shard
            shard_x, shard_y = self._shard(shard)
            x[in_shard], y[in_shard] = shard_x[rows[in_shard]], shard_y[rows[in_shard]]
        if not self.labelled:
            return (to_float(x),)
        return (to_float(x), y) if weight is None else (to_float(x), y, weight)

    def epoch_callback(self) -> keras.callbacks.Callback:
        """A callback that tells this sequence which epoch `fit` is in."""
        return _EpochSetter(self)


class _EpochSetter(keras.callbacks.Callback):
    def __init__(self, sequence: ShardSequence):
        super().__init__()
        self.sequence = sequence

    def on_epoch_begin(self, epoch, logs=None):
        self.sequence.epoch = epoch
