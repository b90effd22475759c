"""augment: append seeded augmented copies to the training split; write data/augmented/."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from gradguard.augment import augment
from gradguard.io import atomic_path, fingerprint, load_arrays, save_arrays, write_json
from stages import common


def main(args, params) -> None:
    x, y = load_arrays(Path(args.prepared) / "train.npz")
    x_out, y_out = augment(x, y, params.augment, params.seed)
    with atomic_path(args.out) as folder:
        folder.mkdir()
        save_arrays(folder / "train.npz", x=x_out, y=y_out)
        write_json(
            folder / "meta.json",
            {
                "augment": dataclasses.asdict(params.augment),
                "seed": params.seed,
                "images": len(y_out),
                "fingerprint": fingerprint(x_out, y_out),
            },
        )
    print(f"augment: {len(y)} -> {len(y_out)} training images -> {args.out}")


def main_cli(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    cli = common.parser(__doc__)
    cli.add_argument("--prepared", required=True, help="prepare's output folder")
    cli.add_argument("--out", required=True, help="output folder")
    return common.run(main, cli, argv)


if __name__ == "__main__":
    sys.exit(main_cli())
