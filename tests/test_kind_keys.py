"""gradguard.kind_keys: keys that mean nothing for the data's kind, and model.builder's shape."""

from __future__ import annotations

import pytest
import yaml

from gradguard.errors import ParamsError
from gradguard.kind_keys import check_kind
from gradguard.params import parse_params
from tests.conftest import ROOT


def test_keys_that_mean_nothing_for_the_data_kind_are_refused_when_set():
    committed = parse_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    with_copies = {"data": committed.data, "model": committed.model}
    for kind in ("sequence", "table"):  # the committed CNN keys are no error for another kind
        check_kind(kind, **with_copies)
    with pytest.raises(ParamsError, match=r"augment.copies=2 is invalid; expected 0 for data"):
        check_kind("sequence", augment=committed.augment)
    check_kind("sequence", augment=parse_params({"augment": {"copies": 0}}).augment)
    cases = [
        ("sequence", {"model": {"filters": [8]}}, "model.filters=(8,)", "only for image"),
        ("image", {"model": {"rnn": "lstm"}}, "model.rnn='lstm'", "only for sequence"),
        ("table", {"model": {"units": 9}}, "model.units=9", "only for sequence"),
        ("image", {"model": {"hidden": [4]}}, "model.hidden=(4,)", "only for table"),
        ("sequence", {"data": {"image_size": 8}}, "data.image_size=8", "only for image"),
        ("image", {"data": {"standardize": False}}, "data.standardize=False", "sequence"),
        ("sequence", {"model": {"batch_norm": True}}, "model.batch_norm=True", "image and table"),
    ]
    for kind, raw, key, fragment in cases:
        params = parse_params(raw)
        with pytest.raises(ParamsError) as caught:
            check_kind(kind, data=params.data, model=params.model)
        assert key in str(caught.value) and fragment in str(caught.value), raw
    check_kind("table", model=parse_params({"model": {"batch_norm": True}}).model)


def test_with_a_builder_the_families_keys_are_refused():
    mine = parse_params({"model": {"builder": "nets/x.py:f"}}).model
    check_kind("image", model=mine)
    changed = parse_params({"model": {"builder": "nets/x.py:f", "dense": 32}}).model
    with pytest.raises(ParamsError, match=r"model.dense=32 .*with model.builder='nets/x.py:f'"):
        check_kind("image", model=changed)
