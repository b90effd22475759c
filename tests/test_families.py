"""gradguard.training.families: the built-in model of each kind and the recurrent initialisers."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from gradguard.params import ModelParams
from gradguard.training.families import (
    SparseSpectral,
    build_cnn,
    build_mlp,
    build_recurrent_initializer,
    build_rnn,
)
from gradguard.training.models import load_model, save_model


@pytest.mark.parametrize(("shape", "radius"), [((50, 50), 0.95), ((20, 60), 1.3)])
def test_the_sparse_matrix_has_its_spectral_radius_and_nonzeros_a_unit(shape, radius):
    values = np.asarray(SparseSpectral(15, radius, seed=4)(shape), np.float64)
    rows = shape[0]
    for gate in range(shape[1] // rows):  # GRU-like kernels: one matrix per gate
        block = values[:, gate * rows : (gate + 1) * rows]
        assert np.max(np.abs(np.linalg.eigvals(block))) == pytest.approx(radius, abs=1e-5)
        assert (np.count_nonzero(block, axis=1) == 15).all()  # 15 a unit (row), the rest 0
    again = np.asarray(SparseSpectral(15, radius, seed=4)(shape))
    np.testing.assert_array_equal(values, again)  # seeded: the same matrix


def test_each_recurrent_initialiser_is_what_its_name_says():
    normal = build_recurrent_initializer(
        ModelParams(recurrent_init="normal", recurrent_scale=0.1), seed=0
    )
    drawn = np.asarray(normal((200, 200)))
    assert drawn.std() == pytest.approx(0.1, rel=0.02) and abs(drawn.mean()) < 0.002
    orthogonal = build_recurrent_initializer(ModelParams(recurrent_scale=0.5), seed=0)
    matrix = np.asarray(orthogonal((30, 30)), np.float64)
    np.testing.assert_allclose(matrix @ matrix.T, 0.25 * np.eye(30), atol=1e-5)  # gain 0.5


@pytest.mark.parametrize("rnn", ["simple", "lstm", "gru"])
def test_the_recurrent_family_stacks_its_layers_and_ends_in_probabilities(rnn):
    params = ModelParams(
        rnn=rnn, units=6, layers=2, dense=5, recurrent_init="sparse", recurrent_nonzero=3
    )
    model = build_rnn((9, 4), 3, params, seed=1)
    names = [layer.name for layer in model.layers]
    assert names[:3] == ["sequence", f"{rnn}0", f"{rnn}1"] and names[-1] == "classifier"
    assert (
        model.get_layer(f"{rnn}0").return_sequences
        and not model.get_layer(f"{rnn}1").return_sequences
    )
    out = np.asarray(model(np.ones((2, 9, 4), np.float32)))
    assert out.shape == (2, 3) and np.allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_the_table_family_and_a_saved_rnn_load_back(tmp_path):
    mlp = build_mlp((7,), 4, ModelParams(hidden=(8, 6), batch_norm=True, dense=0, dropout=0.0))
    kernels = [w.shape for w in mlp.weights if w.path.endswith("kernel")]
    assert kernels == [(7, 8), (8, 6), (6, 4)]  # no bias beside batch norm; no hidden head
    rnn = build_rnn((5, 2), 3, ModelParams(rnn="simple", units=4, recurrent_init="sparse"), seed=2)
    save_model(rnn, tmp_path / "rnn.keras")
    loaded = load_model(tmp_path / "rnn.keras")  # safe_mode: SparseSpectral is registered
    x = np.random.default_rng(0).normal(size=(3, 5, 2)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(rnn(x)), rtol=1e-6)


def test_the_cnn_keeps_its_layers():
    model = build_cnn((8, 8, 1), 3, ModelParams(filters=(2,), dense=4))
    assert [layer.name for layer in model.layers][-3:] == ["hidden", "dropout", "classifier"]
    assert isinstance(model, keras.Model)
