"""Seeded, deterministic augmentation of the training split with Keras preprocessing layers."""

from __future__ import annotations

import numpy as np

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


def augment(x: np.ndarray, y: np.ndarray, params: AugmentParams, seed: int):
    """Return the training set with `params.copies` augmented copies of each image appended.

    Args:
        x: float32 images (N, H, W, 1) in [0, 1].
        y: their labels (N,).
        params: augmentation strengths.
        seed: the run's seed; the same seed gives the same bytes.

    Returns:
        `(x_out, y_out)` with N * (1 + copies) images: the originals first, then
        each copy in order; labels follow their images. Pixels stay in [0, 1].
    """
    if params.copies == 0:
        return x, y
    from keras import ops

    layers = build_augmenter(params, seed)

    def transform(batch):
        for layer in layers:
            batch = layer(batch, training=True)
        return ops.convert_to_numpy(batch)

    copies = []
    for _ in range(params.copies):
        batches = [transform(x[i : i + _BATCH]) for i in range(0, len(x), _BATCH)]
        copies.append(np.clip(np.concatenate(batches), 0.0, 1.0).astype(np.float32))
    return np.concatenate([x, *copies]), np.tile(y, params.copies + 1)
