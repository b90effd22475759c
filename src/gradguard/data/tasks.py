"""Synthetic tasks generated from a seed, offline: Pascanu et al. 2013's temporal order.

The task of "On the difficulty of training recurrent neural networks" (Pascanu,
Mikolov and Bengio, ICML 2013, section 4.1.1), as the authors' code generates it
(pascanur/trainingRNNs, `tempOrder.py`): a sequence of 6 one-hot symbols, A and B
the signals, c-f distractors; one signal in each of two windows, distractors
everywhere else; the class is the signals' order, v0 + 2 v1 (AA, BA, AB, BB).
"""

from __future__ import annotations

import numpy as np

SYMBOLS = 6  # 0 = A, 1 = B, 2..5 = c..f
CLASSES = 4
MIN_LENGTH = 10  # below it the windows, int(0.1 L) wide, are empty


def signal_windows(length: int) -> tuple[range, range]:
    """Where the two signals may sit, with w = int(.1 L) and m = int(.5 L): [w, 2w), [m, m + w).

    The authors' code, not its docstring (which says [1, L/10] for the first) nor
    the paper's text: both draw `randint(int(.1 L))` and add the window's start.
    """
    width, middle = int(length * 0.1), int(length * 0.5)
    return range(width, 2 * width), range(middle, middle + width)


def temporal_order(count: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` sequences of the temporal-order task of `length` steps, from `seed`.

    Draws from its own seeded numpy generator, so the bytes are ours, not the authors'
    Theano run's; the windows, symbols and labels are theirs.

    Returns:
        `x`: float32 one-hot (count, length, 6), symbol 0 = A, 1 = B, 2..5 = c..f;
        `y`: int32 labels v0 + 2 v1 in 0..3, where v0 (v1) is the first (second) signal.

    Raises:
        ValueError: `length` < 10 or `count` < 1.
    """
    if length < MIN_LENGTH:
        raise ValueError(f"length={length}; expected >= {MIN_LENGTH} (the signal windows)")
    if count < 1:
        raise ValueError(f"count={count}; expected >= 1")
    first, second = signal_windows(length)
    rng = np.random.default_rng(seed)
    rows = np.arange(count)
    p0 = rng.integers(len(first), size=count) + first.start
    v0 = rng.integers(2, size=count)
    p1 = rng.integers(len(second), size=count) + second.start
    v1 = rng.integers(2, size=count)
    symbols = rng.integers(SYMBOLS - 2, size=(count, length)) + 2
    symbols[rows, p0] = v0
    symbols[rows, p1] = v1
    x = np.zeros((count, length, SYMBOLS), np.float32)
    np.put_along_axis(x, symbols[..., None], 1.0, axis=2)
    return x, (v0 + 2 * v1).astype(np.int32)
