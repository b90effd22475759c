"""The library alone: run in a clean virtual environment holding only gradguard's wheel and JAX.

Checks that the wheel asks for Keras and NumPy by ranges and nothing else, that
neither TensorFlow nor DVC is installed, and that `GradientGuard` trains a small
model on the JAX backend: the loss falls, every step is clipped at the bound,
and a saved model loads back with `gradguard.load_model`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "jax")

# Extras (gpu, s3, ...) are the pipeline's, installed only when asked for.
every = importlib.metadata.requires("gradguard") or []
requires = sorted(r for r in every if "extra ==" not in r)
names = sorted(r.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip() for r in requires)
assert names == ["keras", "numpy"], f"the wheel requires {requires}; expected keras and numpy"
assert all("==" not in r for r in requires), f"the wheel pins {requires}; expected ranges"
for absent in ("tensorflow", "dvc", "dvclive", "sklearn"):
    assert importlib.util.find_spec(absent) is None, f"{absent} is installed beside the library"

import keras  # noqa: E402
import numpy as np  # noqa: E402

import gradguard  # noqa: E402

assert keras.backend.backend() == "jax", keras.backend.backend()
rng = np.random.default_rng(0)
x = rng.normal(size=(256, 8)).astype("float32")
y = (x[:, 0] + x[:, 1] > 0).astype("int32")
keras.utils.set_random_seed(0)
model = keras.Sequential(
    [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)]
)
guard = gradguard.GradientGuard(keras.optimizers.SGD(0.5), mode="global_norm", clip_norm=0.1)
model.compile(
    optimizer=guard,
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
history = model.fit(x, y, batch_size=32, epochs=5, verbose=0)
losses = history.history["loss"]
stats = gradguard.read_stats(guard)
assert losses[-1] < losses[0], losses
assert stats["clipped_steps"] == 40 and stats["skipped_steps"] == 0, stats  # 8 batches x 5
assert abs(stats["post_clip_norm"] - 0.1) < 1e-6, stats
with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "model.keras")
    gradguard.save_model(model, path)
    again = gradguard.load_model(path)
    assert isinstance(again.optimizer, gradguard.GradientGuard)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), 1e-6)
print(
    f"library alone on {keras.backend.backend()} (keras {keras.__version__}, python "
    f"{sys.version.split()[0]}): loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
    f"{stats['clipped_steps']} steps clipped to 0.1, save/load ok; requires {requires}"
)
