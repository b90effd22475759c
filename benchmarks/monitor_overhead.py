"""Epoch time of the default CNN with and without gradguard's monitoring callbacks.

One model (params.yaml's model section, Adam, GradientGuard global_norm at 1.0) is
trained with each set of callbacks in turn, round-robin, so the variants differ only
in their callbacks and machine noise hits them alike. A round is one `fit` of
`--epochs` epochs of `--steps` batches; an epoch is timed from the first callback's
`on_epoch_begin` to the last callback's `on_epoch_end` (so `fit`'s own set-up is out
and the callbacks' epoch work is in). Each cell is the median over all timed epochs
of the time per step. Machine noise between epochs is often larger than the callbacks'
cost, so the time spent inside the callbacks' hooks is measured as well (a direct
count, not a difference of two noisy numbers; it leaves out what a per-batch read
costs by waiting for the step to finish).

The callbacks are the ones `stages/train.py` uses:
    - GradientStatsLogger: zeroes the device accumulators as an epoch begins and
      reads them once as it ends (epoch statistics, per-layer gradient and weight
      norms, the per-step log), handing the step log to the stage's TSV writer;
    - DivergenceMonitor: reads one scalar per batch (as TerminateOnNaN does);
    - ExplosionRecovery("rollback"): reads two scalars per batch and copies the
      weights and optimizer slots to host memory every 50 updates.

    python benchmarks/monitor_overhead.py [--rounds 7] [--epochs 3] [--steps 60]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from gradguard import GradientGuard
from gradguard.params import ModelParams
from gradguard.training.callbacks import DivergenceMonitor, GradientStatsLogger, read_stats
from gradguard.training.families import build_cnn
from gradguard.training.live import LiveFolder, append_step_log
from gradguard.training.recovery import ExplosionRecovery

REFERENCE = "no callbacks"


def logger(guard, folder):
    return GradientStatsLogger(guard, lambda rows: append_step_log(LiveFolder(folder), rows))


VARIANTS = {
    # name -> the callbacks, given the guard and a scratch folder
    REFERENCE: lambda guard, folder: [],
    "GradientStatsLogger (per epoch, per layer, step log)": lambda guard, folder: [
        logger(guard, folder)
    ],
    "+ DivergenceMonitor (the pipeline's set)": lambda guard, folder: [
        logger(guard, folder),
        DivergenceMonitor(guard),
    ],
    "+ ExplosionRecovery rollback (on_explosion=rollback)": lambda guard, folder: [
        logger(guard, folder),
        DivergenceMonitor(guard),
        ExplosionRecovery(guard, "rollback", snapshot_every=50),
    ],
}


class EpochClock(keras.callbacks.Callback):
    """Put first and last in the callback list: times each epoch, callbacks included."""

    def __init__(self, times, start):
        super().__init__()
        self.times, self.start = times, start

    def on_epoch_begin(self, epoch, logs=None):
        if self.start:
            self.times.append(-time.perf_counter())

    def on_epoch_end(self, epoch, logs=None):
        if not self.start:
            self.times[-1] += time.perf_counter()


HOOKS = ("on_train_begin", "on_epoch_begin", "on_train_batch_end", "on_epoch_end")


def timed(callback, spent: list):
    """`callback` with the time inside its hooks added to spent[0] (overridden hooks only)."""
    for name in HOOKS:
        hook = getattr(callback, name)
        if getattr(hook, "_is_default", False):
            continue

        def wrapper(*args, _hook=hook, **kwargs):
            start = time.perf_counter()
            _hook(*args, **kwargs)
            spent[0] += time.perf_counter() - start

        setattr(callback, name, wrapper)
    return callback


def make_round(model, callbacks, x, y, batch, epochs, folder, times, spent):
    """`fit` of `model` with these callbacks, timing each epoch into `times`."""
    chosen = [EpochClock(times, True)]
    chosen += [timed(c, spent) for c in callbacks(model.optimizer, folder)]
    chosen.append(EpochClock(times, False))
    return lambda: model.fit(
        x, y, batch_size=batch, epochs=epochs, shuffle=False, verbose=0, callbacks=chosen
    )


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--rounds", type=int, default=7)
    cli.add_argument("--epochs", type=int, default=3, help="epochs per round")
    cli.add_argument("--steps", type=int, default=60, help="steps per epoch")
    cli.add_argument("--batch", type=int, default=64)
    args = cli.parse_args()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((args.steps * args.batch, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, len(x)).astype(np.int32)
    model = build_cnn(x.shape[1:], 10, ModelParams(filters=(32, 64), dense=128), seed=0)
    guard = GradientGuard(keras.optimizers.Adam(1e-3), clip_norm=1.0)
    model.compile(optimizer=guard, loss="sparse_categorical_crossentropy")
    times = {name: [] for name in VARIANTS}
    spent = {name: [0.0] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as scratch:
        rounds = {
            name: make_round(
                model,
                callbacks,
                x,
                y,
                args.batch,
                args.epochs,
                f"{scratch}/{i}",
                times[name],
                spent[name],
            )
            for i, (name, callbacks) in enumerate(VARIANTS.items())
        }
        for name, fit_round in rounds.items():  # trace, compile and warm up
            fit_round()
            times[name].clear()
            spent[name][0] = 0.0
        for _ in range(args.rounds):
            for fit_round in rounds.values():
                fit_round()
    median = {name: statistics.median(values) / args.steps for name, values in times.items()}
    steps = args.rounds * args.epochs * args.steps
    inside = {name: value[0] / steps for name, value in spent.items()}
    print(
        f"backend {keras.backend.backend()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, batch {args.batch}, {args.steps} steps per epoch, "
        f"{args.rounds} rounds x {args.epochs} epochs, median epoch time per step"
    )
    print(f"spikes seen by the guard over the whole benchmark: {read_stats(guard)['spikes']}")
    print()
    print("| callbacks | ms/step | vs no callbacks | ms/step inside the hooks | share of a step |")
    print("|---|---|---|---|---|")
    for name, value in median.items():
        print(
            f"| {name} | {value * 1e3:.2f} | {value / median[REFERENCE]:.3f}x "
            f"| {inside[name] * 1e3:.3f} | {inside[name] / median[REFERENCE]:.1%} |"
        )


if __name__ == "__main__":
    main()
