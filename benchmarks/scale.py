"""Data at scale: every stage's wall time and peak memory on large synthetic sets.

Makes its own data (nothing is downloaded) in a scratch folder, runs the
pipeline's stage commands on it as `dvc repro` would (one process per stage),
and prints tables:

1. per set and stage: images, wall s, peak RSS (the stage process's high-water
   mark, or its largest worker's), images/s;
2. bytes stored per pixel in prepare's and augment's outputs (what DVC caches);
3. the input pipeline: one training epoch streamed from the shards against
   `model.fit` on the same images already in memory as arrays (same model,
   same process, alternating, medians);
4. the image-folder decode rate with one worker and with every core.

    python benchmarks/scale.py                      # all of it: about an hour on 2 cores
    python benchmarks/scale.py --sets grey --grey-images 60000   # a quick look

Targets (issue 10): peak RSS <= 3 GB in every stage for 600,000 grey 28x28 and
100,000 RGB 64x64 images; <= 1.1 bytes a stored pixel; streamed epoch <= 1.05x
the in-memory one; folder decode on 2 cores >= 1.6x one core.
"""

from __future__ import annotations

import argparse
import os
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
GiB = 1 << 30
# The stage commands' arguments, as dvc.yaml gives them (paths relative to a scratch folder).
STAGE_ARGS = {
    "prepare": ["--raw", "raw", "--out", "prepared"],
    "augment": ["--prepared", "prepared", "--out", "augmented"],
    "train": [
        *("--prepared", "prepared", "--augmented", "augmented", "--model", "best.keras"),
        *("--live", "live", "--resume-dir", "resume"),
    ],
    "evaluate": [
        *("--prepared", "prepared", "--model", "best.keras", "--live", "live"),
        *("--out", "eval.json", "--plots", "plots"),
    ],
}


