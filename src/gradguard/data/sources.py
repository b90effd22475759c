"""Data sources: the bundled digits, Keras downloads, `.npz` files and image folders.

Every image source returns `(x, y)`: uint8 images of shape (N, size, size, channels)
(0..255, one byte a pixel) and int32 labels 0..K-1. Large sources are
converted in chunks, so no float copy of the whole set is ever made. An `.npz`
may hold sequences (N, T, F) or tables (N, F) instead: `gradguard.data.kinds` tells
the kind and loads those. Bad input
raises `DataError` with one line that names the file or array and what was
expected; `gradguard.data.splits.check_dataset` is the one check of the decoded set,
for every source.
"""

from __future__ import annotations

import math
import mmap
import multiprocessing
import os
import sys
import zipfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from gradguard.data.splits import check_labels
from gradguard.errors import DataError
from gradguard.io import load_arrays
from gradguard.params import DataParams

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CHUNK = 4096  # images converted at a time
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, as Pillow's "L" conversion


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, H, W, C) uint8 images to (N, size, size, C), with Pillow.

    Pillow rather than TensorFlow keeps `prepare` free of a 5 s framework import.
    """
    if images.shape[1:3] == (size, size):
        return images
    from PIL import Image

    mode = "L" if images.shape[-1] == 1 else "RGB"
    resized = [
        np.asarray(
            Image.fromarray(image[..., 0] if mode == "L" else image, mode=mode).resize(
                (size, size), Image.Resampling.BILINEAR
            )
        )
        for image in images
    ]
    return np.stack(resized).reshape(len(images), size, size, images.shape[-1])


def normalise_images(x: np.ndarray, name: str, channels: int = 1, first: int = 0) -> np.ndarray:
    """Check and convert raw images to uint8 (N, H, W, channels).

    Accepts (N, H, W), (N, H, W, 1) or (N, H, W, 3); integer pixels are read
    as 0..255, float pixels must be in [0, 1] (rounded to the nearest 1/255).
    Colour becomes grey (ITU-R 601 luma) for `channels=1`; grey is repeated
    into three equal channels for `channels=3`.

    Args:
        x: the images (or a chunk of them, starting at image `first`).
        name: the file or source named in errors.
        channels: 1 or 3.
        first: index of `x[0]` in the whole set (for error messages).
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
    where = f" (images {first}..{first + len(x) - 1})" if first or len(x) >= CHUNK else ""
    if np.issubdtype(x.dtype, np.integer):
        if x.min() < 0 or x.max() > 255:
            raise DataError(
                f"{name}: integer pixels span [{x.min()}, {x.max()}]{where}; expected 0..255"
            )
        if x.shape[-1] == channels:
            return x.astype(np.uint8, copy=False)
        x = x.astype(np.float32)
    else:
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise DataError(
                f"{name}: x holds {bad} NaN or Inf pixel(s){where}; expected finite values"
            )
        if x.min() < 0 or x.max() > 1:
            raise DataError(
                f"{name}: float pixels span [{x.min():.4g}, {x.max():.4g}]{where}; expected [0, 1]"
            )
        x = x * np.float32(255)
    if x.shape[-1] == 3 and channels == 1:
        x = x @ LUMA[:, None]
    elif x.shape[-1] == 1 and channels == 3:
        x = np.repeat(x, 3, axis=-1)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def source_name(params: DataParams) -> str:
    """What errors call the data: its file or folder, else the source's name."""
    return params.path or params.source


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


def _npz_member(archive: zipfile.ZipFile, key: str, path: str):
    """Open array `key` of an `.npz` as a stream: (stream, shape, dtype)."""
    stream = archive.open(f"{key}.npy")
    version = np.lib.format.read_magic(stream)
    read_header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read_header(stream)
    if dtype.hasobject:
        stream.close()
        raise DataError(f"{path}: not a readable .npz of plain arrays ({key} holds Python objects)")
    if fortran and len(shape) > 1:
        stream.close()
        raise DataError(f"{path}: {key} is stored in Fortran order; expected C order (np.savez)")
    return stream, shape, dtype


