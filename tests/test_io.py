"""Atomic outputs, canonical zips, plain-array npz files and fingerprints."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from gradguard.errors import DataError
from gradguard.io import (
    ZIP_EPOCH,
    atomic_path,
    canonical_zip,
    fingerprint,
    load_arrays,
    read_yaml,
    save_arrays,
    strict,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]


def test_a_failed_body_leaves_the_old_output_and_no_temporary_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_folder_replaces_a_non_empty_folder_whole(tmp_path):
    target = tmp_path / "prepared"
    target.mkdir()
    (target / "stale.npz").write_bytes(b"x")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "fresh.npz").write_bytes(b"y")
    assert sorted(p.name for p in target.iterdir()) == ["fresh.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_write_json_sorts_keys_unless_told_and_ends_with_a_newline(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1, "a": [1.5]})
    assert (tmp_path / "a.json").read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
    write_json(tmp_path / "b.json", {"b": 1, "a": 2}, sort_keys=False)
    assert list(json.loads((tmp_path / "b.json").read_text())) == ["b", "a"]


def test_canonical_zip_gives_equal_bytes_for_equal_contents(tmp_path):
    first, second = tmp_path / "1.zip", tmp_path / "2.zip"
    for path, (names, when) in {
        first: (["b.txt", "a.txt"], (2020, 5, 1, 10, 0, 0)),
        second: (["a.txt", "b.txt"], (2024, 1, 2, 3, 4, 6)),
    }.items():
        with zipfile.ZipFile(path, "w") as archive:
            for name in names:
                archive.writestr(zipfile.ZipInfo(name, date_time=when), name.upper())
    assert first.read_bytes() != second.read_bytes()
    drop_case = {"a.txt": lambda data: data.lower()}
    canonical_zip(first, drop_case)
    canonical_zip(second, drop_case)
    assert (
        hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    )
    with zipfile.ZipFile(first) as archive:
        assert [i.filename for i in archive.infolist()] == ["a.txt", "b.txt"]
        assert {i.date_time for i in archive.infolist()} == {ZIP_EPOCH}
        assert archive.read("a.txt") == b"a.txt" and archive.read("b.txt") == b"B.TXT"


def test_arrays_round_trip_and_bad_files_are_one_line(tmp_path):
    save_arrays(tmp_path / "d.npz", x=np.arange(6, dtype=np.uint8).reshape(2, 3), y=np.ones(2))
    x, y = load_arrays(tmp_path / "d.npz")
    assert x.tolist() == [[0, 1, 2], [3, 4, 5]] and y.tolist() == [1.0, 1.0]
    with pytest.raises(DataError, match=r"missing array\(s\) \['z'\]; found \['x', 'y'\]"):
        load_arrays(tmp_path / "d.npz", ("x", "z"))
    with pytest.raises(DataError, match="file not found"):
        load_arrays(tmp_path / "none.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DataError, match=r"not a readable \.npz") as error:
        load_arrays(tmp_path / "text.npz")
    assert "\n" not in str(error.value)
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    with pytest.raises(DataError, match=r"not a readable \.npz"):  # no pickles, ever
        load_arrays(tmp_path / "objects.npz")


def test_fingerprint_covers_dtype_shape_and_bytes():
    a = np.arange(4, dtype=np.int32)
    assert fingerprint(a) == fingerprint(a.copy()) and len(fingerprint(a)) == 16
    assert fingerprint(a) != fingerprint(a.astype(np.int64))  # same values, other dtype
    assert fingerprint(a) != fingerprint(a.reshape(2, 2))  # same bytes, other shape
    assert fingerprint(a, a) != fingerprint(a)
    expected = hashlib.sha256(b"<i4(4,)" + a.tobytes()).hexdigest()[:16]
    assert fingerprint(a) == expected


def test_json_is_strict_a_non_finite_number_is_null(tmp_path):
    data = {"b": [1.5, float("inf")], "a": {"n": float("nan"), "k": -float("inf"), "i": 3}}
    assert strict(data) == {"b": [1.5, None], "a": {"n": None, "k": None, "i": 3}}
    write_json(tmp_path / "m.json", data)
    text = (tmp_path / "m.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text) == {"a": {"i": 3, "k": None, "n": None}, "b": [1.5, None]}


def test_read_yaml_is_the_one_place_yaml_errors_are_worded(tmp_path):
    (tmp_path / "bad.yaml").write_text("a: [\n")
    with pytest.raises(KeyError, match=r"bad\.yaml: not valid YAML \(while parsing"):
        read_yaml(tmp_path / "bad.yaml", KeyError)
    with pytest.raises(KeyError, match=r"gone\.yaml: rules file not found"):
        read_yaml(tmp_path / "gone.yaml", KeyError, "rules file")
    sources = [*(ROOT / "src").rglob("*.py"), *(ROOT / "stages").glob("*.py")]
    worded = [p.name for p in sources if "not valid YAML" in p.read_text()]
    assert worded == ["io.py"]


def test_atomic_outputs_replace_on_success_and_keep_the_old_on_failure(tmp_path):
    from gradguard.io import atomic_path

    target = tmp_path / "out"
    with atomic_path(target) as folder:
        folder.mkdir()
        (folder / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), atomic_path(target) as folder:
        folder.mkdir()
        (folder / "a.txt").write_text("half")
        raise RuntimeError("stage failed")
    assert (target / "a.txt").read_text() == "first"
    with atomic_path(target) as folder:
        folder.mkdir()
        (folder / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporaries left
