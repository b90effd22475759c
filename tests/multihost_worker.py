"""One process of tests/test_multihost.py: train the test MLP for every scenario.

Run as `python -m tests.multihost_worker OUT` with the JAX_* cluster variables set
(several processes) or unset (one process, the reference). Writes OUT as an `.npz`
of each run's final weights and guard statistics.
"""

from __future__ import annotations

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"

import numpy as np

from gradguard.training.multihost import cluster_from_env, initialize
from tests import parallel_cases
from tests.parallel_cases import GLOBAL_BATCH, MODES


def data(scenario: str = "clean"):
    """The shared data; for "nan" a NaN, for "overflow" a float16 overflow, in process 1's
    rows of the second global batch only."""
    x, y = parallel_cases.data()
    if scenario == "nan":
        x[13] = np.nan  # the second global batch's 6th row: process 1's half only
    if scenario == "spike":
        y[28:32] *= 1000.0  # the last global batch, process 1's half only: a finite spike
    if scenario == "overflow":
        # Targets whose loss gradient, times any loss scale >= 1, is beyond float16 (65504).
        y[12:16] = 3e4
    return x, y


def own_rows(x, y, cluster):
    """This process's rows of every global batch, and its batch size (all of it alone)."""
    if cluster is None:
        return x, y, GLOBAL_BATCH
    share = GLOBAL_BATCH // cluster.processes
    rows = np.concatenate(
        [
            np.arange(start + cluster.process * share, start + (cluster.process + 1) * share)
            for start in range(0, len(x), GLOBAL_BATCH)
        ]
    )
    return x[rows], y[rows], share


def mode_runs(keras, x, y, batch, modes, prefix="") -> dict:
    """Each mode's final weights and statistics after one epoch of SGD on (x, y)."""
    from gradguard import GradientGuard
    from gradguard.training.callbacks import read_stats

    results = {}
    for mode in modes:
        keras.utils.set_random_seed(1)
        model = parallel_cases.mlp()
        guard = GradientGuard(keras.optimizers.SGD(0.1), mode=mode, **MODES[mode])
        model.compile(optimizer=guard, loss="mse")
        model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
        for i, weight in enumerate(model.weights):
            results[f"{prefix}{mode}/w{i}"] = np.asarray(weight.value)
        stats = read_stats(guard)
        for key in ("pre_clip_norm", "clipped_steps", "skipped_steps"):
            results[f"{prefix}{mode}/{key}"] = np.asarray(stats[key])
    return results


def rollback_run(keras, x, y, batch) -> dict:
    """`train.on_explosion: rollback`: a spike in the last batch sends the run back to the
    snapshot of the step before (snapshot_every=1) and halves the learning rate."""
    from gradguard import GradientGuard, read_stats
    from gradguard.training.recovery import ExplosionRecovery

    keras.utils.set_random_seed(1)
    model = parallel_cases.mlp()
    guard = GradientGuard(keras.optimizers.SGD(0.1), mode="none", spike_window=4)
    recovery = ExplosionRecovery(guard, "rollback", snapshot_every=1, keep=1)
    model.compile(optimizer=guard, loss="mse")
    model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[recovery])
    results = {f"rollback/w{i}": np.asarray(w.value) for i, w in enumerate(model.weights)}
    results["rollback/rollbacks"] = np.asarray(recovery.rollbacks)
    results["rollback/to_step"] = np.asarray([e.get("to_step", -1) for e in recovery.events])
    results["rollback/learning_rate"] = np.asarray(guard.inner_optimizer.learning_rate.value)
    results["rollback/spikes"] = np.asarray(read_stats(guard)["spikes"])
    return results


def overflow_run(keras, x, y, batch) -> dict:
    """Mixed float16 with the guarded loss scale (initial 1024), Adam, global-norm clipping."""
    from gradguard import GradientGuard, GuardedLossScaleOptimizer, read_stats

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
    """Every scenario in one process (one cluster start-up): every mode on clean data, a NaN
    in process 1's rows (keys "nan/..."), a spike there with rollback ("rollback/..."), then a
    float16 overflow there ("overflow/...")."""
    cluster = cluster_from_env() if os.environ.get("JAX_NUM_PROCESSES") else None
    if cluster:
        initialize(cluster)
    import keras

    results = mode_runs(keras, *own_rows(*data(), cluster), MODES)
    results |= mode_runs(keras, *own_rows(*data("nan"), cluster), ["global_norm"], "nan/")
    if cluster:  # the agreement check: silent on equal weights, loud on a process's own id
        from gradguard.errors import ClusterError
        from gradguard.training.multihost import check_agreement

        check_agreement([results[key].sum() for key in sorted(results)], "results")
        try:
            check_agreement([0.0, cluster.process], "ids")
        except ClusterError as error:
            results["agreement/error"] = np.array(str(error))
    results |= rollback_run(keras, *own_rows(*data("spike"), cluster))
    results |= overflow_run(keras, *own_rows(*data("overflow"), cluster))  # last: mixed policy
    np.savez(out, **results)


if __name__ == "__main__":
    main(sys.argv[1])
