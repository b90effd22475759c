"""The built-in model families, one per kind of data, and their initialisers.

Images: a CNN (`model.filters`, ...). Sequences: stacked recurrent layers
(`model.rnn`, `model.units`, `model.layers`), whose recurrent kernels take
`model.recurrent_init` (orthogonal, normal, or Pascanu et al. 2013's sparse
matrix at a spectral radius). Tables: an MLP (`model.hidden`). Every family
ends in the same head: an optional hidden Dense (`model.dense`), dropout
(`model.dropout`) and a softmax classifier kept in float32. Every kernel of the
input side takes `init` x `init_scale`.
"""

from __future__ import annotations

import keras
import numpy as np

from gradguard.params import ModelParams, Params

# Variance-scaling form of each scheme: (scale, mode, distribution), as Keras defines them.
_VARIANCE_SCALING = {
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "glorot_normal": (1.0, "fan_avg", "truncated_normal"),
    "he_normal": (2.0, "fan_in", "truncated_normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "truncated_normal"),
}


def build_initializer(name: str, scale: float = 1.0, seed: int | None = None):
    """A kernel initialiser whose standard deviation is `scale` times the scheme's.

    Variance-scaling schemes draw with variance `s / fan`, so a factor `scale` on
    the standard deviation is `s * scale**2` on the variance; for `orthogonal` it
    is the gain, for `normal` (N(0, 1)) the standard deviation itself. `scale=1` gives
    exactly Keras's initialiser of that name.

    Args:
        name: glorot_uniform, glorot_normal, he_normal, he_uniform, lecun_normal,
            orthogonal or normal.
        scale: multiplies the standard deviation (> 0).
        seed: the initialiser's seed; give each layer its own.

    Raises:
        ValueError: for an unknown name.

    References:
        Glorot and Bengio 2010; He et al. 2015; LeCun et al. 1998 ("Efficient
        BackProp"); Saxe et al. 2014 (orthogonal).
    """
    if name == "orthogonal":
        return keras.initializers.Orthogonal(gain=scale, seed=seed)
    if name == "normal":  # standard deviation 1, times scale
        return keras.initializers.RandomNormal(0.0, scale, seed=seed)
    if name not in _VARIANCE_SCALING:
        expected = (*_VARIANCE_SCALING, "orthogonal", "normal")
        raise ValueError(f"init={name!r}; expected one of {expected}")
    base, mode, distribution = _VARIANCE_SCALING[name]
    return keras.initializers.VarianceScaling(
        scale=base * scale**2, mode=mode, distribution=distribution, seed=seed
    )


def _kernel_inits(init: str, init_scale: float, seed: int):
    """Each layer's kernel initialiser in turn, each with its own seed."""
    for layer_seed in range(seed * 1000, seed * 1000 + 1000):
        yield build_initializer(init, init_scale, layer_seed)


def _head(x, inputs, num_classes: int, params: ModelParams, kernel_inits, seed: int, name: str):
    """The end every family shares: hidden Dense, dropout, a float32 softmax classifier."""
    if params.dense:
        x = keras.layers.Dense(
            params.dense,
            activation=params.activation,
            kernel_initializer=next(kernel_inits),
            name="hidden",
        )(x)
    if params.dropout:
        x = keras.layers.Dropout(params.dropout, seed=seed, name="dropout")(x)
    outputs = keras.layers.Dense(
        num_classes,
        activation="softmax",
        dtype="float32",
        kernel_initializer=next(kernel_inits),
        name="classifier",
    )(x)
    return keras.Model(inputs, outputs, name=name)


def _block(layer, x, params: ModelParams, index: int):
    """`layer` (a conv or a Dense without bias under batch norm), optional BatchNorm, activation."""
    x = layer(x)
    if params.batch_norm:
        x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
    return keras.layers.Activation(params.activation, name=f"act{index}")(x)


def build_cnn(
    input_shape: tuple[int, int, int],
    num_classes: int,
    params: ModelParams,
    init: str = "he_normal",
    init_scale: float = 1.0,
    seed: int = 0,
) -> keras.Model:
    """The CNN the `model` params describe, every kernel from `init` x `init_scale`.

    Conv blocks (Conv2D 'same' -> optional BatchNorm -> activation -> optional
    2x2 max-pool while the map is at least 2 wide), then Flatten or global
    average pooling, and the head.
    """
    kernel_inits = _kernel_inits(init, init_scale, seed)
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    side = input_shape[0]
    for index, filters in enumerate(params.filters):
        conv = keras.layers.Conv2D(
            filters,
            params.kernel_size,
            padding="same",
            use_bias=not params.batch_norm,
            kernel_initializer=next(kernel_inits),
            name=f"conv{index}",
        )
        x = _block(conv, x, params, index)
        if params.pooling == "max" and side >= 2:
            x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
            side //= 2
    if params.head == "global_avg":
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    else:
        x = keras.layers.Flatten(name="flatten")(x)
    return _head(x, inputs, num_classes, params, kernel_inits, seed, "gradguard_cnn")


@keras.saving.register_keras_serializable(package="gradguard")
class SparseSpectral(keras.initializers.Initializer):
    """Pascanu et al. 2013's "smart tanh" recurrent matrix, at a chosen spectral radius.

    Each row (a unit) keeps `nonzero` weights drawn from a normal distribution at
    random columns, the rest are 0; the matrix is then scaled so that its largest
    eigenvalue modulus is `radius` (pascanur/trainingRNNs, `RNN.py`: 15 a unit,
    0.95). A kernel of shape (n, g * n) (LSTM's 4 gates, GRU's 3) gets one such
    matrix per gate.
    """

    def __init__(self, nonzero: int = 15, radius: float = 0.95, seed: int | None = None):
        self.nonzero, self.radius, self.seed = nonzero, radius, seed

    def __call__(self, shape, dtype=None):
        rows, columns = shape
        if columns % rows:
            raise ValueError(f"SparseSpectral: shape {shape}; expected (n, g * n)")
        rng = np.random.default_rng(self.seed)
        blocks = []
        for _ in range(columns // rows):
            block = rng.normal(size=(rows, rows))
            for row in block:
                row[rng.permutation(rows)[self.nonzero :]] = 0.0
            largest = float(np.max(np.abs(np.linalg.eigvals(block))))
            blocks.append(block * (self.radius / largest) if largest > 0 else block)
        return keras.ops.convert_to_tensor(np.concatenate(blocks, axis=1), dtype or "float32")

    def get_config(self):
        return {"nonzero": self.nonzero, "radius": self.radius, "seed": self.seed}


def build_recurrent_initializer(params: ModelParams, seed: int | None = None):
    """The recurrent kernel's initialiser `model.recurrent_init` names, at `recurrent_scale`."""
    scale = params.recurrent_scale
    if params.recurrent_init == "normal":
        return keras.initializers.RandomNormal(0.0, scale, seed=seed)
    if params.recurrent_init == "sparse":
        return SparseSpectral(params.recurrent_nonzero, scale, seed=seed)
    return keras.initializers.Orthogonal(gain=scale, seed=seed)


_CELLS = {"simple": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}


def build_rnn(
    input_shape: tuple[int, int],
    num_classes: int,
    params: ModelParams,
    init: str = "glorot_uniform",
    init_scale: float = 1.0,
    seed: int = 0,
) -> keras.Model:
    """Stacked recurrent layers over (T, F) sequences, read at the last step, then the head.

    `model.rnn` picks the layer (SimpleRNN, LSTM, GRU) and `model.activation` its
    cell's activation; input kernels take `init` x `init_scale`, recurrent kernels
    `build_recurrent_initializer`.
    """
    kernel_inits = _kernel_inits(init, init_scale, seed)
    layer = getattr(keras.layers, _CELLS[params.rnn])
    inputs = keras.Input(input_shape, name="sequence")
    x = inputs
    for index in range(params.layers):
        x = layer(
            params.units,
            activation=params.activation,
            kernel_initializer=next(kernel_inits),
            recurrent_initializer=build_recurrent_initializer(params, seed * 1000 + 500 + index),
            return_sequences=index < params.layers - 1,
            name=f"{params.rnn}{index}",
        )(x)
    return _head(x, inputs, num_classes, params, kernel_inits, seed, f"gradguard_{params.rnn}")


def build_mlp(
    input_shape: tuple[int],
    num_classes: int,
    params: ModelParams,
    init: str = "he_normal",
    init_scale: float = 1.0,
    seed: int = 0,
) -> keras.Model:
    """Dense layers of `model.hidden` widths (optional BatchNorm, activation), then the head."""
    kernel_inits = _kernel_inits(init, init_scale, seed)
    inputs = keras.Input(input_shape, name="features")
    x = inputs
    for index, width in enumerate(params.hidden):
        dense = keras.layers.Dense(
            width,
            use_bias=not params.batch_norm,
            kernel_initializer=next(kernel_inits),
            name=f"dense{index}",
        )
        x = _block(dense, x, params, index)
    return _head(x, inputs, num_classes, params, kernel_inits, seed, "gradguard_mlp")


FAMILIES = {"image": build_cnn, "sequence": build_rnn, "table": build_mlp}


def build_model(input_shape: tuple[int, ...], num_classes: int, params: Params, kind: str):
    """The model of the params for data of `kind`: the user's builder, else the kind's family."""
    if params.model.builder is not None:
        from gradguard.training.builder import build_with

        return build_with(params.model.builder, input_shape, num_classes)
    family = FAMILIES[kind]
    return family(
        input_shape, num_classes, params.model, params.init, params.init_scale, params.seed
    )
