"""The stratified train/val/test split, and the checks that a decoded data set can be split.

`check_dataset` is the one check every source's decoded set passes before anything is
written; `split_indices` runs it. Bad input raises `DataError` with one line naming the
file, folder or source and what was expected.
"""

from __future__ import annotations

import numpy as np

from gradguard.errors import DataError
from gradguard.params import DataParams

SPLITS = ("train", "val", "test")


def check_labels(y: np.ndarray, n: int, name: str) -> np.ndarray:
    """Labels must be N > 0 integers 0..K-1 with every class present (see `check_dataset`)."""
    if y.shape != (n,):
        raise DataError(f"{name}: y has shape {y.shape}; expected ({n},), one label per image")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name}: y has dtype {y.dtype}; expected integer class labels")
    if n == 0:
        raise DataError(f"{name}: holds no images; expected images of at least 2 classes")
    if y.min() < 0:
        raise DataError(f"{name}: label {y.min()} is out of range; expected labels 0..K-1")
    missing = sorted(set(range(int(y.max()) + 1)) - set(np.unique(y).tolist()))
    if missing:
        raise DataError(
            f"{name}: labels run 0..{int(y.max())} but classes {missing} have no images; "
            "expected labels 0..K-1 with no gap (renumber the classes)"
        )
    return y.astype(np.int32)


def check_dataset(y: np.ndarray, params: DataParams, name: str) -> np.ndarray:
    """The one check every decoded data set passes, whatever its source, before anything
    is written (after the images, so that a broken file is named for what is broken first).

    - at least 2 classes (a classifier of one class learns nothing);
    - labels 0..K-1 with no gap: a class number without images is refused, not renumbered
      (a folder source numbers its sub-folders in sorted name order, so it has no gaps);
    - every class large enough for the stratified split: at least 3 images, one for
      each of train, val and test;
    - train, val and test each hold at least one image of every class.

    Raises:
        DataError: one line naming `name` (the file, folder or source) and the problem.
    """
    y = check_labels(y, len(y), name)
    counts = np.bincount(y)
    if len(counts) < 2:
        raise DataError(
            f"{name}: every image has label 0, a single class; expected at least 2 classes "
            "(a classifier of one class learns nothing)"
        )
    smallest = int(counts.argmin())
    if counts[smallest] < len(SPLITS):
        raise DataError(
            f"{name}: class {smallest} has {counts[smallest]} image(s); expected at least "
            f"{len(SPLITS)} per class, one for each of train, val and test"
        )
    sizes = split_sizes(len(y), params)
    if min(sizes.values()) < len(counts):
        raise DataError(
            f"{name}: {len(y)} images in {len(counts)} classes split into train/val/test "
            f"{'/'.join(str(n) for n in sizes.values())} images; expected at least one image "
            f"of every class in each (more images, or other data.val_fraction/test_fraction)"
        )
    return y


def split_sizes(count: int, params: DataParams) -> dict[str, int]:
    """Images in each split: val and test take their fractions of `count`, rounded up."""
    test = int(np.ceil(params.test_fraction * count))
    val = int(np.ceil(params.val_fraction * count))
    return {"train": count - val - test, "val": val, "test": test}


def split_indices(
    y: np.ndarray, params: DataParams, seed: int, name: str = "data"
) -> dict[str, np.ndarray]:
    """Stratified, seeded split of image indices into {"train", "val", "test"}.

    Raises:
        DataError: when the set fails `check_dataset` (e.g. a class too small to split).
    """
    from sklearn.model_selection import train_test_split

    check_dataset(y, params, name)
    sizes = split_sizes(len(y), params)
    everything = np.arange(len(y))
    rest, test = train_test_split(
        everything, test_size=sizes["test"], stratify=y, random_state=seed
    )
    train, val = train_test_split(rest, test_size=sizes["val"], stratify=y[rest], random_state=seed)
    return {"train": train, "val": val, "test": test}


def split(x: np.ndarray, y: np.ndarray, params: DataParams, seed: int) -> dict:
    """Stratified, seeded split into {"train", "val", "test"}: (x, y) (see `split_indices`)."""
    return {name: (x[rows], y[rows]) for name, rows in split_indices(y, params, seed).items()}
