"""Augmentation: shapes and labels kept, seeded bytes, zero strength is the identity."""

from __future__ import annotations

import numpy as np

from gradguard.data.augment import augment
from gradguard.params import AugmentParams


def images(n=6, size=10):
    rng = np.random.default_rng(0)
    return rng.random((n, size, size, 1), dtype=np.float32), np.arange(n, dtype=np.int32) % 3


def test_copies_are_appended_with_their_labels_and_stay_in_range():
    x, y = images()
    out_x, out_y = augment(x, y, AugmentParams(copies=2, noise_std=0.1), seed=1)
    assert out_x.shape == (18, 10, 10, 1) and out_x.dtype == np.float32
    assert out_y.tolist() == y.tolist() * 3
    np.testing.assert_array_equal(out_x[:6], x)  # originals first, untouched
    assert out_x.min() >= 0.0 and out_x.max() <= 1.0
    assert not np.allclose(out_x[6:12], x)  # the copies really changed


def test_same_seed_same_bytes_other_seed_other_bytes():
    x, y = images()
    params = AugmentParams(copies=1, rotation=15.0, shift=0.1, zoom=0.1, noise_std=0.05)
    first = augment(x, y, params, seed=5)[0]
    assert first.tobytes() == augment(x, y, params, seed=5)[0].tobytes()
    assert first.tobytes() != augment(x, y, params, seed=6)[0].tobytes()


def test_zero_strength_is_the_identity_and_zero_copies_pass_through():
    x, y = images()
    zero = AugmentParams(copies=1, rotation=0.0, shift=0.0, zoom=0.0, noise_std=0.0)
    out_x, _ = augment(x, y, zero, seed=0)
    np.testing.assert_array_equal(out_x[6:], x)
    same_x, same_y = augment(x, y, AugmentParams(copies=0), seed=0)
    assert same_x is x and same_y is y


def test_bytes_in_bytes_out_rounded_from_the_float_transform():
    x, y = images()
    pixels = np.rint(x * 255).astype(np.uint8)
    params = AugmentParams(copies=1, rotation=20.0, shift=0.0, zoom=0.0)
    out, _ = augment(pixels, y, params, seed=3)
    assert out.dtype == np.uint8 and out[:6].tobytes() == pixels.tobytes()
    as_float = augment(pixels.astype(np.float32) / 255, y, params, seed=3)[0]
    np.testing.assert_array_equal(out[6:], np.rint(as_float[6:] * 255).astype(np.uint8))
