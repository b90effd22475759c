"""What the one-device-versus-several tests share: the clipping modes, the data, the model.

Imported by tests/test_tf_distribute.py (`tf.distribute` replicas) and
tests/multihost_worker.py (JAX processes); framework-free until `mlp()` is called.
"""

from __future__ import annotations

import numpy as np

# Every GradientGuard mode, with bounds that clip this data.
MODES = {
    "none": {},
    "value": {"clip_value": 0.05},
    "norm": {"clip_norm": 0.3},
    "global_norm": {"clip_norm": 0.3},
    "agc": {"agc_lambda": 0.01, "agc_exclude_last": False},
    "autoclip": {"autoclip_percentile": 50.0},
    "zscore": {"zscore_warmup": 2, "zscore_threshold": 0.5},
}
GLOBAL_BATCH = 8


def data():
    """32 rows: 4 global batches of 8, whose two halves have different gradients."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    # The first half (replica 0's shard of each global batch of 8) has large targets,
    # so the replicas' local gradients differ: per-replica clipping gives another answer.
    y = np.where(np.arange(32)[:, None] % 8 < 4, 5.0, 0.5) * rng.normal(size=(32, 2))
    # Later batches have larger targets, so the gradient norm grows and ZClip sees spikes.
    y *= 1.0 + (np.arange(32)[:, None] // 8)
    return x, y.astype("float32")


def mlp():
    """A 3->4->2 MLP with fixed initial weights."""
    import keras

    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(
                4,
                activation="tanh",
                kernel_initializer=keras.initializers.RandomNormal(seed=1),
                bias_initializer="ones",
            ),
            keras.layers.Dense(2, kernel_initializer=keras.initializers.RandomNormal(seed=2)),
        ]
    )
