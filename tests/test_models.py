"""Initialisers scaled by init_scale, the CNN builder, the optimizer builder."""

from __future__ import annotations

import json
import math
import time
import zipfile

import keras
import numpy as np
import pytest

from gradguard import GradientGuard
from gradguard.params import ModelParams, parse_params
from gradguard.training.families import build_cnn, build_initializer
from gradguard.training.models import (
    build_optimizer,
    canonicalise_model_file,
    collapse_check_off,
    load_model,
    save_model,
)


@pytest.mark.parametrize(
    ("name", "std"),
    [
        # fan_in = 400, fan_out = 300 for a (400, 300) kernel.
        ("he_normal", np.sqrt(2 / 400)),
        ("he_uniform", np.sqrt(2 / 400)),
        ("lecun_normal", np.sqrt(1 / 400)),
        ("glorot_normal", np.sqrt(2 / 700)),
        ("glorot_uniform", np.sqrt(2 / 700)),
        (
            "orthogonal",
            np.sqrt(1 / 300),
        ),  # orthonormal columns of a 400x300 matrix: var 1/400..1/300
    ],
)
@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_init_scale_multiplies_the_standard_deviation(name, std, scale):
    values = keras.ops.convert_to_numpy(build_initializer(name, scale, seed=1)((400, 300)))
    tolerance = 0.15 if name == "orthogonal" else 0.03
    assert values.std() == pytest.approx(scale * std, rel=tolerance)


def test_unknown_initialiser_is_refused():
    with pytest.raises(ValueError, match="init='zeros'"):
        build_initializer("zeros")


def test_the_seed_articles_network_from_params_alone():
    # Conv2D 32 -> GlobalAveragePooling2D -> Dense 64 -> Dense 10 on 28x28x1:
    # conv 3*3*1*32 + 32 = 320; dense 32*64 + 64 = 2112; classifier 64*10 + 10 = 650.
    params = ModelParams(filters=(32,), pooling="none", head="global_avg", dense=64, dropout=0.0)
    model = build_cnn((28, 28, 1), 10, params)
    assert model.count_params() == 320 + 2112 + 650
    assert [type(layer).__name__ for layer in model.layers] == [
        "InputLayer",
        "Conv2D",
        "Activation",
        "GlobalAveragePooling2D",
        "Dense",
        "Dense",
    ]


def test_cnn_pools_only_while_the_map_is_at_least_two_wide():
    model = build_cnn((8, 8, 1), 3, ModelParams(filters=(2,) * 5, dense=0, batch_norm=True))
    pools = [layer for layer in model.layers if "pool" in layer.name]
    assert len(pools) == 3  # 8 -> 4 -> 2 -> 1, then no more
    assert model.output_shape == (None, 3)


def test_build_optimizer_wraps_the_named_optimizer_with_the_params_mode():
    guard = build_optimizer(
        parse_params({"clip_norm": 1.0, "train": {"optimizer": "momentum", "learning_rate": 0.05}})
    )
    assert isinstance(guard, GradientGuard) and guard.mode == "global_norm"
    assert isinstance(guard.inner_optimizer, keras.optimizers.SGD)
    assert guard.inner_optimizer.momentum == 0.9
    assert float(guard.learning_rate.numpy()) == pytest.approx(0.05)


def test_build_optimizer_carries_the_spike_settings():
    params = parse_params(
        {"train": {"on_explosion": "rollback", "loss_spikes": True, "spike_sigma": 4.0}}
    )
    config = build_optimizer(params).config
    assert (config.skip_spikes, config.loss_spikes, config.spike_sigma) == (True, True, 4.0)
    assert build_optimizer(parse_params({})).config.loss_spikes is False
    assert build_optimizer(parse_params({})).config.spike_warmup_factor == 100.0
    off = parse_params({"train": {"spike_warmup_factor": None}})
    assert build_optimizer(off).config.spike_warmup_factor is None


