"""gradguard.training.builder: your own model from nets/, every refusal in one line."""

from __future__ import annotations

import numpy as np
import pytest

from gradguard import load_model
from gradguard.errors import ParamsError
from gradguard.training.builder import build_with
from gradguard.training.models import save_model

NETS = """
import keras

def good(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(8, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))

def logits(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(keras.layers.Flatten()(inputs)))

def too_few(input_shape, num_classes):
    return good(input_shape, 2)

def raises(input_shape, num_classes):
    raise ValueError("no GPU here")

def not_a_model(input_shape, num_classes):
    return [1, 2]

def images_only(input_shape, num_classes):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(2, 3)(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
"""


@pytest.fixture
def nets(tmp_path, monkeypatch):
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "mine.py").write_text(NETS)
    (tmp_path / "nets" / "broken.py").write_text("def f(:\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("nets/none.py:good", "nets/none.py not found"),
        ("nets/mine.py:absent", "nets/mine.py defines no function 'absent'"),
        ("nets/broken.py:f", "nets/broken.py failed to import (SyntaxError"),
        ("nets/mine.py:raises", "the builder raised ValueError: no GPU here"),
        ("nets/mine.py:not_a_model", "returned a list; expected a keras.Model"),
        ("nets/mine.py:too_few", "output has shape (None, 2); expected (None, 3)"),
        ("nets/mine.py:logits", "not class probabilities"),
        ("nets/mine.py:images_only", "cannot take examples of shape (5, 4)"),
        ("models/mine.py:good", "expected null or 'nets/<file>.py:<function>'"),
        ("nets/../mine.py:good", "expected null or 'nets/<file>.py:<function>'"),
    ],
)
def test_every_builder_failure_is_one_line_naming_it(nets, spec, fragment):
    with pytest.raises(ParamsError) as caught:
        build_with(spec, (5, 4), 3)
    message = str(caught.value)
    assert f"model.builder={spec!r}" in message and fragment in message
    assert "\n" not in message


def test_a_builders_plain_functional_model_round_trips_through_load_model(nets):
    model = build_with("nets/mine.py:good", (5, 4), 3)
    save_model(model, nets / "m.keras")
    loaded = load_model(nets / "m.keras")  # what a user's script calls: safe_mode=True
    x = np.random.default_rng(0).normal(size=(4, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)
