"""gradguard.data.tasks: the temporal-order task as the authors' code generates it."""

from __future__ import annotations

import numpy as np
import pytest

from gradguard.data import temporal_order
from gradguard.data.tasks import signal_windows


@pytest.mark.parametrize("length", [10, 25, 50, 117])
def test_two_signals_in_their_windows_distractors_elsewhere_and_the_label(length):
    x, y = temporal_order(3000, length, seed=11)
    assert x.shape == (3000, length, 6) and x.dtype == np.float32 and y.dtype == np.int32
    assert np.all(x.sum(axis=2) == 1.0)  # one symbol a step
    symbols = x.argmax(axis=2)
    first, second = signal_windows(length)
    for row, label in zip(symbols[:500], y[:500], strict=True):
        signals = np.flatnonzero(row < 2)
        assert len(signals) == 2  # exactly A or B twice, every other step c..f
        assert signals[0] in first and signals[1] in second
        assert label == row[signals[0]] + 2 * row[signals[1]]
    # The windows by hand, from the authors' integer arithmetic: L = 25: [2, 4) and [12, 14).
    assert signal_windows(25) == (range(2, 4), range(12, 14))
    assert signal_windows(10) == (range(1, 2), range(5, 6))


def test_classes_are_balanced_and_a_seed_gives_the_same_bytes():
    x, y = temporal_order(20_000, 30, seed=3)
    counts = np.bincount(y, minlength=4)
    # Each class has probability 1/4: sd sqrt(20000 * 3/16) = 61; 5 sd either side.
    assert np.all(np.abs(counts - 5000) < 5 * 61.3)
    again = temporal_order(20_000, 30, seed=3)
    assert x.tobytes() == again[0].tobytes() and y.tobytes() == again[1].tobytes()
    assert temporal_order(100, 30, seed=4)[0].tobytes() != x[:100].tobytes()


def test_too_short_a_sequence_is_refused():
    with pytest.raises(ValueError, match="length=9; expected >= 10"):
        temporal_order(10, 9, seed=0)
