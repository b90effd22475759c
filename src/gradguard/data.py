"""Data sources, validation and the stratified train/val/test split.

Every source returns `(x, y)`: float32 images of shape (N, size, size, 1) in
[0, 1] and int32 labels 0..K-1. Bad input raises `DataError` with one line that
names the file or array and what was expected.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gradguard.io import DataError, load_arrays
from gradguard.params import DataParams

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "val", "test")


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, H, W, 1) float images to (N, size, size, 1), with Pillow.

    Pillow rather than TensorFlow keeps `prepare` free of a 5 s framework import.
    """
    if images.shape[1:3] == (size, size):
        return images
    from PIL import Image

    resized = [
        np.asarray(
            Image.fromarray(image[:, :, 0], mode="F").resize(
                (size, size), Image.Resampling.BILINEAR
            )
        )
        for image in images
    ]
    return np.clip(np.stack(resized), 0.0, 1.0).astype(np.float32)[..., None]


def normalise_images(x: np.ndarray, name: str) -> np.ndarray:
    """Check and convert raw images to float32 (N, H, W, 1) in [0, 1].

    Accepts (N, H, W), (N, H, W, 1) or (N, H, W, 3) (converted to grey, ITU-R
    601 luma); integer pixels are read as 0..255, float pixels must be in [0, 1].
    """
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{name}: x has dtype {x.dtype}; expected integer or float pixels")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or x.shape[0] == 0:
        raise DataError(
            f"{name}: x has shape {x.shape}; expected (N, H, W), (N, H, W, 1) "
            "or (N, H, W, 3) with N > 0"
        )
    if np.issubdtype(x.dtype, np.integer):
        if x.min() < 0 or x.max() > 255:
            raise DataError(f"{name}: integer pixels span [{x.min()}, {x.max()}]; expected 0..255")
        x = x.astype(np.float32) / 255.0
    else:
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise DataError(f"{name}: x holds {bad} NaN or Inf pixel(s); expected finite values")
        if x.min() < 0 or x.max() > 1:
            raise DataError(
                f"{name}: float pixels span [{x.min():.4g}, {x.max():.4g}]; expected [0, 1]"
            )
    if x.shape[-1] == 3:
        x = x @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]
    return x


def check_labels(y: np.ndarray, n: int, name: str) -> np.ndarray:
    """Labels must be N integers 0..K-1 with every class present."""
    if y.shape != (n,):
        raise DataError(f"{name}: y has shape {y.shape}; expected ({n},), one label per image")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name}: y has dtype {y.dtype}; expected integer class labels")
    if y.min() < 0:
        raise DataError(f"{name}: label {y.min()} is out of range; expected labels 0..K-1")
    missing = sorted(set(range(int(y.max()) + 1)) - set(np.unique(y).tolist()))
    if missing:
        raise DataError(
            f"{name}: label {int(y.max())} is out of range: classes {missing} have "
            "no images; expected labels 0..K-1 with every class present"
        )
    return y.astype(np.int32)


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, offline)."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target


def load_keras_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST or Fashion-MNIST through keras.datasets (downloaded once, then cached)."""
    import keras

    module = {"mnist": keras.datasets.mnist, "fashion_mnist": keras.datasets.fashion_mnist}[name]
    try:
        (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception as error:  # network errors come in many types
        raise DataError(
            f"data.source={name}: download failed ({error}); the first run "
            "needs the network, later runs read keras' cache"
        ) from error
    return np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])


def load_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    """A user's `.npz` with arrays `x` (images) and `y` (labels)."""
    return load_arrays(path, ("x", "y"))


def load_folder(path: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One sub-folder of PNG/JPEG images per class; classes in sorted name order."""
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"data.path={path!r}: folder not found")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DataError(
            f"data.path={path!r}: found {len(classes)} class folder(s); "
            "expected one sub-folder per class, at least 2"
        )
    images, labels = [], []
    for label, folder in enumerate(classes):
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{folder}: no .png/.jpg/.jpeg images in this class folder")
        for file in files:
            try:
                with Image.open(file) as image:
                    grey = image.convert("L").resize((size, size), Image.Resampling.BILINEAR)
                    images.append(np.asarray(grey, dtype=np.uint8))
            except (UnidentifiedImageError, OSError) as error:
                raise DataError(f"{file}: not a readable image ({error})") from error
            labels.append(label)
    return np.stack(images), np.array(labels, np.int32)


def load_source(params: DataParams) -> tuple[np.ndarray, np.ndarray]:
    """Load, check and resize the source `params.source` names."""
    name = params.path or params.source
    if params.source == "digits":
        x, y = load_digits()
    elif params.source in ("mnist", "fashion_mnist"):
        x, y = load_keras_dataset(params.source)
    elif params.source == "npz":
        x, y = load_npz(params.path)
    else:
        x, y = load_folder(params.path, params.image_size)
    x = normalise_images(np.asarray(x), name)
    y = check_labels(np.asarray(y), len(x), name)
    return _resize(x, params.image_size), y


def split(x: np.ndarray, y: np.ndarray, params: DataParams, seed: int) -> dict:
    """Stratified, seeded split into {"train", "val", "test"}: (x, y).

    Raises:
        DataError: when a class has too few images to appear in every split.
    """
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    n_test = int(np.ceil(params.test_fraction * len(y)))
    n_val = int(np.ceil(params.val_fraction * len(y)))
    smallest = int(counts.argmin())
    if counts[smallest] < 3 or min(n_test, n_val) < len(counts):
        raise DataError(
            f"class {smallest} has {counts[smallest]} image(s) among {len(y)} in "
            f"{len(counts)} classes; expected at least 3 per class and val/test splits "
            f"(now {n_val}/{n_test} images) of at least one image per class"
        )
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=n_test, stratify=y, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=n_val, stratify=y_rest, random_state=seed
    )
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}
