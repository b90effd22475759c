"""Sequences at scale: each stage's wall time and peak memory on 100,000 sequences (50, 8).

Makes its own data (random walks whose class is where the first feature ends),
runs the stage commands as `dvc repro` would (one process per stage, as
benchmarks/scale.py does), with the committed params but `data.source: npz`,
`augment.copies: 0`, and one epoch of the built-in GRU (`model.rnn: gru`, 64
units). Prints one row per stage: sequences, wall s, peak RSS, sequences/s.

    python benchmarks/sequences.py                     # about 5 minutes on 2 cores
    python benchmarks/sequences.py --count 20000       # a quick look
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.scale import STAGE_ARGS, GiB, run_stage

ROOT = Path(__file__).resolve().parents[1]


def walks(count: int, steps: int, features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random walks (float32), made in chunks; class 1 where the first feature ends above 0."""
    rng = np.random.default_rng(seed)
    x = np.empty((count, steps, features), np.float32)
    for start in range(0, count, 10_000):
        part = rng.normal(size=(min(10_000, count - start), steps, features)).cumsum(axis=1)
        x[start : start + len(part)] = part
    return x, (x[:, -1, 0] > 0).astype(np.int64)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--count", type=int, default=100_000)
    cli.add_argument("--steps", type=int, default=50)
    cli.add_argument("--features", type=int, default=8)
    knobs = cli.parse_args()
    with tempfile.TemporaryDirectory(prefix="gradguard-seq-") as scratch:
        work = Path(scratch)
        (work / "raw").mkdir()
        x, y = walks(knobs.count, knobs.steps, knobs.features, seed=0)
        np.savez(work / "raw" / "walks.npz", x=x, y=y)
        del x
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["data"].update(source="npz", path="raw/walks.npz")
        params["augment"]["copies"] = 0
        params["train"].update(epochs=1, patience=1)
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        train, test = int(knobs.count * 0.7), int(knobs.count * 0.15)  # the split's shares
        counts = {"prepare": knobs.count, "augment": 0, "train": train, "evaluate": test}
        rows = []
        for stage, args in STAGE_ARGS.items():
            wall, peak = run_stage(stage, ["--params", "params.yaml", *args], work)
            rows.append((stage, counts[stage], wall, peak))
        shape = f"({knobs.steps}, {knobs.features})"
        print(f"\n{knobs.count} sequences {shape}, one epoch of the built-in GRU (64 units)\n")
        print("| stage | sequences | wall s | peak RSS GiB | sequences/s |")
        print("|---|---|---|---|---|")
        for stage, n, wall, peak in rows:
            rate = f"{n / wall:,.0f}" if n else "-"
            print(f"| {stage} | {n:,} | {wall:.1f} | {peak / GiB:.2f} | {rate} |")


if __name__ == "__main__":
    main()
