"""Scoring the best checkpoint on the test split, a scikit-learn baseline, and the plots."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray) -> dict:
    """Test metrics of predicted class probabilities.

    Args:
        y_true: integer labels (N,).
        probabilities: (N, K) softmax outputs.

    Returns:
        `accuracy`, `loss` (mean cross-entropy; NaN for a diverged model, which
        the metrics gate always fails), `f1_macro`,
        `per_class_accuracy` (recall of each class, keyed by class) and
        `confusion` (K x K, rows are true classes). Rows with a non-finite
        probability count as wrong, so a diverged model scores what it earns.
    """
    from sklearn.metrics import confusion_matrix, f1_score

    num_classes = probabilities.shape[1]
    valid = np.isfinite(probabilities).all(axis=1)
    predicted = np.where(valid, probabilities.argmax(axis=1), -1)
    labels = np.arange(num_classes)
    picked = probabilities[np.arange(len(y_true)), y_true]
    loss = float(np.mean(-np.log(np.clip(picked, 1e-7, 1.0)))) if valid.all() else math.nan
    confusion = confusion_matrix(
        y_true, np.where(valid, predicted, (y_true + 1) % num_classes), labels=labels
    )
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "accuracy": float(np.mean(predicted == y_true)),
        "loss": loss,
        "f1_macro": float(
            f1_score(y_true, predicted, labels=labels, average="macro", zero_division=0)
        ),
        "per_class_accuracy": {str(k): float(v) for k, v in enumerate(per_class)},
        "confusion": confusion.tolist(),
    }


def baseline_model(kind: str, x_train: np.ndarray, seed: int):
    """The scikit-learn classifier `kind` names (unfitted), for flattened pixels `x_train`.

    "kernel": an RBF kernel machine in linear time, the Nystroem map (Williams
    and Seeger 2001) onto at most 1,000 components followed by a multinomial
    logistic regression; its kernel width is the one `SVC(gamma="scale")` uses,
    1 / (features x pixel variance), and C = 10. "svc": the exact RBF support vector
    machine (quadratic in the images it is fitted on). "logistic": multinomial
    logistic regression on the pixels.
    """
    from sklearn.kernel_approximation import Nystroem
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import SVC

    if kind == "svc":
        return SVC(random_state=seed)
    if kind == "logistic":
        return LogisticRegression(max_iter=2000, random_state=seed)
    gamma = 1.0 / (x_train.shape[1] * max(float(x_train.var()), 1e-12))
    return make_pipeline(
        Nystroem(gamma=gamma, n_components=min(1000, len(x_train)), random_state=seed),
        LogisticRegression(C=10.0, max_iter=1000, random_state=seed),
    )


def baseline_accuracy(kind: str, train: tuple, test: tuple, seed: int) -> float:
    """Test accuracy of a scikit-learn classifier (see `baseline_model`) on the flattened pixels.

    Args:
        kind: "kernel", "svc" or "logistic".
        train, test: `(x, y)` arrays; the un-augmented training split is fair.
        seed: random state of the classifier.
    """
    x_train, y_train = train[0].reshape(len(train[0]), -1), train[1]
    x_test, y_test = test[0].reshape(len(test[0]), -1), test[1]
    model = baseline_model(kind, x_train, seed)
    model.fit(x_train, y_train)
    return float(model.score(x_test, y_test))


def confusion_rows(y_true: Sequence[int], y_pred: Sequence[int]) -> list[dict]:
    """Rows `{"actual": a, "predicted": p}` for DVC's `confusion` plot template."""
    return [{"actual": int(a), "predicted": int(p)} for a, p in zip(y_true, y_pred, strict=True)]


def plot_training_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], path) -> None:
    """One PNG panel per quantity (loss, accuracy, gradient norm), each split a line.

    Args:
        curves: {panel title: {line label: values per epoch}}.
        path: the PNG file to write (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gradguard.io import atomic_path

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for axis, (title, lines) in zip(axes[0], curves.items(), strict=True):
        for label, values in lines.items():
            axis.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=label)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
