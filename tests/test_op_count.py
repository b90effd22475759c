"""The guard's ops in a compiled train step stay at the committed count (10 % of slack).

`benchmarks/op_count.py --write` records the counts in benchmarks/op_counts.json,
per backend; a change that adds ops to the guard's step fails here, so the cost
cannot come back unseen. Re-record the figures when a change lowers them.
"""

from __future__ import annotations

import json

import keras
import pytest

from benchmarks.op_count import FIGURES, MODES, count_step_ops, variants

SLACK = 1.10
BASE = "adam, no clipping"


@pytest.fixture(scope="module")
def committed() -> dict:
    figures = json.loads(FIGURES.read_text())
    backend = keras.backend.backend()
    if backend not in figures:
        pytest.skip(f"no committed op counts for the {backend} backend")
    return figures[backend]


@pytest.fixture(scope="module")
def base_ops() -> int:
    return count_step_ops(variants()[BASE]())


@pytest.mark.parametrize("mode", MODES)
def test_the_ops_a_guard_mode_adds_stay_within_ten_percent(mode, committed, base_ops):
    name = f"guard {mode}"
    added = count_step_ops(variants()[name]()) - base_ops
    allowed = (committed[name] - committed[BASE]) * SLACK
    assert added <= allowed, (
        f"{name} adds {added} ops; committed {committed[name] - committed[BASE]}"
    )
