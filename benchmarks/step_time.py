"""Train-step time of the default CNN: no clipping, Keras's global_clipnorm, GradientGuard modes.

All variants live in one process and are timed interleaved (round-robin), so machine
noise hits them alike; each cell is the median over rounds of the mean step time in
a round. Ratios are against Keras's built-in `global_clipnorm`.

    python benchmarks/step_time.py [--rounds 7] [--steps 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from gradguard import GradientGuard
from gradguard.params import ModelParams
from gradguard.training.models import build_cnn

VARIANTS = {
    "adam, no clipping": lambda: keras.optimizers.Adam(1e-3),
    "adam, keras global_clipnorm=1": lambda: keras.optimizers.Adam(1e-3, global_clipnorm=1.0),
    "guard none (stats, skip)": lambda: GradientGuard(keras.optimizers.Adam(1e-3)),
    "guard value": lambda: GradientGuard(keras.optimizers.Adam(1e-3), clip_value=0.01),
    "guard norm": lambda: GradientGuard(keras.optimizers.Adam(1e-3), mode="norm", clip_norm=1.0),
    "guard global_norm": lambda: GradientGuard(keras.optimizers.Adam(1e-3), clip_norm=1.0),
    "guard agc": lambda: GradientGuard(keras.optimizers.Adam(1e-3), mode="agc"),
    "guard autoclip": lambda: GradientGuard(keras.optimizers.Adam(1e-3), mode="autoclip"),
    "guard zscore": lambda: GradientGuard(keras.optimizers.Adam(1e-3), mode="zscore"),
}
REFERENCE = "adam, keras global_clipnorm=1"


def make_step(optimizer, x, y):
    """A compiled train step of the default CNN (params.yaml's model section)."""
    params = ModelParams(filters=(32, 64), dense=128, dropout=0.3)
    model = build_cnn(x.shape[1:], 10, params, seed=0)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return lambda: model.train_on_batch(x, y)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--rounds", type=int, default=7)
    cli.add_argument("--steps", type=int, default=30, help="steps per variant per round")
    cli.add_argument("--batch", type=int, default=64)
    args = cli.parse_args()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, args.batch).astype(np.int32)
    steps = {name: make_step(factory(), x, y) for name, factory in VARIANTS.items()}
    for step in steps.values():  # compile and warm up
        for _ in range(10):
            step()
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"backend {keras.backend.backend()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, batch {args.batch}, {args.rounds} rounds x {args.steps} "
        "steps, median of round means"
    )
    print()
    print("| variant | ms/step | vs keras global_clipnorm |")
    print("|---|---|---|")
    for name, value in median.items():
        print(f"| {name} | {value * 1e3:.2f} | {value / median[REFERENCE]:.3f}x |")


if __name__ == "__main__":
    main()
