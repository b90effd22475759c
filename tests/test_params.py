"""The params schema: one test per rule, each checking the message names key, value and rule."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from gradguard.errors import ParamsError
from gradguard.params import Params, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_valid_and_clip_mode_resolves_from_bounds():
    assert parse_params({}).resolved_clip_mode == "none"
    assert parse_params({"clip_norm": 1.0}).resolved_clip_mode == "global_norm"
    assert parse_params({"clip_value": 0.5}).resolved_clip_mode == "value"
    assert parse_params({"clip_mode": "norm", "clip_norm": 2}).clip_norm == 2.0


def test_the_repository_params_file_is_valid():
    params = load_params("params.yaml")
    assert isinstance(params, Params) and params.data.source == "digits"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"clip_nrom": 1.0}, "clip_nrom=1.0 is invalid; expected a known key"),
        ({"train": {"learning_rte": 0.1}}, "train.learning_rte=0.1"),
        ({"clip_norm": -1.0}, "clip_norm=-1.0 is invalid; expected a number > 0"),
        ({"clip_norm": "big"}, "clip_norm='big' is invalid; expected a finite number"),
        ({"clip_value": 0.0}, "clip_value=0.0"),
        ({"clip_norm": 1.0, "clip_value": 0.5}, "clip_value=0.5 is invalid; expected null while"),
        ({"clip_mode": "norm"}, "clip_norm=None is invalid; expected a number > 0 for norm"),
        ({"clip_mode": "value"}, "clip_value=None"),
        ({"clip_mode": "clever"}, "clip_mode='clever'"),
        ({"init_scale": 0.0}, "init_scale=0.0 is invalid; expected a finite number > 0"),
        ({"init_scale": -2}, "init_scale=-2.0"),
        ({"init": "zeros"}, "init='zeros' is invalid; expected one of"),
        ({"seed": 1.5}, "seed=1.5 is invalid; expected an integer"),
        ({"seed": True}, "seed=True"),
        ({"skip_nonfinite": "yes"}, "skip_nonfinite='yes' is invalid; expected true or false"),
        ({"train": {"optimizer": "lion"}}, "train.optimizer='lion'"),
        ({"train": {"epochs": 0}}, "train.epochs=0 is invalid; expected an integer >= 1"),
        ({"train": {"learning_rate": 0}}, "train.learning_rate=0.0"),
        ({"train": {"batch_size": 0}}, "train.batch_size=0"),
        ({"train": {"patience": -1}}, "train.patience=-1"),
        ({"train": {"distribute": "tpu"}}, "train.distribute='tpu'"),
        ({"data": {"val_fraction": 1.2}}, "data.val_fraction=1.2 is invalid; expected a fraction"),
        ({"data": {"test_fraction": 0}}, "data.test_fraction=0.0"),
        ({"data": {"val_fraction": 0.6, "test_fraction": 0.5}}, "a sum below 1"),
        ({"data": {"source": "imagenet"}}, "data.source='imagenet'"),
        ({"data": {"source": "npz"}}, "data.path=None is invalid; expected a path"),
        ({"data": {"image_size": 2}}, "data.image_size=2"),
        ({"augment": {"copies": -1}}, "augment.copies=-1"),
        ({"augment": {"rotation": 200}}, "augment.rotation=200.0"),
        ({"model": {"filters": []}}, "model.filters=[] is invalid"),
        ({"model": {"filters": 32}}, "model.filters=32 is invalid; expected a list"),
        ({"model": {"pooling": "avg"}}, "model.pooling='avg' is invalid; expected one of"),
        ({"model": {"dropout": 1.0}}, "model.dropout=1.0"),
        ({"zscore_alpha": 1.0}, "zscore_alpha=1.0"),
        ({"zscore_max_norm": 0}, "zscore_max_norm=0.0 is invalid; expected a number > 0 (or"),
        ({"autoclip_percentile": 0}, "autoclip_percentile=0.0"),
        ({"max_consecutive_skips": 0}, "max_consecutive_skips=0"),
        ({"evaluate": {"baseline": "forest"}}, "evaluate.baseline='forest'"),
        ({"train": 3}, "train=3 is invalid; expected a mapping"),
        ({"train": {"on_explosion": "pray"}}, "train.on_explosion='pray'"),
        ({"train": {"spike_window": 1}}, "train.spike_window=1"),
        ({"train": {"spike_sigma": 0}}, "train.spike_sigma=0.0"),
        ({"train": {"snapshot_every": 0}}, "train.snapshot_every=0"),
        ({"train": {"lr_backoff": 1.5}}, "train.lr_backoff=1.5 is invalid; expected a factor"),
        ({"train": {"max_rollbacks": -1}}, "train.max_rollbacks=-1"),
        ({"train": {"spike_warmup_factor": 1.0}}, "train.spike_warmup_factor=1.0"),
        ({"train": {"spike_factor": 0.5}}, "train.spike_factor=0.5"),
        ({"train": {"snapshots_kept": 0}}, "train.snapshots_kept=0"),
        (
            {"train": {"collapse_window": 0}},
            "train.collapse_window=0 is invalid; expected an integer",
        ),
        (
            {"train": {"collapse_level": 1.5}},
            "train.collapse_level=1.5 is invalid; expected a fraction",
        ),
        ({"train": {"collapse_learned": 0.0}}, "train.collapse_learned=0.0"),
        (
            {"train": {"collapse_learned": 0.9}},
            "train.collapse_learned=0.9 is invalid; expected less than train.collapse_level (0.9)",
        ),
        ({"evaluate": {"explode_factor": 1.0}}, "evaluate.explode_factor=1.0"),
        ({"evaluate": {"collapse_margin": 1.0}}, "evaluate.collapse_margin=1.0"),
        (
            {"train": {"loss_spikes": True, "mixed_precision": True}},
            "train.loss_spikes=True is invalid; expected false with train.mixed_precision=true",
        ),
    ],
)
def test_each_rule_names_key_value_and_what_is_allowed(raw, fragment):
    with pytest.raises(ParamsError) as error:
        parse_params(raw)
    message = str(error.value)
    assert fragment in message
    assert "\n" not in message


def test_a_missing_or_broken_file_is_one_clear_line(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(str(tmp_path / "nope.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("seed: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(str(broken))
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n")
    with pytest.raises(ParamsError, match="expected a YAML mapping"):
        load_params(str(listed))


def test_params_are_frozen():
    params = parse_params({})
    with pytest.raises(AttributeError):
        params.seed = 3


def _leaves(obj, raw, prefix=""):
    """(dotted key, dataclass default, params.yaml value) for every leaf of the schema."""
    for field in dataclasses.fields(obj):
        value, key = getattr(obj, field.name), prefix + field.name
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, raw.get(field.name, {}), key + ".")
        else:
            yield key, value, raw.get(field.name, "<missing>")


def test_the_schemas_defaults_are_the_committed_params_yaml():
    # One fact, one value: a key left out of a params mapping gets what params.yaml says.
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    differ = [
        (key, default, committed)
        for key, default, committed in _leaves(Params(), raw)
        if committed != (list(default) if isinstance(default, tuple) else default)
    ]
    assert differ == []
