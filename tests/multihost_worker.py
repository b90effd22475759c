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
from tests import parallel_cases
from tests.parallel_cases import GLOBAL_BATCH, MODES


def data():
    """The shared data, with a NaN in process 1's rows when MULTIHOST_NAN is set."""
    x, y = parallel_cases.data()
    if os.environ.get("MULTIHOST_NAN"):
        x[13] = np.nan  # the second global batch's 6th row: process 1's half only
    return x, y


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
        model = parallel_cases.mlp()
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
