"""prepare: load `data.source`, check it, resize, split; write shards to data/prepared/."""

from __future__ import annotations

import sys

from gradguard.data.prepare import prepare
from stages import common


def main(args, params) -> None:
    stats = prepare(params.data, params.seed, args.raw, args.out)
    counts = {name: sum(counts) for name, counts in stats["counts"].items()}
    shape = "x".join(map(str, stats["example_shape"]))
    kind = stats["kind"]
    if params.data.kind == "auto":
        print(f"prepare: data.kind auto chose {kind}: {stats['kind_because']}")
    scaled = ", standardised by the training split" if stats["standardize"] else ""
    print(
        f"prepare: {sum(counts.values())} {kind}s {shape}, {stats['num_classes']} classes "
        f"-> {args.out} (train/val/test {list(counts.values())} in "
        f"{sum(stats['shards'].values())} shards{scaled})"
    )


def main_cli(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    cli = common.parser(__doc__)
    cli.add_argument("--raw", required=True, help="the folder user data must lie in")
    cli.add_argument("--out", required=True, help="output folder")
    return common.run(main, cli, argv)


if __name__ == "__main__":
    sys.exit(main_cli())
