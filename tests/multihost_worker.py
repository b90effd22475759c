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

from gradguard.training.multihost import cluster_from_env, initialize
from tests import parallel_cases
from tests.parallel_cases import GLOBAL_BATCH, MODES


def data():
    """The shared data, with a NaN (MULTIHOST_NAN) or float16 overflow (MULTIHOST_OVERFLOW)
    in process 1's rows of the second global batch only."""
    x, y = parallel_cases.data()
    if os.environ.get("MULTIHOST_NAN"):
        x[13] = np.nan  # the second global batch's 6th row: process 1's half only
    if os.environ.get("MULTIHOST_OVERFLOW"):
        # Targets whose loss gradient, times any loss scale >= 1, is beyond float16 (65504).
        y[12:16] = 3e4
    return x, y


def overflow_run(keras, x, y, batch) -> dict:
    """Mixed float16 with the guarded loss scale (initial 1024), Adam, global-norm clipping."""
    from gradguard import GradientGuard
    from gradguard.loss_scale import GuardedLossScaleOptimizer
    from gradguard.training.callbacks import read_stats

    keras.utils.set_random_seed(1)
    keras.config.set_dtype_policy("mixed_float16")
    model = parallel_cases.mlp()
    guard = GradientGuard(keras.optimizers.Adam(0.01), mode="global_norm", clip_norm=1.0)
    scaler = GuardedLossScaleOptimizer(guard, initial_scale=1024.0)
    model.compile(optimizer=scaler, loss="mse")
    model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    results = {f"overflow/w{i}": np.asarray(w.value) for i, w in enumerate(model.weights)}
    results["overflow/scale"] = np.asarray(scaler.dynamic_scale.value)
    results["overflow/applied"] = np.asarray(guard.iterations.value)
    results["overflow/skipped_steps"] = np.asarray(read_stats(guard)["skipped_steps"])
    return results


def main(out: str) -> None:
    cluster = cluster_from_env() if os.environ.get("JAX_NUM_PROCESSES") else None
    if cluster:
        initialize(cluster)
    import keras

    from gradguard import GradientGuard
    from gradguard.training.callbacks import read_stats

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
    if os.environ.get("MULTIHOST_OVERFLOW"):
        np.savez(out, **overflow_run(keras, x, y, batch))
        return
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
    if cluster:  # the agreement check: silent on equal weights, loud on a process's own id
        from gradguard.errors import ClusterError
        from gradguard.training.multihost import check_agreement

        check_agreement([results[key].sum() for key in sorted(results)], "results")
        try:
            check_agreement([0.0, cluster.process], "ids")
        except ClusterError as error:
            results["agreement/error"] = np.array(str(error))
    np.savez(out, **results)


if __name__ == "__main__":
    main(sys.argv[1])
