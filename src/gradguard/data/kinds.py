"""What one example is (an image, a sequence, a table row) and how each kind is loaded.

`data.kind: auto` reads the kind from an `.npz`'s `x` (`kind_of`); an explicit kind
wins. Images go through `gradguard.data.sources`' image path, unchanged; sequences
(N, T, F) and tables (N, F) come as float32, nothing reshaped. Generated sources
(`temporal_order`) make sequences from the seed, their splits fixed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gradguard.data.sources import load_source, open_npz, raw_chunks
from gradguard.data.splits import check_labels
from gradguard.errors import DataError
from gradguard.params import DataParams


def kind_of(rank: int, floating: bool, in_unit_range: bool) -> tuple[str, str]:
    """`data.kind: auto`'s rule: the kind of an `.npz`'s `x`, and why.

    Everything an image before stays one (rank 4; rank 3 of integers, or of floats
    in [0, 1]); rank-3 floats outside [0, 1] are sequences (N, T, F); rank 2 is a
    table (N, F). Other ranks are images, refused by the image check with its words.

    Args:
        rank: `x.ndim`.
        floating: whether `x` holds floats.
        in_unit_range: whether every value of `x` lies in [0, 1] (read for rank-3 floats only).
    """
    if rank == 2:
        return "table", "x has rank 2 (N, F)"
    if rank == 3 and floating and not in_unit_range:
        return "sequence", "x holds rank-3 floats outside [0, 1] (N, T, F)"
    if rank == 3:
        what = "floats in [0, 1]" if floating else "integers"
        return "image", f"x holds rank-3 {what} (N, H, W)"
    return "image", f"x has rank {rank}"


def _in_unit_range(path: str) -> bool:
    """Whether every value of an `.npz`'s `x` lies in [0, 1] (NaN: no), one chunk at a time."""
    return all(bool(np.all((chunk >= 0) & (chunk <= 1))) for _, chunk in raw_chunks(path))


def load_features(path: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """An `.npz` of sequences (N, T, F) or a table (N, F), as float32, with its labels.

    Raises:
        DataError: `x` of another rank, not numbers, or holding NaN or Inf.
    """
    archive, y, stream, shape, dtype = open_npz(path)
    archive.close()
    stream.close()
    rank, form = (3, "(N, T, F)") if kind == "sequence" else (2, "(N, F)")
    if len(shape) != rank or not shape[0] or 0 in shape:
        raise DataError(f"{path}: x has shape {shape}; expected {form} for data.kind {kind!r}")
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise DataError(f"{path}: x has dtype {dtype}; expected integers or floats")
    y = check_labels(np.asarray(y), shape[0], path)
    x = np.empty(shape, np.float32)
    for first, chunk in raw_chunks(path):
        part = x[first : first + len(chunk)]
        part[...] = chunk
        if not np.isfinite(part).all():
            bad = int(np.count_nonzero(~np.isfinite(part)))
            raise DataError(
                f"{path}: x holds {bad} NaN or Inf value(s) (examples {first}.."
                f"{first + len(chunk) - 1}); expected finite values"
            )
    return x, y


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A source's examples, their kind (one of `gradguard.kind_keys.KINDS`), and why that kind."""

    x: np.ndarray  # uint8 images, or float32 sequences or tables
    y: np.ndarray  # int32 labels 0..K-1
    kind: str
    why: str  # "data.kind", or the rule `kind_of` applied
    splits: dict | None = None  # split -> rows, where the source fixes them (generated ones)


def generate(params: DataParams, seed: int) -> Loaded:
    """A generated source (`temporal_order`): each split drawn from its own seed, stored as
    generated (one-hot symbols, not standardised), the splits' sizes the params'."""
    from gradguard.data.tasks import temporal_order

    if params.kind not in ("auto", "sequence"):
        raise DataError(
            f"data.kind={params.kind!r}: data.source={params.source!r} makes sequences; "
            "expected data.kind auto or sequence"
        )
    counts = {"train": params.train_count, "val": params.val_count, "test": params.test_count}
    parts = [temporal_order(n, params.length, seed * 3 + i) for i, n in enumerate(counts.values())]
    ends = np.cumsum([0, *counts.values()])
    splits = {name: np.arange(ends[i], ends[i + 1]) for i, name in enumerate(counts)}
    x, y = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
    return Loaded(x, y, "sequence", f"data.source={params.source!r} makes sequences", splits)


def load_data(params: DataParams) -> Loaded:
    """Load the source of `params` as the kind `data.kind` says, or as `kind_of` reads it.

    Raises:
        DataError: a kind the source cannot hold, or any check of the kind's loader.
    """
    if params.source != "npz":
        if params.kind not in ("auto", "image"):
            raise DataError(
                f"data.kind={params.kind!r}: data.source={params.source!r} holds images; "
                "expected data.kind auto or image (sequences and tables come as .npz)"
            )
        x, y = load_source(params)
        return Loaded(x, y, "image", f"data.source={params.source!r} holds images")
    if params.kind != "auto":
        kind, why = params.kind, f"data.kind={params.kind!r}"
    else:
        archive, _, stream, shape, dtype = open_npz(params.path)
        archive.close()
        stream.close()
        floating = np.issubdtype(dtype, np.floating)
        scan = len(shape) == 3 and floating and shape[0] > 0
        kind, why = kind_of(len(shape), floating, not scan or _in_unit_range(params.path))
    if kind == "image":
        return Loaded(*load_source(params), kind, why)
    return Loaded(*load_features(params.path, kind), kind, why)