def synthetic(count: int, size: int, channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` uint8 images: a class's digit template, shifted, scaled in brightness, noisy.

    Learnable (a CNN tells the classes apart) and cheap to make in chunks.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    templates = np.stack(
        [
            np.asarray(
                Image.fromarray(
                    (digits.images[list(digits.target).index(k)] * 15).astype(np.uint8)
                ).resize((size, size), Image.Resampling.BILINEAR),
                np.float32,
            )
            for k in range(10)
        ]
    )
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, count).astype(np.int32)
    x = np.empty((count, size, size, channels), np.uint8)
    tint = rng.uniform(0.5, 1.0, (10, channels)).astype(np.float32)  # colour by class, a little
    for start in range(0, count, 2_000):
        labels = y[start : start + 2_000]
        shift = rng.integers(-size // 8, size // 8 + 1, (2,))
        base = (
            np.roll(templates[labels], tuple(shift), axis=(1, 2))[..., None]
            * tint[labels][:, None, None, :]
        )
        noise = rng.normal(0, 40, base.shape).astype(np.float32)
        x[start : start + len(labels)] = np.clip(base + noise, 0, 255).astype(np.uint8)
    return x, y


# Runs a stage as `python -m` would, then writes the stage's own peak RSS (VmHWM: its address
# space's high-water mark, which starts afresh at exec, unlike ru_maxrss, which a child
# inherits from the large process that forked it) and its largest worker's.
MEASURED = """
import atexit, os, resource, runpy, sys
def report():
    status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    open(os.environ["SCALE_RSS"], "w").write(f"{int(status) * 1024} {workers * 1024}")
atexit.register(report)
module = sys.argv[1]
sys.argv = ["-m", *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def run_stage(name: str, args: list[str], cwd: Path) -> tuple[float, int]:
    """Run stage `name` in its own process; return (wall s, peak RSS bytes of it or a worker)."""
    rss_file = cwd / f"{name}.rss"
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'src'}", SCALE_RSS=str(rss_file))
    started = time.perf_counter()
    with open(cwd / f"{name}.log", "w") as log:
        done = subprocess.run(
            [sys.executable, "-c", MEASURED, f"stages.{name}", *args],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=log,
            check=False,
        )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"stage {name} failed; see {cwd / (name + '.log')}")
    own, worker = map(int, rss_file.read_text().split())
    return wall, max(own, worker)


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def pipeline(label: str, x: np.ndarray, y: np.ndarray, work: Path, knobs: argparse.Namespace):
    """Run the four stages on (x, y) written as a user's .npz; return table rows."""
    work.mkdir(parents=True)
    raw = work / "raw"
    raw.mkdir()
    np.savez(raw / "data.npz", x=x, y=y)
    pixels = x.size
    del x
    params = {
        "seed": 42,
        "data": {
            "source": "npz",
            "path": "raw/data.npz",
            "image_size": knobs.size[label],
            "channels": knobs.channels[label],
        },
        "augment": {"copies": knobs.copies},
        "train": {"epochs": knobs.epochs, "patience": knobs.epochs},
    }
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    n = len(y)
    train_images = int(n * (1 - 0.15 - 0.15))
    images = {
        "prepare": n,
        "augment": train_images * knobs.copies,
        "train": train_images * (1 + knobs.copies) * knobs.epochs,
        "evaluate": n - train_images,
    }
    rows = []
    for stage, args in STAGE_ARGS.items():
        wall, peak = run_stage(stage, ["--params", "params.yaml", *args], work)
        rows.append((label, stage, images[stage], wall, peak))
        print(f"  {label} {stage}: {wall:.1f} s, {peak / GiB:.2f} GiB", flush=True)
    stored = folder_bytes(work / "prepared") + folder_bytes(work / "augmented")
    stored_pixels = pixels * (1 + knobs.copies * 0.7)  # the copies are of the 70 % train split
    return rows, stored / stored_pixels, work


def input_pipeline(work: Path, knobs: argparse.Namespace) -> tuple[float, float]:
    """Median epoch time streamed from shards and from in-memory arrays (same model)."""
    import keras

    from gradguard.data.shards import iter_shards, read_index, to_float
    from gradguard.data.stream import ShardSequence
    from gradguard.params import ModelParams
    from gradguard.training.families import build_cnn

    folder = work / "prepared" / "train"
    keep, xs, ys = [], [], []
    for entry, (x, y) in zip(read_index(folder)["shards"], iter_shards(folder), strict=True):
        if sum(len(part) for part in ys) >= knobs.ratio_images:
            break
        keep.append(entry)
        xs.append(x)
        ys.append(y)
    subset = work / "ratio"
    subset.mkdir(exist_ok=True)
    index = read_index(folder) | {"shards": keep}
    for entry in keep:
        shutil.copy(folder / entry["file"], subset / entry["file"])
    (subset / "index.json").write_text(__import__("json").dumps(index))
    x, y = to_float(np.concatenate(xs)), np.concatenate(ys)
    del xs
    keras.utils.set_random_seed(0)
    model = build_cnn(x.shape[1:], 10, ModelParams(filters=(32, 64), dense=128, dropout=0.3))
    model.compile("adam", "sparse_categorical_crossentropy")
    stream = ShardSequence(subset, 64, seed=1)
    model.fit(stream, epochs=1, steps_per_epoch=20, shuffle=False, verbose=0)  # warm-up: compile
    model.fit(x, y, batch_size=64, epochs=1, steps_per_epoch=20, verbose=0)
    times = {"streamed": [], "arrays": []}
    for _ in range(knobs.repeats):
        started = time.perf_counter()
        model.fit(stream, epochs=1, shuffle=False, verbose=0)
        times["streamed"].append(time.perf_counter() - started)
        started = time.perf_counter()
        model.fit(x, y, batch_size=64, epochs=1, shuffle=True, verbose=0)
        times["arrays"].append(time.perf_counter() - started)
    return len(y), statistics.median(times["streamed"]), statistics.median(times["arrays"])


def decode_rates(work: Path, files: int, side: int, repeats: int) -> tuple[float, float, int]:
    """Median images/s of the folder loader (side x side JPEGs to 64x64x3): 1 worker, all cores."""
    from PIL import Image

    from gradguard.data.sources import decode_workers, load_folder

    root = work / f"folder{side}"
    for label in range(10):
        (root / f"class{label}").mkdir(parents=True)
    for start in range(0, files, 2_000):
        x, y = synthetic(min(2_000, files - start), side, 3, seed=start)
        for i, (image, label) in enumerate(zip(x, y, strict=True)):
            Image.fromarray(image).save(root / f"class{label}" / f"{start + i:06d}.jpg", quality=90)
    rates = {}
    cores = decode_workers()
    for workers in (1, cores) * repeats:
        started = time.perf_counter()
        load_folder(str(root), 64, channels=3, workers=workers)
        rates.setdefault(workers, []).append(files / (time.perf_counter() - started))
    shutil.rmtree(root)
    return statistics.median(rates[1]), statistics.median(rates[cores]), cores


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_argument("--sets", default="grey,colour", help="grey, colour or both")
    cli.add_argument("--grey-images", type=int, default=600_000)
    cli.add_argument("--colour-images", type=int, default=100_000)
    cli.add_argument("--copies", type=int, default=2, help="augment.copies")
    cli.add_argument("--epochs", type=int, default=1, help="train.epochs")
    cli.add_argument("--ratio-images", type=int, default=100_000)
    cli.add_argument("--repeats", type=int, default=3)
    cli.add_argument("--decode-files", type=int, default=20_000, help="0: no decode table")
    cli.add_argument("--keep", action="store_true", help="keep the scratch folder")
    knobs = cli.parse_args()
    knobs.size = {"grey": 28, "colour": 64}
    knobs.channels = {"grey": 1, "colour": 3}
    sys.path[:0] = [str(ROOT), str(ROOT / "src")]
    scratch = Path(tempfile.mkdtemp(prefix="gradguard-scale-"))
    rows, stored, ratio = [], {}, None
    try:
        # First, while no framework is loaded: the loader forks its workers, as in `prepare`.
        decode = {
            side: decode_rates(scratch, knobs.decode_files, side, knobs.repeats)
            for side in ((96, 256) if knobs.decode_files else ())
        }
        for label in knobs.sets.split(","):
            count = knobs.grey_images if label == "grey" else knobs.colour_images
            x, y = synthetic(count, knobs.size[label], knobs.channels[label], seed=1)
            print(f"{label}: {count} images {x.shape[1:]}", flush=True)
            set_rows, stored[label], work = pipeline(label, x, y, scratch / label, knobs)
            rows += set_rows
            if label == "grey":
                ratio = input_pipeline(work, knobs)
    finally:
        if not knobs.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    print("\n| set | stage | images | wall s | peak RSS GiB | images/s |")
    print("|---|---|---:|---:|---:|---:|")
    for label, stage, images, wall, peak in rows:
        print(
            f"| {label} | {stage} | {images:,} | {wall:.1f} | {peak / GiB:.2f} "
            f"| {images / wall:,.0f} |"
        )
    print("\n| set | bytes stored per pixel (prepared + augmented) |")
    print("|---|---:|")
    for label, per_pixel in stored.items():
        print(f"| {label} | {per_pixel:.4f} |")
    if ratio:
        images, streamed, arrays = ratio
        print(f"\n| epoch of {images:,} images | median s ({knobs.repeats} runs) |")
        print("|---|---:|")
        print(f"| streamed from shards | {streamed:.2f} |")
        print(f"| arrays in memory | {arrays:.2f} |")
        print(f"| ratio streamed / arrays | {streamed / arrays:.3f} |")
    if not decode:
        return
    print(
        f"\n| folder decode, {knobs.decode_files:,} JPEG files -> 64x64x3 | 1 worker | all cores |"
    )
    print("|---|---:|---:|")
    for side, (one, every, cores) in decode.items():
        print(
            f"| {side}x{side} sources | {one:,.0f} images/s | {every:,.0f} images/s "
            f"({cores} workers, {every / one:.2f}x) |"
        )


if __name__ == "__main__":
    main()
