"""prepare: load `data.source`, check it, resize, split; write uint8 shards to data/prepared/."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from gradguard.data import CHUNK, SPLITS, load_source, split_indices
from gradguard.io import atomic_path, write_json
from gradguard.params import ParamsError
from gradguard.shards import ShardWriter
from stages import common


def check_inside(path: str | None, raw: str) -> None:
    """A user's data must lie in the folder dvc.yaml tracks as this stage's input.

    Raises:
        ParamsError: `path` is outside `raw`, where a change to it would go unseen.
    """
    if path is not None and not Path(path).resolve().is_relative_to(Path(raw).resolve()):
        raise ParamsError(
            f"params: data.path={path!r} is invalid; expected a file or folder inside {raw}/, "
            "the folder dvc.yaml tracks as prepare's input (move it there, then `dvc add` it)"
        )


def main(args, params) -> None:
    if params.data.source in ("npz", "folder"):
        check_inside(params.data.path, args.raw)
    x, y = load_source(params.data)
    splits = split_indices(y, params.data, params.seed)
    num_classes = int(y.max()) + 1
    with atomic_path(args.out) as folder:
        folder.mkdir()
        indexes = {}
        for name in SPLITS:
            (folder / name).mkdir()
            writer = ShardWriter(folder / name, x.shape[1:], num_classes)
            rows = splits[name]
            for start in range(0, len(rows), CHUNK):
                writer.add(x[rows[start : start + CHUNK]], y[rows[start : start + CHUNK]])
            indexes[name] = writer.close()
        stats = {
            "source": params.data.source,
            "image_shape": list(x.shape[1:]),
            "num_classes": num_classes,
            "counts": {
                name: np.bincount(y[splits[name]], minlength=num_classes).tolist()
                for name in SPLITS
            },
            "shards": {name: len(indexes[name]["shards"]) for name in SPLITS},
            "fingerprint": {name: indexes[name]["fingerprint"] for name in SPLITS},
        }
        write_json(folder / "stats.json", stats)
    print(
        f"prepare: {len(y)} images {'x'.join(map(str, x.shape[1:]))}, {num_classes} classes "
        f"-> {args.out} (train/val/test {[len(splits[n]) for n in SPLITS]} images in "
        f"{sum(stats['shards'].values())} shards)"
    )


def main_cli(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    cli = common.parser(__doc__)
    cli.add_argument("--raw", required=True, help="the folder user data must lie in")
    cli.add_argument("--out", required=True, help="output folder")
    return common.run(main, cli, argv)


if __name__ == "__main__":
    sys.exit(main_cli())
