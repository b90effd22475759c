"""prepare: load `data.source`, check it, resize, split; write data/prepared/."""

from __future__ import annotations

import sys

import numpy as np

from gradguard.data import SPLITS, load_source, split
from gradguard.io import atomic_path, fingerprint, save_arrays, write_json
from stages import common


def main(args, params) -> None:
    x, y = load_source(params.data)
    splits = split(x, y, params.data, params.seed)
    num_classes = int(y.max()) + 1
    stats = {
        "source": params.data.source,
        "image_shape": list(x.shape[1:]),
        "num_classes": num_classes,
        "counts": {
            name: np.bincount(splits[name][1], minlength=num_classes).tolist() for name in SPLITS
        },
        "fingerprint": fingerprint(*(a for name in SPLITS for a in splits[name])),
    }
    with atomic_path(args.out) as folder:
        folder.mkdir()
        for name in SPLITS:
            save_arrays(folder / f"{name}.npz", x=splits[name][0], y=splits[name][1])
        write_json(folder / "stats.json", stats)
    print(f"prepare: {len(y)} images, {num_classes} classes -> {args.out} {stats['counts']}")


def main_cli(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    cli = common.parser(__doc__)
    cli.add_argument("--out", required=True, help="output folder")
    return common.run(main, cli, argv)


if __name__ == "__main__":
    sys.exit(main_cli())
