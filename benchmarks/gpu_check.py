"""The GPU path, end to end: the pipeline's stages on the default data and on a 60k-image set.

Runs `prepare`, `augment`, `train` and `evaluate` (the stage commands `dvc repro`
runs, each in its own process) in a scratch folder, on

1. the bundled digits with the default params (`params.yaml`), and
2. a synthetic set whose training split is 60,000 grey 28x28 images (no
   augmented copies, so one epoch is 60,000 images),

and prints the device Keras trains on, the steady epoch time and images/s
(Keras's own per-epoch step time, median of the epochs after the first,
which compiles), the wall time of each stage, and the final test accuracy.

    python benchmarks/gpu_check.py                       # TensorFlow (GPU if it sees one)
    KERAS_BACKEND=jax python benchmarks/gpu_check.py     # JAX: no TensorFlow needed

The target on one H100: one 60k-image epoch of the default CNN in <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(ROOT / "benchmarks")]
from scale import STAGE_ARGS, synthetic  # noqa: E402

# Keras's line at each epoch's end: "938/938 - 3s - 3ms/step - ..." (ms or us per step).
EPOCH_LINE = re.compile(r"^(\d+)/\1 - \S+ - (\d+(?:\.\d+)?)(ms|us|s)/step", re.MULTILINE)


def device() -> str:
    """The backend and the accelerator Keras will use, in words."""
    code = (
        "import keras; b = keras.backend.backend()\n"
        "if b == 'jax':\n"
        "    import jax; d = jax.devices(); print(b, d[0].platform, d[0].device_kind, len(d))\n"
        "else:\n"
        "    import tensorflow as tf; g = tf.config.list_physical_devices('GPU')\n"
        "    print(b, 'gpu' if g else 'cpu', g[0].name if g else '', len(g) or 1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env()
    )
    return done.stdout.strip().splitlines()[-1]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src")]))


def run_pipeline(work: Path, params: dict) -> dict:
    """The four stages in `work`; wall time per stage, train's epoch times, test accuracy."""
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    walls, logs = {}, {}
    for stage, args in STAGE_ARGS.items():
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", f"stages.{stage}", "--params", "params.yaml", *args],
            cwd=work,
            env=_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        walls[stage] = time.perf_counter() - started
        logs[stage] = done.stdout + done.stderr
        if done.returncode != 0:
            sys.exit(f"stage {stage} failed:\n{logs[stage][-3000:]}")
    steps = [
        (int(n), float(t) * {"s": 1.0, "ms": 1e-3, "us": 1e-6}[unit])
        for n, t, unit in EPOCH_LINE.findall(logs["train"])
    ]
    scores = json.loads((work / "eval.json").read_text())
    train_images = json.loads((work / "prepared" / "train" / "index.json").read_text())["examples"]
    copies = json.loads((work / "augmented" / "index.json").read_text())["examples"]
    return {
        "walls": walls,
        "epochs": len(steps),
        "steps": steps,
        "images": train_images + copies,
        "accuracy": scores["accuracy"],
        "verdict": scores["verdict"],
    }


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_argument("--images", type=int, default=60_000, help="training images of set 2")
    cli.add_argument("--epochs", type=int, default=4, help="epochs on set 2")
    cli.add_argument("--keep", action="store_true", help="keep the scratch folder")
    knobs = cli.parse_args()

    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())
    scratch = Path(tempfile.mkdtemp(prefix="gradguard-gpu-"))
    results = {}
    try:
        work = scratch / "digits"
        (work / "raw").mkdir(parents=True)
        results["digits (default params)"] = run_pipeline(work, defaults)

        # n images leave n - 2 * ceil(0.15 n) for training: the smallest n leaving --images.
        total = next(
            n
            for n in range(knobs.images, 3 * knobs.images)
            if n - 2 * int(np.ceil(0.15 * n)) >= knobs.images
        )
        work = scratch / "synthetic"
        (work / "raw").mkdir(parents=True)
        x, y = synthetic(total, 28, 1, seed=0)
        np.savez(work / "raw" / "data.npz", x=x, y=y)
        params = {
            **defaults,
            "data": {**defaults["data"], "source": "npz", "path": "raw/data.npz"},
            "augment": {**defaults["augment"], "copies": 0},
            "train": {**defaults["train"], "epochs": knobs.epochs, "patience": knobs.epochs},
        }
        results[f"synthetic {knobs.images:,} (28x28x1)"] = run_pipeline(work, params)
    finally:
        if not knobs.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    print(f"\ndevice: {device()}")
    print(
        "\n| data | images/epoch | epochs | steady epoch s | images/s | "
        "prepare s | augment s | train s | evaluate s | test accuracy | verdict |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, run in results.items():
        steady = [n * per_step for n, per_step in run["steps"][1:]] or [
            n * per_step for n, per_step in run["steps"]
        ]
        epoch_s = statistics.median(steady)
        walls = run["walls"]
        print(
            f"| {name} | {run['images']:,} | {run['epochs']} | {epoch_s:.2f} | "
            f"{run['images'] / epoch_s:,.0f} | {walls['prepare']:.1f} | {walls['augment']:.1f} | "
            f"{walls['train']:.1f} | {walls['evaluate']:.1f} | {run['accuracy']:.4f} | "
            f"{run['verdict']} |"
        )


if __name__ == "__main__":
    main()
