"""What a compare costs beyond training: the per-experiment overhead, and the wall time.

    python benchmarks/compare_cost.py                    # 2 remedies x 3 seeds, tiny params
    python benchmarks/compare_cost.py --params default   # the committed params.yaml

In a scratch copy of this checkout (committed files plus the working tree's), it runs
`python -m stages.compare` over R remedies x S seeds (pass 1: everything trains), removes
the experiments (DVC's run-cache keeps every stage's results), and runs the same compare
again (pass 2). In pass 2 no stage runs: each is restored from the run-cache, so its wall
time per experiment is the overhead a compare adds to an experiment's own stages:
queueing, the temporary copy, restoring outputs, collecting. Pass 1 minus pass 2, per
experiment, is what the stages themselves took. Prints a table of medians of --repeat runs.
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {  # tests/conftest.py's TINY_PARAMS: a 4-filter CNN on 12x12 digits for 2 epochs
    "augment": {"copies": 1},
    "data": {"image_size": 12},
    "model": {"filters": [4], "dense": 8, "dropout": 0.0},
    "train": {"epochs": 2, "patience": 1, "learning_rate": 0.01},
}


def sh(*args: str, cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{(done.stderr or done.stdout)[-2000:]}")
    return done.stdout


def scratch(folder: Path, tiny: bool) -> Path:
    repo = folder / "repo"
    files = sh("git", "ls-files", "-co", "--exclude-standard", "-z", cwd=ROOT).split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    if tiny:
        params = yaml.safe_load((repo / "params.yaml").read_text())
        for key, value in TINY.items():
            params[key] = {**params[key], **value}
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench", cwd=repo)
    return repo


def timed_compare(repo: Path, args: list[str]) -> float:
    started = time.perf_counter()
    sh(sys.executable, "-m", "stages.compare", *args, cwd=repo)
    return time.perf_counter() - started


def measure(tiny: bool, remedies: str, seeds: int, jobs: int) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as folder:
        repo = scratch(Path(folder), tiny)
        seed_list = ",".join(str(1000 + s) for s in range(seeds))
        args = ["--remedies", remedies, "--seed-list", seed_list, "--jobs", str(jobs)]
        args += ["--poll", "1"]
        first = timed_compare(repo, args)
        names = [
            n
            for n in sh(sys.executable, "-m", "dvc", "exp", "ls", "--name-only", cwd=repo).split()
            if n.startswith("cmp-")
        ]
        sh(sys.executable, "-m", "dvc", "exp", "remove", *names, cwd=repo)
        sh(sys.executable, "-m", "dvc", "queue", "remove", "--all", cwd=repo)
        second = timed_compare(repo, args)
        return first, second, len(names)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--params", choices=("tiny", "default"), default="tiny")
    cli.add_argument("--remedies", default="none,global_norm")
    cli.add_argument("--seeds", type=int, default=3)
    cli.add_argument("--jobs", type=int, default=1)
    cli.add_argument("--repeat", type=int, default=1)
    args = cli.parse_args()
    passes = [
        measure(args.params == "tiny", args.remedies, args.seeds, args.jobs)
        for _ in range(args.repeat)
    ]
    runs = passes[0][2]
    first = statistics.median(p[0] for p in passes)
    second = statistics.median(p[1] for p in passes)
    print(
        f"compare of {runs} experiments ({args.remedies} x {args.seeds} seeds, "
        f"{args.params} params, --jobs {args.jobs}), median of {args.repeat}:"
    )
    print("| pass | wall s | s per experiment |")
    print("|---|---:|---:|")
    print(f"| 1: every stage runs | {first:.1f} | {first / runs:.1f} |")
    print(f"| 2: every stage restored (the overhead) | {second:.1f} | {second / runs:.1f} |")
    print(f"| stages alone (1 - 2) | {first - second:.1f} | {(first - second) / runs:.1f} |")


if __name__ == "__main__":
    main()
