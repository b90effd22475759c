"""augment: write seeded augmented copies of the training split as uint8 shards to data/augmented/.

The copies only: `train` reads the prepared training split and these together.
One prepared shard is in memory at a time.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from gradguard.data.augment import augment_shards
from stages import common


def main(args, params) -> None:
    progress = functools.partial(print, flush=True)
    source = Path(args.prepared) / "train"
    counts = augment_shards(source, args.out, params.augment, params.seed, progress)
    print(
        f"augment: {counts['images']} training examples + {counts['written']} augmented copies "
        f"-> {args.out}"
    )


def main_cli(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    cli = common.parser(__doc__)
    cli.add_argument("--prepared", required=True, help="prepare's output folder")
    cli.add_argument("--out", required=True, help="output folder")
    return common.run(main, cli, argv)


if __name__ == "__main__":
    sys.exit(main_cli())
