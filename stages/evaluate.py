"""evaluate: score the best checkpoint on the streamed test split beside a scikit-learn baseline.

The baseline is fitted on a seeded sample of at most `evaluate.baseline_images`
training images and scored on as many test images, so its time is bounded at
any data size; the CNN is scored on every test image.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from gradguard import shards
from gradguard.evaluation import (
    baseline_accuracy,
    classification_metrics,
    confusion_rows,
    plot_training_curves,
)
from gradguard.io import DataError, write_json
from gradguard.verdict import VerdictRules, judge
from stages import common

# From train's run summary into the experiment's summary, after the verdict.
# Few, so that `dvc exp show --only-changed` at 160 columns still reaches the params; the rest
# (weight_growth, epochs, best_val_loss, ...) is in train's metrics/train/metrics.json.
RUN_KEYS = ("max_grad_norm", "clip_fraction", "skipped_steps", "spikes", "rollbacks")
# DVCLive's files under <live>/plots/metrics/, one panel of the PNG each.
CURVES = {
    "loss": {"train": "train/loss.tsv", "val": "val/loss.tsv"},
    "accuracy": {"train": "train/accuracy.tsv", "val": "val/accuracy.tsv"},
    "pre-clip gradient norm": {
        "max": "train/grad_norm_max.tsv",
        "mean": "train/grad_norm_mean.tsv",
    },
}


def read_curve(path: Path) -> list[float]:
    """The values column of one DVCLive .tsv (step, timestamp, value)."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [float(row[path.stem]) for row in rows]


def main(args, params) -> None:
    from gradguard.models import load_model
    from gradguard.stream import ShardSequence

    test_set = Path(args.prepared) / "test"
    y_test = shards.labels(test_set)
    summary_file = Path(args.live) / "metrics.json"
    summary = (
        json.loads(summary_file.read_text(encoding="utf-8")).get("run")
        if summary_file.is_file()
        else None
    )
    if summary is None:
        raise DataError(f"{summary_file}: no 'run' summary; run the train stage first")

    model = load_model(args.model)
    test = ShardSequence(test_set, params.evaluate.batch_size, labelled=False)
    probabilities = model.predict(test, verbose=0)
    scores = classification_metrics(y_test, probabilities)
    confusion, per_class = scores.pop("confusion"), scores.pop("per_class_accuracy")
    cap = params.evaluate.baseline_images
    baseline_train = shards.sample(Path(args.prepared) / "train", cap, params.seed)
    baseline_test = shards.sample(test_set, cap, params.seed + 1)
    baseline = baseline_accuracy(
        params.evaluate.baseline, baseline_train, baseline_test, params.seed
    )
    shares = np.bincount(y_test) / len(y_test)
    rules = VerdictRules(params.evaluate.explode_factor, params.evaluate.collapse_margin)
    verdict = judge(
        diverged=summary["diverged"],
        weight_growth=summary["weight_growth"],
        accuracy=scores["accuracy"],
        class_shares=shares,
        rules=rules,
    )
    # The experiment's summary for `dvc exp show` and the gate: test metrics, the verdict and
    # the run's gradient statistics, the ones compared most first (the table keeps this order).
    run = {key: summary[key] for key in RUN_KEYS}
    write_json(
        args.out,
        {
            "accuracy": scores["accuracy"],
            "verdict": verdict,
            "healthy": verdict == "healthy",
            "diverged": bool(summary["diverged"]),
            **run,
            "f1_macro": scores["f1_macro"],
            "baseline_accuracy": baseline,
            "first_nonfinite_step": summary["first_nonfinite_step"],
            "test_images": len(y_test),
        },
        sort_keys=False,
    )

    plots = Path(args.plots)
    predicted = probabilities.argmax(axis=1)
    write_json(plots / "confusion.json", {"confusion": confusion_rows(y_test, predicted)})
    write_json(
        plots / "per_class.json",
        {"per_class": [{"class": k, "accuracy": v} for k, v in per_class.items()]},
    )
    metrics_dir = Path(args.live) / "plots" / "metrics"
    curves = {
        title: {
            label: read_curve(metrics_dir / file)
            for label, file in lines.items()
            if (metrics_dir / file).is_file()
        }
        for title, lines in CURVES.items()
    }
    plot_training_curves(curves, plots / "training_curves.png")
    print("confusion (rows: true class):", *confusion, sep="\n  ")
    print(
        f"evaluate: {verdict}, test accuracy {scores['accuracy']:.4f} (baseline "
        f"{params.evaluate.baseline} {baseline:.4f}) -> {args.out}"
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