def open_npz(path: str):
    """An `.npz`'s archive, its labels, and `x` as a stream: (archive, y, stream, shape, dtype)."""
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError as error:
        raise DataError(f"{path}: file not found") from error
    except (OSError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz of plain arrays ({error})") from error
    names = [name.removesuffix(".npy") for name in archive.namelist()]
    missing = [key for key in ("x", "y") if key not in names]
    if missing:
        archive.close()
        raise DataError(f"{path}: missing array(s) {missing}; found {names}")
    try:
        (y,) = load_arrays(path, ("y",))
        stream, shape, dtype = _npz_member(archive, "x", path)
    except BaseException:
        archive.close()
        raise
    return archive, y, stream, shape, dtype


def raw_chunks(path: str) -> Iterator[tuple[int, np.ndarray]]:
    """`x` of an `.npz` as it is stored, `CHUNK` examples at a time: (first, chunk)."""
    archive, _, stream, shape, dtype = open_npz(path)
    with archive, stream:
        count = shape[0] if shape else 0
        row = int(np.prod(shape[1:])) * dtype.itemsize
        for first in range(0, count, CHUNK):
            rows = min(CHUNK, count - first)
            data = stream.read(rows * row)
            if len(data) != rows * row:
                raise DataError(f"{path}: x is truncated; expected {count} examples")
            yield first, np.frombuffer(data, dtype).reshape(rows, *shape[1:])


def iter_npz(path: str, channels: int) -> tuple[Iterator[np.ndarray], np.ndarray, int]:
    """A user's `.npz` with arrays `x` (images) and `y` (labels), `x` read in chunks.

    Returns:
        (uint8 chunks of `x` as `normalise_images` gives them, the labels, the image count).
        The chunks are read from the file as they are consumed, so an `x` of any
        size and dtype costs one chunk of memory.
    """
    archive, y, stream, shape, dtype = open_npz(path)
    archive.close()
    stream.close()
    count = shape[0] if shape else 0

    def chunks() -> Iterator[np.ndarray]:
        if len(shape) not in (3, 4) or count == 0:  # let normalise_images name the shape
            yield normalise_images(np.zeros(shape, dtype), path, channels)
            return
        for first, chunk in raw_chunks(path):
            yield normalise_images(chunk, path, channels, first)

    return chunks(), y, count


def _decode(files: list[str], size: int, channels: int, out: np.ndarray | None = None):
    """Decode and resize image files into uint8 `out` (n, size, size, channels) (in a worker)."""
    from PIL import Image, UnidentifiedImageError

    if out is None:
        out = np.empty((len(files), size, size, channels), np.uint8)
    for i, file in enumerate(files):
        try:
            with Image.open(file) as image:
                converted = image.convert("L" if channels == 1 else "RGB")
                resized = converted.resize((size, size), Image.Resampling.BILINEAR)
                out[i] = np.asarray(resized, np.uint8).reshape(size, size, channels)
        except (UnidentifiedImageError, OSError) as error:
            raise DataError(f"{file}: not a readable image ({error})") from error
    return out


_SHARED: np.ndarray | None = None  # load_folder's output, as forked workers inherit it


def _decode_shared(first: int, files: list[str], size: int, channels: int) -> None:
    """Decode straight into the output the parent shares with its forked workers."""
    _decode(files, size, channels, _SHARED[first : first + len(files)])


def decode_workers() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def load_folder(
    path: str, size: int, channels: int = 1, workers: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One sub-folder of PNG/JPEG images per class; classes in sorted name order.

    Files are decoded in parallel, in chunks, by a pool of `workers` processes
    (default: every core this process may use); the result is in file order
    whatever the pool does. Workers are forked (cheap) unless a framework with
    threads of its own is loaded, then spawned (forking those is unsafe).
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"data.path={path!r}: folder not found")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DataError(
            f"data.path={path!r}: found {len(classes)} class folder(s); "
            "expected one sub-folder per class, at least 2"
        )
    files, labels = [], []
    for label, folder in enumerate(classes):
        found = sorted(str(f) for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DataError(f"{folder}: no .png/.jpg/.jpeg images in this class folder")
        files += found
        labels += [label] * len(found)
    workers = workers or decode_workers()
    step = 256
    batches = [files[i : i + step] for i in range(0, len(files), step)]
    shape = (len(files), size, size, channels)
    firsts = range(0, len(files), step)
    threaded = any(name in sys.modules for name in ("tensorflow", "jax", "torch"))
    if workers == 1 or len(batches) == 1:
        images = np.empty(shape, np.uint8)
        for first, batch in zip(firsts, batches, strict=True):
            _decode(batch, size, channels, images[first : first + len(batch)])
    elif not threaded:
        # Forked workers write into one shared anonymous mapping: no result is pickled or
        # copied, and its pages are first touched by the workers, in parallel.
        global _SHARED
        images = np.frombuffer(mmap.mmap(-1, math.prod(shape)), np.uint8).reshape(shape)
        _SHARED = images
        try:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                count = len(batches)
                list(pool.map(_decode_shared, firsts, batches, [size] * count, [channels] * count))
        finally:
            _SHARED = None
    else:
        images = np.empty(shape, np.uint8)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            jobs = pool.map(_decode, batches, [size] * len(batches), [channels] * len(batches))
            for first, part in zip(firsts, jobs, strict=True):
                images[first : first + len(part)] = part
    return images, np.array(labels, np.int32)


def load_images(files, image_size: int, channels: int = 1) -> np.ndarray:
    """Image files, or every PNG/JPEG in a folder (sorted by name), as a model's input.

    Decoded and resized as `prepare` does (Pillow, bilinear; grey or RGB), then
    scaled to float32 in [0, 1]: what a model the pipeline trained takes.

    Args:
        files: a folder, or a list of image files.
        image_size: the side the model takes (`model.input_shape[1]`).
        channels: 1 or 3 (`model.input_shape[-1]`).

    Returns:
        float32 images (N, image_size, image_size, channels), in `files`' order.

    Raises:
        DataError: a file that is not a readable image, or a folder without images.
    """
    from gradguard.data.shards import to_float

    if isinstance(files, str | os.PathLike) and Path(files).is_dir():
        folder = Path(files)
        files = sorted(str(f) for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{folder}: no .png/.jpg/.jpeg images in this folder")
    return to_float(_decode([str(f) for f in files], image_size, channels))


def load_source(params: DataParams) -> tuple[np.ndarray, np.ndarray]:
    """Load, check and resize the source `params.source` names, a chunk at a time.

    The arrays are checked here (pixels, shapes, labels 0..K-1); the set as a whole
    (classes, split sizes) by `check_dataset`, which `split_indices` runs.

    Returns:
        uint8 images (N, image_size, image_size, channels) and int32 labels.
    """
    name = source_name(params)
    size, channels = params.image_size, params.channels
    if params.source == "folder":
        return load_folder(params.path, size, channels)
    if params.source == "npz":
        chunks, y, count = iter_npz(params.path, channels)
    else:
        raw, y = load_digits() if params.source == "digits" else load_keras_dataset(params.source)
        raw = np.asarray(raw)
        count = len(raw)
        chunks = (
            normalise_images(raw[i : i + CHUNK], name, channels, i)
            for i in range(0, max(count, 1), CHUNK)
        )
    y = check_labels(np.asarray(y), count, name)
    x = np.empty((count, size, size, channels), np.uint8)
    start = 0
    for chunk in chunks:
        x[start : start + len(chunk)] = _resize(chunk, size)
        start += len(chunk)
    return x, y
