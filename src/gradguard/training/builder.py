"""Your own model: `model.builder: "nets/<file>.py:<function>"`, checked before it trains.

The function, of any name, takes `(input_shape: tuple[int, ...], num_classes: int)`
and returns an uncompiled `keras.Model` whose output is `num_classes` class
probabilities per example. The pipeline compiles it with the guard, the loss,
the metrics and the reactions of params.yaml, so checkpoints, early stopping,
rollback, verdicts, compare and the gate work on it as on the built-in families.

Every way a builder can fail is one `ParamsError` line that names it: a missing
file or function, an exception inside it (its message included), a result that
is not a model, a model that cannot take the data's shape, an output of the
wrong shape, or an output that is not probabilities.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import keras
import numpy as np

from gradguard.errors import ParamsError
from gradguard.kind_keys import check_builder


def _fail(spec: str, what: str) -> ParamsError:
    return ParamsError(f"params: model.builder={spec!r}: {what}")


def _short(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:300]


def import_builder(spec: str, root: str | Path = "."):
    """The function `spec` names, its file imported (once) from `root`.

    Importing the file also runs its `keras.saving.register_keras_serializable`
    decorators, which loading a model with the builder's own layers needs.
    """
    check_builder(spec)
    path, _, name = spec.rpartition(":")
    file = Path(root) / path
    if not file.is_file():
        raise _fail(spec, f"{path} not found")
    module_name = "gradguard_builder_" + path.removesuffix(".py").replace("/", "_")
    module = sys.modules.get(module_name)
    if module is None or getattr(module, "__file__", None) != str(file.resolve()):
        found = importlib.util.spec_from_file_location(module_name, file.resolve())
        module = importlib.util.module_from_spec(found)
        try:
            found.loader.exec_module(module)
        except Exception as error:  # the user's file: any error, in one line
            raise _fail(spec, f"{path} failed to import ({_short(error)})") from error
        sys.modules[module_name] = module
    function = getattr(module, name, None)
    if not callable(function):
        raise _fail(spec, f"{path} defines no function {name!r}")
    return function


def build_with(spec: str, input_shape: tuple[int, ...], num_classes: int, root: str | Path = "."):
    """Call the builder `spec` names and check what it returns (see the module's docstring).

    Raises:
        ParamsError: one line naming the builder and what is wrong.
    """
    function = import_builder(spec, root)
    shape = tuple(int(s) for s in input_shape)
    try:
        model = function(shape, int(num_classes))
    except Exception as error:  # the user's code: any error, in one line
        raise _fail(spec, f"the builder raised {_short(error)}") from error
    if not isinstance(model, keras.Model):
        raise _fail(spec, f"returned a {type(model).__name__}; expected a keras.Model")
    check_outputs(spec, model, shape, num_classes)
    return model


def check_outputs(spec: str, model: keras.Model, input_shape: tuple, num_classes: int) -> None:
    """The model takes a batch of `input_shape` examples and gives class probabilities."""
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(3, *input_shape)).astype("float32")
    try:
        out = keras.ops.convert_to_numpy(model(batch, training=False))
    except Exception as error:  # a shape the model cannot take: its own words
        raise _fail(
            spec, f"the model cannot take examples of shape {input_shape} ({_short(error)})"
        ) from error
    if out.shape != (3, num_classes):
        raise _fail(
            spec,
            f"its output has shape {(None, *out.shape[1:])}; expected {(None, num_classes)}, "
            "one probability per class",
        )
    sums = out.astype(np.float64).sum(axis=1)
    if not (np.all(out >= 0) and np.all(out <= 1) and np.allclose(sums, 1.0, atol=1e-3)):
        raise _fail(
            spec,
            f"its outputs are not class probabilities (values in [{out.min():.3g}, "
            f"{out.max():.3g}], rows summing to {sums.min():.3g}..{sums.max():.3g}); expected "
            "values in [0, 1] summing to 1 per example (end with a softmax)",
        )
