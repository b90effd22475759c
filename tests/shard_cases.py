"""Tiny shard sets for the shard and stream tests: images that name themselves.

The `small_shards` fixture (conftest.py) makes shards of 10 such images.
"""

from __future__ import annotations

import numpy as np


def images(n, shape=(2, 2, 1)):
    x = (np.arange(n * int(np.prod(shape))) % 251).astype(np.uint8).reshape(n, *shape)
    x[:, 0, 0, 0] = np.arange(n) % 256  # pixel (0, 0) names the image
    return x, (np.arange(n) % 3).astype(np.int32)


def visit(sequence):
    """The image ids of one epoch, batch by batch."""
    return [round(v * 255) for i in range(len(sequence)) for v in sequence[i][0][:, 0, 0, 0]]
