"""A small project's own training script: a Keras MLP on scikit-learn's digits.

Of gradguard it uses three things: `GradientGuard.from_params` (its own `grad_limit`
mapped to the guard's `clip_norm`), `RunRecord` during `fit` and `write_verdict` after
its own evaluation. Everything else (names, files, metric) is the project's.
"""

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import yaml
from sklearn.datasets import load_digits
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from gradguard import GradientGuard, RunRecord, write_verdict

params = yaml.safe_load(Path("params.yaml").read_text())
trainer, optim = params["trainer"], params["optim"]
seed = trainer["random_state"]

x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype("float32")
x_train, x_test, y_train, y_test = train_test_split(
    x, y, test_size=0.3, random_state=seed, stratify=y
)
keras.utils.set_random_seed(seed)
model = keras.Sequential(
    [
        keras.Input((64,)),
        keras.layers.Dense(trainer["hidden"], activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ]
)
guard = GradientGuard.from_params(
    {"clip_norm": optim["grad_limit"]}, keras.optimizers.SGD(trainer["learning_rate"])
)
model.compile(optimizer=guard, loss="sparse_categorical_crossentropy")
record = RunRecord()
model.fit(x_train, y_train, batch_size=32, epochs=trainer["epochs"], verbose=0, callbacks=[record])

probabilities = model.predict(x_test, verbose=0)
finite = bool(np.isfinite(probabilities).all())
predicted = probabilities.argmax(axis=1) if finite else np.zeros_like(y_test)
scores = {
    "test": {
        "accuracy": float(np.mean(predicted == y_test)),
        "f1": float(f1_score(y_test, predicted, average="macro")) if finite else None,
    }
}
Path("results").mkdir(exist_ok=True)
Path("results/scores.json").write_text(json.dumps(scores, indent=2) + "\n")
shares = np.bincount(y_test, minlength=10) / len(y_test)
verdict = write_verdict(
    "results/verdict.json", record, accuracy=scores["test"]["accuracy"], class_shares=shares
)
print(f"train: f1 {scores['test']['f1']}, {verdict}")
