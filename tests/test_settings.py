"""gradguard.settings: the guard's mode rule and the bounds of every setting."""

from __future__ import annotations

import dataclasses

import pytest

from gradguard.functional.step import GuardConfig
from gradguard.settings import (
    BOUNDS,
    CLIP_MODES,
    EVENT_CODES,
    EVENT_NAMES,
    MODE_BOUND,
    OPTIONAL,
    resolve_clip_mode,
    setting_error,
)


@pytest.mark.parametrize(
    "mode, norm, value, expected",
    [
        ("auto", None, None, "none"),
        ("auto", 1.0, None, "global_norm"),
        ("auto", None, 0.5, "value"),
        ("auto", 1.0, 0.5, "global_norm"),  # the norm wins when both are set
        ("agc", 1.0, 0.5, "agc"),  # an explicit mode is kept whatever the bounds
        ("none", 1.0, None, "none"),
    ],
)
def test_auto_picks_global_norm_then_value_then_none(mode, norm, value, expected):
    assert resolve_clip_mode(mode, norm, value) == expected


@pytest.mark.parametrize(
    "key, value, ok",
    [
        ("clip_norm", 0.0, False),
        ("clip_norm", 1e-9, True),
        ("clip_norm", None, True),  # off
        ("agc_lambda", None, False),  # not optional
        ("autoclip_percentile", 100, True),
        ("autoclip_percentile", 100.5, False),
        ("autoclip_percentile", 0, False),
        ("zscore_alpha", 1.0, False),
        ("zscore_alpha", 0.97, True),
        ("spike_window", 1, False),
        ("spike_window", 2, True),
        ("spike_warmup_factor", 1.0, False),
        ("spike_factor", 1.0, True),
        ("collapse_level", 1.0, True),
        ("collapse_learned", 1.0, False),
        ("collapse_loss", None, True),
    ],
)
def test_each_bound_holds_at_its_edge(key, value, ok):
    error = setting_error(key, value)
    assert (error is None) == ok
    if not ok:
        assert error == BOUNDS[key][1]  # the words the params error quotes


def test_the_tables_agree_with_each_other_and_with_the_guards_config():
    assert set(BOUNDS) >= OPTIONAL
    assert set(MODE_BOUND) <= set(CLIP_MODES) and set(MODE_BOUND.values()) <= OPTIONAL
    assert {code: name for name, code in EVENT_CODES.items()} == EVENT_NAMES
    assert 0 not in EVENT_NAMES and len(EVENT_NAMES) == len(EVENT_CODES)  # 0 means no event
    config = {field.name for field in dataclasses.fields(GuardConfig)}
    assert set(BOUNDS) - {"collapse_learned"} <= config  # collapse_learned: train.* only
