"""One process of tests/test_multihost.py: train the test MLP for every clipping mode.

Run as `python -m tests.multihost_worker OUT` with the JAX_* cluster variables set
(several processes) or unset (one process, the reference). Writes OUT as an `.npz`
of each mode's final weights and guard statistics.
"""

from __future__ import annotations

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"

import numpy as np

from gradguard.multihost import cluster_from_env, initialize

GLOBAL_BATCH = 8
MODES = {
    "none": {},
    "value": {"clip_value": 0.05},
    "norm": {"clip_norm": 0.3},
    "global_norm": {"clip_norm": 0.3},
    "agc": {"agc_lambda": 0.01, "agc_exclude_last": False},
    "autoclip": {"autoclip_percentile": 50.0},
    "zscore": {"zscore_warmup": 2, "zscore_threshold": 0.5},
}


def data():
    """tests/test_distribute.py's data: replica-dependent targets that grow batch by batch."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = np.where(np.arange(32)[:, None] % 8 < 4, 5.0, 0.5) * rng.normal(size=(32, 2))
    y *= 1.0 + (np.arange(32)[:, None] // 8)
    if os.environ.get("MULTIHOST_NAN"):
        x[13] = np.nan  # the second global batch's 6th row: process 1's half only
    return x, y.astype("float32")


def main(out: str) -> None:
    cluster = cluster_from_env() if os.environ.get("JAX_NUM_PROCESSES") else None
    if cluster:
        initialize(cluster)
    import keras

    from gradguard import GradientGuard
    from gradguard.callbacks import read_stats

    x, y = data()
    if cluster:  # this process's rows of every global batch
        share = GLOBAL_BATCH // cluster.processes
        rows = np.concatenate(
            [
                np.arange(start + cluster.process * share, start + (cluster.process + 1) * share)
                for start in range(0, len(x), GLOBAL_BATCH)
            ]
        )
        x, y, batch = x[rows], y[rows], share
    else:
        batch = GLOBAL_BATCH
    results = {}
    for mode, knobs in MODES.items():
        keras.utils.set_random_seed(1)
        model = keras.Sequential(
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
        guard = GradientGuard(keras.optimizers.SGD(0.1), mode=mode, **knobs)
        model.compile(optimizer=guard, loss="mse")
        model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
        for i, weight in enumerate(model.weights):
            results[f"{mode}/w{i}"] = np.asarray(weight.value)
        stats = read_stats(guard)
        for key in ("pre_clip_norm", "clipped_steps", "skipped_steps"):
            results[f"{mode}/{key}"] = np.asarray(stats[key])
    np.savez(out, **results)


if __name__ == "__main__":
    main(sys.argv[1])
