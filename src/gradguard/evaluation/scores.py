"""Scoring predictions on the test split, and a scikit-learn baseline beside the CNN."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gradguard.data.shards import to_float


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


BASELINE_CHUNK = 2048  # images turned into float pixels at a time by the kernel baseline


def _pixels(x: np.ndarray) -> np.ndarray:
    """Images (uint8 0..255 or float 0..1) as float32 rows of pixels in [0, 1]."""
    rows = x.reshape(len(x), -1)
    return to_float(rows) if x.dtype == np.uint8 else rows.astype(np.float32)


class KernelBaseline:
    """An RBF kernel machine in linear time and bounded memory.

    The Nystroem map (Williams and Seeger 2001) onto at most `components`
    training images chosen at random, then a multinomial logistic regression
    (C = 10) on the mapped features. Its kernel width is the one
    `SVC(gamma="scale")` uses, 1 / (pixels x pixel variance). Pixels are turned
    into floats `BASELINE_CHUNK` images at a time, so memory is the mapped
    features (n x components) plus one chunk, whatever the image size.
    """

    def __init__(self, seed: int, components: int = 1000):
        self.seed, self.components = seed, components

    def _mapped(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [
                self.map.transform(_pixels(x[i : i + BASELINE_CHUNK]))
                for i in range(0, len(x), BASELINE_CHUNK)
            ]
        )

    def fit(self, x: np.ndarray, y: np.ndarray) -> KernelBaseline:
        from sklearn.kernel_approximation import Nystroem
        from sklearn.linear_model import LogisticRegression

        total = sum_squares = 0.0
        for i in range(0, len(x), BASELINE_CHUNK):
            part = _pixels(x[i : i + BASELINE_CHUNK]).astype(np.float64)
            total += part.sum()
            sum_squares += np.square(part).sum()
        count = x[0].size * len(x)
        variance = sum_squares / count - (total / count) ** 2
        basis = np.random.default_rng(self.seed).choice(
            len(x), min(self.components, len(x)), replace=False
        )
        self.map = Nystroem(
            gamma=1.0 / (x[0].size * max(variance, 1e-12)),
            n_components=len(basis),
            random_state=self.seed,
        ).fit(_pixels(x[np.sort(basis)]))
        self.classifier = LogisticRegression(C=10.0, max_iter=1000, random_state=self.seed)
        self.classifier.fit(self._mapped(x), y)
        return self

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.classifier.predict(self._mapped(x)) == y))


def baseline_accuracy(kind: str, train: tuple, test: tuple, seed: int) -> float:
    """Test accuracy of a scikit-learn baseline on the flattened pixels.

    Args:
        kind: "kernel" (`KernelBaseline`: linear time, bounded memory), "svc"
            (the exact RBF support vector machine: quadratic in the training
            images) or "logistic" (multinomial logistic regression).
        train, test: `(x, y)` arrays, pixels uint8 0..255 or float 0..1; the
            un-augmented training split is fair.
        seed: random state of the classifier.
    """
    if kind == "kernel":
        return KernelBaseline(seed).fit(*train).score(*test)
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    model = (
        SVC(random_state=seed)
        if kind == "svc"
        else LogisticRegression(max_iter=2000, random_state=seed)
    )
    model.fit(_pixels(train[0]), train[1])
    return float(model.score(_pixels(test[0]), test[1]))


def confusion_rows(y_true: Sequence[int], y_pred: Sequence[int]) -> list[dict]:
    """Rows `{"actual": a, "predicted": p}` for DVC's `confusion` plot template."""
    return [{"actual": int(a), "predicted": int(p)} for a, p in zip(y_true, y_pred, strict=True)]
