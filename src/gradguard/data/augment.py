"""Seeded, deterministic augmentation of the training split with Keras preprocessing layers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gradguard.data.shards import ShardWriter, iter_shards, read_index
from gradguard.io import atomic_path, write_json
from gradguard.kind_keys import check_kind
from gradguard.params import AugmentParams

_BATCH = 256  # fixed, so the random stream (and thus the bytes) never depends on memory


def build_augmenter(params: AugmentParams, seed: int) -> list:
    """The random Keras preprocessing layers whose strength is non-zero, in order.

    Rotation, shift and zoom use `RandomRotation`, `RandomTranslation` and
    `RandomZoom` (bilinear, black fill: the digits' background); noise uses
    `GaussianNoise`. A layer with strength 0 is left out, so zero strength is
    exactly the identity.
    """
    import keras

    layers = []
    if params.rotation:
        layers.append(
            keras.layers.RandomRotation(params.rotation / 360.0, fill_mode="constant", seed=seed)
        )
    if params.shift:
        layers.append(
            keras.layers.RandomTranslation(
                params.shift, params.shift, fill_mode="constant", seed=seed + 1
            )
        )
    if params.zoom:
        layers.append(keras.layers.RandomZoom(params.zoom, fill_mode="constant", seed=seed + 2))
    if params.noise_std:
        layers.append(keras.layers.GaussianNoise(params.noise_std, seed=seed + 3))
    return layers


class Augmenter:
    """Seeded augmented copies of image batches, for data streamed a shard at a time.

    The layers' random stream runs on across calls: the bytes depend on the
    seed, the images and the calls' sizes (a shard set's layout fixes those).
    """

    def __init__(self, params: AugmentParams, seed: int):
        self.params = params
        self.layers = build_augmenter(params, seed)

    def copy(self, x: np.ndarray) -> np.ndarray:
        """One augmented copy of `x`: uint8 in, uint8 out (rounded); float [0, 1] in, float out."""
        from keras import ops

        integer = x.dtype == np.uint8
        out = np.empty_like(x)
        for i in range(0, len(x), _BATCH):
            batch = x[i : i + _BATCH].astype(np.float32) / (255.0 if integer else 1.0)
            for layer in self.layers:
                batch = layer(batch, training=True)
            batch = np.clip(ops.convert_to_numpy(batch), 0.0, 1.0)
            out[i : i + _BATCH] = np.rint(batch * 255.0) if integer else batch
        return out


def augment(x: np.ndarray, y: np.ndarray, params: AugmentParams, seed: int):
    """Return the training set with `params.copies` augmented copies of each image appended.

    Args:
        x: images (N, H, W, C): uint8 0..255 or float32 in [0, 1].
        y: their labels (N,).
        params: augmentation strengths.
        seed: the run's seed; the same seed gives the same bytes.

    Returns:
        `(x_out, y_out)` with N * (1 + copies) images of `x`'s dtype: the
        originals first, then each copy in order; labels follow their images.
    """
    if params.copies == 0:
        return x, y
    augmenter = Augmenter(params, seed)
    copies = [augmenter.copy(x) for _ in range(params.copies)]
    return np.concatenate([x, *copies]), np.tile(y, params.copies + 1)


def augment_shards(
    source: str | Path,
    out: str | Path,
    params: AugmentParams,
    seed: int,
    progress: Callable[[str], None] = print,
) -> dict:
    """Write `params.copies` augmented copies of a shard set to `out` (a shard set), atomically.

    The copies only: a trainer reads the source and these together. One source
    shard is in memory at a time; `progress` hears of each shard when there are
    several.

    Returns:
        `{"images": source images, "written": augmented images}`.
    """
    index = read_index(source)
    check_kind(index["kind"], augment=params)  # augmentation is for images
    augmenter = Augmenter(params, seed) if params.copies else None
    with atomic_path(out) as folder:
        folder.mkdir()
        writer = ShardWriter(
            folder, index["example_shape"], index["num_classes"], index["dtype"], index["kind"]
        )
        shards = len(index["shards"])
        for number, (x, y) in enumerate(iter_shards(source) if augmenter else (), 1):
            for _ in range(params.copies):
                writer.add(augmenter.copy(x), y)
            if shards > 1:  # a long stage shows progress
                progress(f"augment: shard {number}/{shards}")
        written = writer.close()
        meta = {
            "augment": dataclasses.asdict(params),
            "seed": seed,
            "images": written["examples"],
            "fingerprint": written["fingerprint"],
        }
        write_json(folder / "meta.json", meta)
    return {"images": index["examples"], "written": written["examples"]}
