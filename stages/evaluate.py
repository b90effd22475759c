"""evaluate: score the best checkpoint on the streamed test split beside a scikit-learn baseline.

The baseline is fitted on a seeded sample of at most `evaluate.baseline_images`
training images and scored on as many test images, so its time is bounded at
any data size; the CNN is scored on every test image.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gradguard.evaluation.report import evaluate
from stages import common


def main(args, params) -> None:
    found = evaluate(
        Path(args.prepared),
        Path(args.model),
        Path(args.live),
        Path(args.out),
        Path(args.plots),
        params,
    )
    metrics = found.metrics
    print("confusion (rows: true class):", *found.confusion, sep="\n  ")
    print(
        f"evaluate: {metrics['verdict']}, test accuracy {metrics['accuracy']:.4f} (baseline "
        f"{params.evaluate.baseline} {metrics['baseline_accuracy']:.4f}) -> {args.out}"
    )


def main_cli(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    cli = common.parser(__doc__)
    cli.add_argument("--prepared", required=True, help="prepare's output folder")
    cli.add_argument("--model", required=True, help="the best checkpoint")
    cli.add_argument("--live", required=True, help="train's DVCLive folder")
    cli.add_argument("--out", required=True, help="test metrics to write")
    cli.add_argument("--plots", required=True, help="folder for plots")
    return common.run(main, cli, argv)


if __name__ == "__main__":
    sys.exit(main_cli())
