"""The baselines and the test metrics: numbers computed by hand, chunking that changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from gradguard.evaluation import scores as evaluation
from gradguard.evaluation.scores import KernelBaseline, baseline_accuracy, classification_metrics


def blobs(n=120, seed=0):
    """Three classes of 4x4x3 uint8 images: a bright channel each, plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.integers(0, 60, (n, 4, 4, 3))
    x[np.arange(n), :, :, y] += 150
    return x.astype(np.uint8), y


def test_kernel_width_is_svcs_scale_rule_and_chunks_change_nothing(monkeypatch):
    x, y = blobs()
    model = KernelBaseline(seed=1).fit(x, y)
    pixels = x.reshape(len(x), -1) / 255.0
    assert model.map.gamma == pytest.approx(1.0 / (48 * pixels.var()), rel=1e-6)  # float32 pixels
    assert model.map.n_components == 120  # fewer images than 1,000 components: all of them
    score = model.score(x, y)
    assert score == 1.0  # the bright channel names the class
    monkeypatch.setattr(evaluation, "BASELINE_CHUNK", 7)  # 120 = 17 chunks of 7 and one of 1
    chunked = KernelBaseline(seed=1).fit(x, y)
    np.testing.assert_allclose(chunked.map.gamma, model.map.gamma, rtol=1e-12)
    # The same features up to float32 rounding (BLAS blocks by chunk), so the same fit.
    np.testing.assert_allclose(chunked.classifier.coef_, model.classifier.coef_, rtol=1e-4)
    assert chunked.score(x, y) == score


def test_bytes_and_floats_give_the_same_baseline():
    x, y = blobs(seed=2)
    test = blobs(60, seed=3)
    floats = (x.astype(np.float32) / 255, y)
    float_test = (test[0].astype(np.float32) / 255, test[1])
    for kind in ("kernel", "svc", "logistic"):
        assert baseline_accuracy(kind, (x, y), test, 0) == pytest.approx(
            baseline_accuracy(kind, floats, float_test, 0)
        )


def test_metrics_by_hand_and_a_nonfinite_row_counts_as_wrong():
    y = np.array([0, 1, 1, 2])
    p = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [np.nan, 0.5, 0.5]])
    scores = classification_metrics(y, p)
    assert scores["accuracy"] == 0.5  # rows 0 and 1 right, 2 wrong, 3 non-finite
    assert scores["per_class_accuracy"] == {"0": 1.0, "1": 0.5, "2": 0.0}
    assert scores["confusion"] == [[1, 0, 0], [1, 1, 0], [1, 0, 0]]
    assert np.isnan(scores["loss"])
