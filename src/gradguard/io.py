"""Atomic outputs: a stage writes everything or nothing.

Each writer builds its output beside the target (same file system, so the
final `os.replace` is atomic) and removes the partial file if anything fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from gradguard.errors import DataError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `target`; move it onto `target` on success.

    Works for files and folders alike: whatever the body creates at the
    yielded path replaces `target` only if the body returns normally.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staged = tmp / (target.name + suffix)
    try:
        yield staged
        old = None
        if target.is_dir() and not target.is_symlink():
            old = tmp / "old"
            target.rename(old)  # a folder cannot be replaced over a non-empty one
        try:
            os.replace(staged, target)
        except BaseException:
            if old is not None:
                old.rename(target)  # put the previous output back
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# Time of every entry of a canonical zip: the earliest a zip can hold (as reproducible-builds'
# SOURCE_DATE_EPOCH practice does), so the bytes depend on the contents alone.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def canonical_zip(
    path: str | os.PathLike, rewrite: Mapping[str, Callable[[bytes], bytes]] | None = None
) -> None:
    """Rewrite a zip in place so that equal contents give equal bytes, atomically.

    Entries are sorted by name and get a fixed time and mode; each keeps its
    compression. `rewrite` maps an entry name to a function of its bytes (e.g.
    to drop a date from a metadata file).

    Args:
        path: the zip file (e.g. a `.keras` model).
        rewrite: entry name -> function applied to that entry's bytes.
    """
    rewrite = rewrite or {}
    with zipfile.ZipFile(path) as source:
        entries = [(info, source.read(info)) for info in source.infolist()]
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as target:
        for info, data in sorted(entries, key=lambda entry: entry[0].filename):
            fixed = zipfile.ZipInfo(info.filename, date_time=ZIP_EPOCH)
            fixed.compress_type = info.compress_type
            fixed.external_attr = 0o644 << 16
            fixed.create_system = 3  # Unix, whatever system wrote the original
            target.writestr(fixed, rewrite.get(info.filename, bytes)(data))


def strict(data):
    """`data` for strict JSON: every non-finite float (NaN, Inf: a blown-up run's norm or
    weight growth) becomes None, i.e. `null`, which jq, JSON.parse and DVC's clients read;
    `Infinity` and `NaN` are not JSON."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, Mapping):
        return {key: strict(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [strict(value) for value in data]
    return data


def to_json(data, sort_keys: bool = True) -> str:
    """Indented strict JSON (see `strict`), with a final newline."""
    return json.dumps(strict(data), indent=2, sort_keys=sort_keys, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, data: Mapping, sort_keys: bool = True) -> None:
    """Write `data` as indented strict JSON, atomically (keys sorted unless `sort_keys=False`).
    A non-finite number is written as `null` (see `strict`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(to_json(data, sort_keys), encoding="utf-8")


def save_arrays(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write arrays to an uncompressed `.npz`, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def load_arrays(path: str | os.PathLike, keys: tuple[str, ...] = ("x", "y")) -> tuple:
    """Read named arrays from an `.npz` without pickles.

    Raises:
        DataError: naming the file and what is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise DataError(f"{path}: missing array(s) {missing}; found {data.files}")
            return tuple(data[k] for k in keys)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:  # truncated, pickles
        if isinstance(error, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz of plain arrays ({error})") from error


def fingerprint(*arrays: np.ndarray) -> str:
    """SHA-256 of the arrays' dtypes, shapes and bytes (hex, first 16 digits)."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def read_yaml(path: str | os.PathLike, error: type[Exception] = ValueError, what: str = "file"):
    """A YAML file's content; `error`, one line, when it is missing or not valid YAML
    (`<path>: <what> not found`, `<path>: not valid YAML (<the parser's words>)`)."""
    try:
        import yaml
    except ModuleNotFoundError as missing:  # the library alone does not need it
        raise error(f"{path}: reading YAML needs PyYAML (pip install pyyaml)") from missing
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except (FileNotFoundError, IsADirectoryError) as gone:
        raise error(f"{path}: {what} not found") from gone
    except yaml.YAMLError as bad:
        raise error(f"{path}: not valid YAML ({' '.join(str(bad).split())})") from bad
