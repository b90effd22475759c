"""The evaluate stage's work: score the kept model on the test split, judge the run, write it down.

The CNN is scored on every (streamed) test image; the scikit-learn baseline is
fitted on a seeded sample of at most `evaluate.baseline_images` training
images and scored on as many test images, so its time is bounded at any data
size.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from gradguard.data import shards
from gradguard.errors import DataError
from gradguard.evaluation.curves import plot_training_curves, read_curves
from gradguard.evaluation.scores import baseline_accuracy, classification_metrics, confusion_rows
from gradguard.io import write_json
from gradguard.params import Params
from gradguard.training.live import LiveFolder
from gradguard.verdict import VerdictRules, run_verdict

# From train's run summary into the experiment's summary, after the verdict.
# Few, so that `dvc exp show --only-changed` at 160 columns still reaches the params; the rest
# (weight_growth, epochs, best_val_loss, ...) is in train's metrics/train/metrics.json.
SUMMARY_KEYS = ("max_grad_norm", "clip_fraction", "skipped_steps", "spikes", "rollbacks")


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What `evaluate` found: the test metrics written, and the confusion matrix."""

    metrics: dict
    confusion: list


def evaluate(
    prepared: Path, model_file: Path, live: Path, out: Path, plots: Path, params: Params
) -> Evaluation:
    """Score `model_file` on `prepared`/test and write `out` and the plots in `plots`.

    Raises:
        DataError: train's run summary is missing from `live`.
    """
    from gradguard.data.stream import ShardSequence
    from gradguard.training.models import load_model

    test_set = prepared / "test"
    y_test = shards.labels(test_set)
    folder = LiveFolder(live)
    summary = folder.read_summary()
    if summary is None:
        raise DataError(f"{folder.summary}: no 'run' summary; run the train stage first")
    if params.model.builder is not None:  # its file registers any layers of its own
        from gradguard.training.builder import import_builder

        import_builder(params.model.builder)
    model = load_model(model_file)
    test = ShardSequence(test_set, params.evaluate.batch_size, labelled=False)
    probabilities = model.predict(test, verbose=0)
    scores = classification_metrics(y_test, probabilities)
    confusion, per_class = scores.pop("confusion"), scores.pop("per_class_accuracy")
    curves = read_curves(folder)
    lowest = min((v for v in curves["loss"]["train"] if math.isfinite(v)), default=None)
    metrics = _metrics(summary, scores, y_test, _baseline(prepared, params), params, lowest)
    write_json(out, metrics, sort_keys=False)
    predicted = probabilities.argmax(axis=1)
    write_json(plots / "confusion.json", {"confusion": confusion_rows(y_test, predicted)})
    write_json(
        plots / "per_class.json",
        {"per_class": [{"class": k, "accuracy": v} for k, v in per_class.items()]},
    )
    plot_training_curves(curves, plots / "training_curves.png")
    return Evaluation(metrics, confusion)


def _baseline(prepared: Path, params: Params) -> float:
    """The scikit-learn baseline's test accuracy, on capped seeded samples."""
    cap = params.evaluate.baseline_images
    train = shards.sample(prepared / "train", cap, params.seed)
    test = shards.sample(prepared / "test", cap, params.seed + 1)
    return baseline_accuracy(params.evaluate.baseline, train, test, params.seed)


SOLVED_ERROR = 0.01  # `solved`: a test error rate below this


def _metrics(
    summary: dict, scores: dict, y_test, baseline: float, params: Params, lowest_loss
) -> dict:
    """The experiment's summary for `dvc exp show` and the gate, compared-most first."""
    rules = VerdictRules(
        params.evaluate.explode_factor,
        params.evaluate.collapse_margin,
        params.train.collapse_learned,
    )
    verdict = run_verdict(
        diverged=summary["diverged"],
        weight_growth=math.inf if summary["weight_growth"] is None else summary["weight_growth"],
        accuracy=scores["accuracy"],
        class_shares=np.bincount(y_test) / len(y_test),
        rules=rules,
        lowest_loss=lowest_loss,  # the lowest epoch's training loss
    )
    errors = round((1.0 - scores["accuracy"]) * len(y_test))
    return {
        "accuracy": scores["accuracy"],
        "verdict": verdict,
        "healthy": verdict == "healthy",
        # Pascanu et al. 2013's criterion (their text): under 1 % misclassified.
        "solved": errors < SOLVED_ERROR * len(y_test),
        "test_errors": errors,
        "diverged": bool(summary["diverged"]),
        **{key: summary[key] for key in SUMMARY_KEYS},
        "f1_macro": scores["f1_macro"],
        "baseline_accuracy": baseline,
        "first_nonfinite_step": summary["first_nonfinite_step"],
        "test_images": len(y_test),
    }
