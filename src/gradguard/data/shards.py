"""Example sets on disk (images at one byte a pixel), in shards read one at a time.

A shard set is a folder holding `index.json` (the examples' kind, shape and
dtype, class count, one entry per shard) and `shard-NNNNN.npz` files, each an uncompressed
`.npz` of `x` ((n, *example_shape): uint8 images (H, W, C), or float32 sequences
(T, F) or tables (F,)) and `y` (int32, (n,)) of at most `SHARD_BYTES` of `x`.
`.npz` rather than TFRecord: NumPy reads it with `allow_pickle=False`
on any Keras backend (JAX-only machines too), one shard is one file for DVC to
cache, and a shard is loaded whole, so memory is bounded by a few shards, not
by the set.

`gradguard.data.stream.ShardSequence` streams shard sets into `Model.fit`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from gradguard.errors import DataError
from gradguard.io import fingerprint, load_arrays, save_arrays, write_json

SHARD_BYTES = 32 << 20  # of x per shard file: 42,799 grey 28x28 or 2,730 RGB 64x64 images
INDEX = "index.json"
DTYPES = ("uint8", "float32")  # images; sequences and tables


def examples_per_shard(example_shape: Sequence[int], dtype: str = "uint8") -> int:
    """How many examples of `example_shape` and `dtype` fill one shard."""
    return max(1, SHARD_BYTES // (math.prod(example_shape) * np.dtype(dtype).itemsize))


class ShardWriter:
    """Cuts a stream of `(x, y)` chunks into equal shards; `close()` writes the index.

    The layout depends only on the images and their order, never on the chunk
    sizes, so the same data gives the same files byte for byte.

    Args:
        folder: an existing, empty folder.
        example_shape: the shape of every example ((H, W, C) for an image).
        num_classes: the class count of the whole data set (the index records it).
        dtype: of the examples, one of `DTYPES`.
        kind: what an example is: image, sequence or table (`gradguard.kind_keys.KINDS`).
    """

    def __init__(
        self,
        folder: str | Path,
        example_shape: Sequence[int],
        num_classes: int,
        dtype: str = "uint8",
        kind: str = "image",
    ):
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r}; expected one of {DTYPES}")
        self.kind = kind
        self.folder = Path(folder)
        self.example_shape = tuple(int(s) for s in example_shape)
        self.num_classes = int(num_classes)
        self.dtype = dtype
        size = examples_per_shard(self.example_shape, dtype)
        self._x = np.empty((size, *self.example_shape), dtype)
        self._y = np.empty(len(self._x), np.int32)
        self._filled = 0
        self._entries: list[dict] = []

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Append examples (`dtype`, `example_shape`) and their labels."""
        if x.dtype != self.dtype or x.shape[1:] != self.example_shape or len(x) != len(y):
            raise ValueError(
                f"chunk of {x.dtype} {x.shape} with {len(y)} labels; expected {self.dtype} "
                f"(n, {', '.join(map(str, self.example_shape))}) with n labels"
            )
        start = 0
        while start < len(x):
            take = min(len(x) - start, len(self._x) - self._filled)
            self._x[self._filled : self._filled + take] = x[start : start + take]
            self._y[self._filled : self._filled + take] = y[start : start + take]
            self._filled += take
            start += take
            if self._filled == len(self._x):
                self._flush()

    def _flush(self) -> None:
        x, y = self._x[: self._filled], self._y[: self._filled]
        name = f"shard-{len(self._entries):05d}.npz"
        save_arrays(self.folder / name, x=x, y=y)
        self._entries.append({"file": name, "examples": len(y), "fingerprint": fingerprint(x, y)})
        self._filled = 0

    def close(self) -> dict:
        """Write the last shard and the index; return the index."""
        if self._filled:
            self._flush()
        index = {
            "kind": self.kind,
            "example_shape": list(self.example_shape),
            "dtype": self.dtype,
            "num_classes": self.num_classes,
            "examples": sum(entry["examples"] for entry in self._entries),
            "fingerprint": fingerprint(
                np.frombuffer("".join(e["fingerprint"] for e in self._entries).encode(), np.uint8)
            ),
            "shards": self._entries,
        }
        write_json(self.folder / INDEX, index)
        return index


def write_shards(
    folder: str | Path, x: np.ndarray, y: np.ndarray, num_classes: int, kind: str = "image"
) -> dict:
    """Write in-memory arrays (uint8 or float32) as a shard set in the existing folder `folder`."""
    writer = ShardWriter(folder, x.shape[1:], num_classes, str(x.dtype), kind)
    writer.add(x, y)
    return writer.close()


def read_index(folder: str | Path) -> dict:
    """The index of a shard set.

    Raises:
        DataError: naming the folder, when it holds no readable index.
    """
    file = Path(folder) / INDEX
    try:
        index = json.loads(file.read_text(encoding="utf-8"))
        _ = index["kind"], index["example_shape"], index["dtype"], index["num_classes"]
        _ = index["shards"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(
            f"{file}: not a shard index ({error}); run the stage that writes it"
        ) from error
    return index


def iter_shards(folder: str | Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each shard's `(x, y)` in order, one shard in memory at a time."""
    for entry in read_index(folder)["shards"]:
        yield load_arrays(Path(folder) / entry["file"])


def labels(folder: str | Path) -> np.ndarray:
    """All labels of a shard set, in order (the pixels are not read)."""
    parts = [np.zeros(0, np.int32)]
    for entry in read_index(folder)["shards"]:
        parts.append(load_arrays(Path(folder) / entry["file"], ("y",))[0])
    return np.concatenate(parts)


def sample(folder: str | Path, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded uniform sample of at most `count` examples (in set order), one shard at a time."""
    index = read_index(folder)
    total = sum(entry["examples"] for entry in index["shards"])
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(total, size=min(count, total), replace=False))
    xs, ys, start = [], [], 0
    for entry, (x, y) in zip(index["shards"], iter_shards(folder), strict=True):
        rows = chosen[(chosen >= start) & (chosen < start + entry["examples"])] - start
        xs.append(x[rows])
        ys.append(y[rows])
        start += entry["examples"]
    return np.concatenate(xs), np.concatenate(ys)


def to_float(x: np.ndarray) -> np.ndarray:
    """What the models take: uint8 pixels as float32 in [0, 1]; float32 examples as they are."""
    if x.dtype != np.uint8:
        return x
    return x.astype(np.float32) * np.float32(1 / 255)


def rows_of(sizes: np.ndarray) -> np.ndarray:
    """0..n-1 for each size in turn, concatenated."""
    return np.concatenate([np.arange(n, dtype=np.int32) for n in sizes])
