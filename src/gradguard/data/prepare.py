"""The prepare stage's work: load a source, check it, split it, write uint8 shard sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gradguard.data.shards import ShardWriter
from gradguard.data.sources import CHUNK, load_source, source_name
from gradguard.data.splits import SPLITS, split_indices
from gradguard.errors import ParamsError
from gradguard.io import atomic_path, write_json
from gradguard.params import DataParams


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
        The stats written to stats.json (counts, shards, fingerprints).
    """
    if params.source in ("npz", "folder"):
        check_inside(params.path, raw)
    x, y = load_source(params)
    splits = split_indices(y, params, seed, source_name(params))  # check_dataset first
    num_classes = int(y.max()) + 1
    with atomic_path(out) as folder:
        folder.mkdir()
        indexes = {}
        for name in SPLITS:
            (folder / name).mkdir()
            writer = ShardWriter(folder / name, x.shape[1:], num_classes)
            rows = splits[name]
            for start in range(0, len(rows), CHUNK):
                writer.add(x[rows[start : start + CHUNK]], y[rows[start : start + CHUNK]])
            indexes[name] = writer.close()
        stats = {
            "source": params.source,
            "image_shape": list(x.shape[1:]),
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
