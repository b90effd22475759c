"""Train-step time of the default CNN: no clipping, Keras's global_clipnorm, GradientGuard modes.

All variants live in one process and are timed interleaved, in a shuffled order each
round, so machine noise hits them alike. Each ms/step cell is the median over rounds of
the mean step time in a round; each ratio is the median over rounds of the variant's
time over Keras's `global_clipnorm` in the same round (paired, so a slow round cancels).
Each model compiles as `model.compile` does by default (`jit_compile="auto"`, as the
pipeline trains): one XLA program a step on JAX, TensorFlow's graph without XLA on a CPU.
`--jit` compiles every variant with XLA (`jit_compile=True`); `--xla-pairs` times each
variant with and without it.

    python benchmarks/step_time.py [--rounds 15] [--steps 20] [--jit | --xla-pairs]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from gradguard import GradientGuard
from gradguard.params import ModelParams
from gradguard.training.families import build_cnn

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


def make_step(optimizer, x, y, jit_compile="auto"):
    """A compiled train step of the default CNN (params.yaml's model section)."""
    params = ModelParams(filters=(32, 64), dense=128, dropout=0.3)
    model = build_cnn(x.shape[1:], 10, params, seed=0)
    model.compile(
        optimizer=optimizer, loss="sparse_categorical_crossentropy", jit_compile=jit_compile
    )
    return model, lambda: model.train_on_batch(x, y)


def time_rounds(steps: dict, rounds: int, count: int, seed: int = 0) -> dict[str, list[float]]:
    """Seconds per step of each variant, one value per round, the order shuffled each round."""
    order = list(steps)
    shuffle = random.Random(seed).shuffle
    times = {name: [] for name in steps}
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            start = time.perf_counter()
            for _ in range(count):
                steps[name]()
            times[name].append((time.perf_counter() - start) / count)
    return times


def paired_ratio(times: dict, name: str, reference: str) -> float:
    """The median over rounds of `name`'s time over `reference`'s in the same round."""
    return statistics.median(a / b for a, b in zip(times[name], times[reference], strict=True))


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--rounds", type=int, default=15)
    cli.add_argument("--steps", type=int, default=20, help="steps per variant per round")
    cli.add_argument("--batch", type=int, default=64)
    mode = cli.add_mutually_exclusive_group()
    mode.add_argument("--jit", action="store_true", help="every variant with jit_compile=True")
    mode.add_argument("--xla-pairs", action="store_true", help="each variant with and without")
    args = cli.parse_args()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, args.batch).astype(np.int32)
    settings = [(False, ""), (True, " (XLA)")] if args.xla_pairs else [(args.jit or "auto", "")]
    models, steps = {}, {}
    for name, factory in VARIANTS.items():
        for jit, suffix in settings:
            models[name + suffix], steps[name + suffix] = make_step(factory(), x, y, jit)
    for step in steps.values():  # compile and warm up
        for _ in range(10):
            step()
    times = time_rounds(steps, args.rounds, args.steps)
    if args.xla_pairs:
        compiled = "with and without XLA"
    else:  # what "auto" resolved to, e.g. XLA on JAX, none on TensorFlow on a CPU
        compiled = "XLA" if models[REFERENCE].jit_compile else "no XLA"
    print(
        f"backend {keras.backend.backend()} ({compiled}), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, batch "
        f"{args.batch}, {args.rounds} rounds x {args.steps} steps, shuffled each round"
    )
    print()
    print("| variant | ms/step (median of rounds) | vs keras global_clipnorm (median paired) |")
    print("|---|---|---|")
    for name, values in times.items():
        reference = REFERENCE + (" (XLA)" if name.endswith(" (XLA)") else "")
        ratio = paired_ratio(times, name, reference)
        print(f"| {name} | {statistics.median(values) * 1e3:.2f} | {ratio:.3f}x |")


if __name__ == "__main__":
    main()
