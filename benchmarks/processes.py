"""The train stage on the digits: one process (TensorFlow, JAX) against two local processes (JAX).

    python benchmarks/processes.py [--epochs 30] [--repeats 1]

Prepares and augments the bundled digits with the default params in a temporary folder,
then runs `train` (and `evaluate` on its model) as:

- `none`: the default, `train.distribute: none` (TensorFlow);
- `multihost x1`: `train.distribute: multihost` in one process (JAX);
- `multihost x2`: the same through `python -m stages.launch --workers 2` (two JAX processes
  on this host, Gloo collectives).

Prints, per run: the stage's wall time (start-up included), the fit's own time (the
stage's summary line) and per epoch, epochs, best val_loss, test accuracy; and how far
the two-process run's per-epoch curves are from the one-process run's (the same global
batches, so they differ by the order of the floating-point all-reduce alone).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from benchmarks.scale import STAGE_ARGS  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'src'}")


def stage(name: str, work: Path, params: Path, launch: list[str] = ()) -> tuple[float, str]:
    """Run a stage in `work`; its wall time and standard output."""
    args = [sys.executable, "-m", f"stages.{name}", "--params", str(params), *STAGE_ARGS[name]]
    started = time.perf_counter()
    done = subprocess.run(
        [*launch, *args], cwd=work, env=ENV, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return wall, done.stdout


def curves(live: Path) -> dict[str, np.ndarray]:
    """Each per-epoch DVCLive curve of the run."""
    found = {}
    for file in sorted((live / "plots" / "metrics").rglob("*.tsv")):
        rows = [line.split("\t") for line in file.read_text().splitlines()[1:]]
        found[str(file.relative_to(live / "plots" / "metrics"))] = np.array(
            [float(row[-1]) for row in rows]
        )
    return found


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--epochs", type=int, default=30)
    cli.add_argument("--repeats", type=int, default=1)
    knobs = cli.parse_args()
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    base["train"]["epochs"] = knobs.epochs
    runs = {
        "none": ("none", []),
        "multihost x1": ("multihost", []),
        "multihost x2": (
            "multihost",
            [sys.executable, "-m", "stages.launch", "--workers", "2", "--"],
        ),
    }
    with tempfile.TemporaryDirectory(prefix="gradguard-processes-") as scratch:
        data = Path(scratch) / "data"
        data.mkdir()
        (data / "raw").mkdir()
        (data / "params.yaml").write_text(yaml.safe_dump(base))
        for name in ("prepare", "augment"):
            stage(name, data, data / "params.yaml")
        rows, live = [], {}
        for repeat in range(knobs.repeats):
            for label, (distribute, launch) in runs.items():
                work = Path(scratch) / f"{label.replace(' ', '-')}-{repeat}"
                work.mkdir()
                for link in ("prepared", "augmented"):
                    (work / link).symlink_to(data / link)
                params = {**base, "train": {**base["train"], "distribute": distribute}}
                (work / "params.yaml").write_text(yaml.safe_dump(params))
                wall, out = stage("train", work, work / "params.yaml", launch)
                stage("evaluate", work, work / "params.yaml")
                summary = json.loads((work / "live" / "metrics.json").read_text())["run"]
                fit_s = float(re.search(r"epochs in ([\d.]+)s", out).group(1))
                accuracy = json.loads((work / "eval.json").read_text())["accuracy"]
                rows.append((label, wall, fit_s, summary, accuracy))
                live.setdefault(label, curves(work / "live"))
                print(f"  {label}: {wall:.1f} s, test {accuracy:.4f}", flush=True)
    print()
    print("| run | `train` wall (s) | fit (s) | epochs | s / epoch | best val_loss | test acc. |")
    print("|---|---|---|---|---|---|---|")
    for label in runs:
        mine = [row for row in rows if row[0] == label]
        wall = statistics.median(row[1] for row in mine)
        fit = statistics.median(row[2] for row in mine)
        summary, accuracy = mine[0][3], mine[0][4]
        print(
            f"| {label} | {wall:.1f} | {fit:.1f} | {summary['epochs']} | "
            f"{fit / summary['epochs']:.2f} | {summary['best_val_loss']:.5f} | {accuracy:.4f} |"
        )
    one, two = live["multihost x1"], live["multihost x2"]
    print()
    print("two processes against one (multihost), per curve: epochs compared, first epoch's")
    print("relative difference, largest relative difference, identical")
    for name in sorted(set(one) & set(two)):
        n = min(len(one[name]), len(two[name]))
        a, b = one[name][:n], two[name][:n]
        rel = np.abs(a - b) / np.maximum(np.abs(a), 1e-12)
        print(f"  {name}: {n}, {rel[0]:.2e}, {rel.max():.2e}, {bool(np.array_equal(a, b))}")


if __name__ == "__main__":
    main()
