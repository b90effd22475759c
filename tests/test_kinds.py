"""gradguard.data.kinds: the kind rule, and sequences and tables loaded as they are."""

from __future__ import annotations

import numpy as np
import pytest

from gradguard.data.kinds import kind_of, load_data
from gradguard.data.sources import load_source
from gradguard.errors import DataError
from gradguard.params import DataParams


@pytest.mark.parametrize(
    ("rank", "floating", "in_unit", "kind"),
    [
        (2, True, False, "table"),
        (2, False, True, "table"),
        (3, True, False, "sequence"),  # refused as images before: floats outside [0, 1]
        (3, True, True, "image"),  # floats in [0, 1]: grey images, as before
        (3, False, False, "image"),  # integers: pixels 0..255, as before
        (4, True, False, "image"),  # (N, H, W, C): images, as before (then checked as such)
        (5, True, False, "image"),  # the image check names the shape
    ],
)
def test_the_kind_rule_of_each_rank(rank, floating, in_unit, kind):
    assert kind_of(rank, floating, in_unit)[0] == kind


def test_auto_keeps_every_image_byte_for_byte_and_reads_sequences_and_tables(tmp_path):
    rng = np.random.default_rng(1)
    unit = rng.random((30, 6, 6)).astype(np.float32)  # floats in [0, 1]: images
    y = np.arange(30) % 3
    np.savez(tmp_path / "img.npz", x=unit, y=y)
    params = DataParams(source="npz", path=str(tmp_path / "img.npz"), image_size=6)
    loaded = load_data(params)
    assert loaded.kind == "image" and loaded.x.dtype == np.uint8
    np.testing.assert_array_equal(loaded.x, load_source(params)[0])
    seq = rng.normal(0, 2, (30, 7, 2)).astype(np.float64)
    np.savez(tmp_path / "seq.npz", x=seq, y=y)
    loaded = load_data(DataParams(source="npz", path=str(tmp_path / "seq.npz")))
    assert loaded.kind == "sequence" and "outside [0, 1]" in loaded.why
    assert loaded.x.dtype == np.float32 and loaded.x.shape == (30, 7, 2)
    np.testing.assert_array_equal(loaded.x, seq.astype(np.float32))  # not reshaped, not scaled
    np.savez(tmp_path / "tab.npz", x=seq[:, :, 0], y=y)
    assert load_data(DataParams(source="npz", path=str(tmp_path / "tab.npz"))).kind == "table"
    # An explicit kind wins over the rule: [0, 1] floats read as sequences, unquantised.
    explicit = load_data(DataParams(source="npz", path=str(tmp_path / "img.npz"), kind="sequence"))
    assert explicit.kind == "sequence" and explicit.why == "data.kind='sequence'"
    np.testing.assert_array_equal(explicit.x, unit)


@pytest.mark.parametrize(
    ("x", "kind", "fragment"),
    [
        (np.zeros((20, 4)), "sequence", "x has shape (20, 4); expected (N, T, F)"),
        (np.zeros((20, 4, 2)), "table", "x has shape (20, 4, 2); expected (N, F)"),
        (np.full((20, 3, 2), np.nan), "sequence", "NaN or Inf value(s)"),
        (np.zeros((20, 3), bool), "table", "x has dtype bool; expected integers or floats"),
    ],
)
def test_sequences_and_tables_of_the_wrong_form_are_one_line(tmp_path, x, kind, fragment):
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20) % 2)
    with pytest.raises(DataError) as caught:
        load_data(DataParams(source="npz", path=str(tmp_path / "d.npz"), kind=kind))
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_a_kind_a_built_in_source_cannot_hold_is_refused():
    with pytest.raises(DataError, match=r"data\.source='digits' holds images"):
        load_data(DataParams(kind="table"))