def test_build_optimizer_checks_for_a_collapse_to_ln_k_where_it_can():
    knobs = {"collapse_window": 20, "collapse_level": 0.8, "collapse_learned": 0.4}
    config = build_optimizer(parse_params({"train": knobs}), num_classes=10).config
    assert config.collapse_loss == pytest.approx(math.log(10))  # 2.302585
    assert (config.collapse_window, config.collapse_level, config.collapse_learned) == (
        20,
        0.8,
        0.4,
    )
    assert build_optimizer(parse_params({})).config.collapse_loss is None  # no class count
    off = parse_params({"train": {"collapse_window": None}})
    assert build_optimizer(off, num_classes=10).config.collapse_loss is None
    mixed = parse_params({"train": {"mixed_precision": True}})
    assert "mixed_precision" in collapse_check_off(mixed)
    assert build_optimizer(mixed, 10).inner_optimizer.config.collapse_loss is None
    if keras.backend.backend() == "jax":
        assert "JAX" in collapse_check_off(parse_params({}))


def test_two_saves_of_the_same_model_are_byte_identical(tmp_path):
    def built():
        keras.backend.clear_session()  # names as a fresh process gives them
        model = build_cnn((8, 8, 1), 3, ModelParams(filters=(2,), dense=4), seed=0)
        model.compile(optimizer=build_optimizer(parse_params({"clip_norm": 1.0})), loss="mse")
        model.optimizer.build(model.trainable_variables)  # its state is saved too
        return model

    # Two objects, as two runs make: Keras's config names shared objects by memory address.
    model, twin = built(), built()
    save_model(model, tmp_path / "a.keras")
    model.save(tmp_path / "plain.keras")  # Keras's own: dated entries and metadata
    time.sleep(2.1)  # zip times have a resolution of 2 s
    save_model(twin, tmp_path / "b.keras")
    model.save(tmp_path / "plain2.keras")
    assert (tmp_path / "plain.keras").read_bytes() != (tmp_path / "plain2.keras").read_bytes()
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    canonicalise_model_file(tmp_path / "plain.keras")  # what ModelCheckpoint wrote, mended
    assert (tmp_path / "plain.keras").read_bytes() == (tmp_path / "a.keras").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.keras") as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert "date_saved" not in json.loads(archive.read("metadata.json"))
        # Its only shared objects were dtype policies: they lose their ids (memory addresses),
        # which a model loaded from a file would not have had.
        assert b"shared_object_id" not in archive.read("config.json")
    loaded = load_model(tmp_path / "a.keras")  # safe_mode, with its GradientGuard
    for saved, kept in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, kept)


def test_mixed_precision_wraps_the_guard_in_the_cross_replica_loss_scaler(tmp_path):
    from gradguard.loss_scale import GuardedLossScaleOptimizer
    from gradguard.training.models import load_model

    params = parse_params({"clip_norm": 1.0, "train": {"mixed_precision": True}})
    scaler = build_optimizer(params)
    assert isinstance(scaler, GuardedLossScaleOptimizer)
    assert isinstance(scaler.inner_optimizer, GradientGuard)
    assert isinstance(build_optimizer(parse_params({})), GradientGuard)
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_cnn((8, 8, 1), 3, ModelParams(filters=(2,), dense=4), seed=0)
        model.compile(optimizer=scaler, loss="sparse_categorical_crossentropy")
    finally:
        keras.config.set_dtype_policy("float32")
    assert model.optimizer is scaler  # compile keeps it (it is a LossScaleOptimizer)
    model.fit(np.ones((4, 8, 8, 1), "float32"), np.arange(4) % 3, epochs=1, verbose=0)
    save_model(model, tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")  # safe_mode: a registered class, no code
    assert type(loaded.optimizer) is GuardedLossScaleOptimizer
    assert loaded.optimizer.inner_optimizer.config.clip_norm == 1.0
