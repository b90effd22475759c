"""The prepare stage's work: load a source, check it, split it, write shard sets.

Images are stored as uint8; sequences and tables as float32, each feature
standardised with the training split's mean and std (`data.standardize`), which
stats.json keeps so that new data can be scaled alike (`standardise`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gradguard.data.kinds import generate, load_data
from gradguard.data.shards import ShardWriter
from gradguard.data.sources import CHUNK, source_name
from gradguard.data.splits import SPLITS, split_indices
from gradguard.errors import ParamsError
from gradguard.io import atomic_path, write_json
from gradguard.kind_keys import check_kind
from gradguard.params import GENERATED, DataParams


def check_inside(path: str | None, raw: str | Path) -> None:
    """A user's data must lie in the folder dvc.yaml tracks as prepare's input.

    Raises:
        ParamsError: `path` is outside `raw`, where a change to it would go unseen.
    """
    if path is not None and not Path(path).resolve().is_relative_to(Path(raw).resolve()):
        raise ParamsError(
            f"params: data.path={path!r} is invalid; expected a file or folder inside {raw}/, "
            "the folder dvc.yaml tracks as prepare's input (move it there, then `dvc add` it)"
        )


def prepare(params: DataParams, seed: int, raw: str | Path, out: str | Path) -> dict:
    """Write `out`/{train,val,test} shard sets and `out`/stats.json, all or nothing.

    Args:
        params: the `data` params.
        seed: the split's seed.
        raw: the folder user data (npz, folder) must lie in.
        out: the folder to write.

    Returns:
        The stats written to stats.json (kind and why, counts, shards, fingerprints,
        and the standardisation's mean and std where there is one).
    """
    if params.source in ("npz", "folder"):
        check_inside(params.path, raw)
    generated = params.source in GENERATED
    loaded = generate(params, seed) if generated else load_data(params)
    check_kind(loaded.kind, data=params)
    x, y = loaded.x, loaded.y
    splits = loaded.splits or split_indices(y, params, seed, source_name(params))
    num_classes = int(y.max()) + 1
    scaling = None
    if loaded.kind != "image" and params.standardize and not generated:
        scaling = feature_moments(x, splits["train"])
    with atomic_path(out) as folder:
        folder.mkdir()
        indexes = {}
        for name in SPLITS:
            (folder / name).mkdir()
            writer = ShardWriter(folder / name, x.shape[1:], num_classes, str(x.dtype), loaded.kind)
            rows = splits[name]
            for start in range(0, len(rows), CHUNK):
                chunk = x[rows[start : start + CHUNK]]
                chunk = chunk if scaling is None else standardise(chunk, scaling)
                writer.add(chunk, y[rows[start : start + CHUNK]])
            indexes[name] = writer.close()
        stats = {
            "source": params.source,
            "kind": loaded.kind,
            "kind_because": loaded.why,
            "example_shape": list(x.shape[1:]),
            "dtype": str(x.dtype),
            "standardize": scaling,
            "num_classes": num_classes,
            "counts": {
                name: np.bincount(y[splits[name]], minlength=num_classes).tolist()
                for name in SPLITS
            },
            "shards": {name: len(indexes[name]["shards"]) for name in SPLITS},
            "fingerprint": {name: indexes[name]["fingerprint"] for name in SPLITS},
        }
        write_json(folder / "stats.json", stats)
    return stats


def feature_moments(x: np.ndarray, rows: np.ndarray) -> dict[str, list[float]]:
    """Each feature's (last axis) mean and std over `x[rows]`, in float64, chunk by chunk.

    Two passes (the mean, then the squared deviations from it), so a feature far from 0
    loses no precision to E[x^2] - E[x]^2. The std is the population one (ddof 0); a
    constant feature gets std 1, so that standardising leaves it at 0.
    """
    features = x.shape[-1]

    def chunks():
        for start in range(0, len(rows), CHUNK):
            yield x[rows[start : start + CHUNK]].astype(np.float64).reshape(-1, features)

    count = max(len(rows) * int(np.prod(x.shape[1:-1])), 1)  # values a feature has
    mean = sum((chunk.sum(axis=0) for chunk in chunks()), np.zeros(features)) / count
    squares = sum((np.square(chunk - mean).sum(axis=0) for chunk in chunks()), np.zeros(features))
    std = np.sqrt(squares / count)
    std[std <= 1e-12 * np.maximum(np.abs(mean), 1.0)] = 1.0
    return {"mean": mean.tolist(), "std": std.tolist()}


def standardise(x: np.ndarray, moments: dict[str, list[float]]) -> np.ndarray:
    """`x` minus each feature's mean, over its std (`feature_moments`, or stats.json's
    `standardize`), as float32: how prepare scales every split."""
    mean = np.asarray(moments["mean"], np.float64)
    std = np.asarray(moments["std"], np.float64)
    return ((x.astype(np.float64) - mean) / std).astype(np.float32)
