"""augment: write seeded augmented copies of the training split as uint8 shards to data/augmented/.

The copies only: `train` reads the prepared training split and these together.
One prepared shard is in memory at a time.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from gradguard.augment import Augmenter
from gradguard.io import atomic_path, write_json
from gradguard.shards import ShardWriter, iter_shards, read_index
from stages import common


def main(args, params) -> None:
    source = Path(args.prepared) / "train"
    index = read_index(source)
    augmenter = Augmenter(params.augment, params.seed) if params.augment.copies else None
    with atomic_path(args.out) as folder:
        folder.mkdir()
        writer = ShardWriter(folder, index["image_shape"], index["num_classes"])
        shards = len(index["shards"])
        for number, (x, y) in enumerate(iter_shards(source) if augmenter else (), 1):
            for _ in range(params.augment.copies):
                writer.add(augmenter.copy(x), y)
            if shards > 1:  # a long stage shows progress
                print(f"augment: shard {number}/{shards}", flush=True)
        written = writer.close()
        write_json(
            folder / "meta.json",
            {
                "augment": dataclasses.asdict(params.augment),
                "seed": params.seed,
                "images": written["images"],
                "fingerprint": written["fingerprint"],
            },
        )
    print(
        f"augment: {index['images']} training images + {written['images']} augmented copies "
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
