"""The params schema: `params.yaml` read once into frozen, validated dataclasses.

Every rule fails with one line naming the key, the value received and what is
allowed, so a typo such as `clip_nrom` stops a stage before it writes anything.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin

from gradguard.errors import ParamsError, invalid
from gradguard.io import read_yaml
from gradguard.kind_keys import check_builder
from gradguard.settings import (
    BOUNDS,
    CLIP_MODES,
    EXPLOSION_POLICIES,
    MODE_BOUND,
    resolve_clip_mode,
    setting_error,
)

INITIALIZERS = (
    "glorot_uniform",
    "glorot_normal",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "orthogonal",
    "normal",  # N(0, init_scale^2): Pascanu et al. 2013's plain Gaussian
)
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "rmsprop")
SOURCES = ("digits", "mnist", "fashion_mnist", "npz", "folder", "temporal_order")
GENERATED = ("temporal_order",)  # sources made from the seed: fixed split sizes, no file


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise invalid(key, value, allowed)


def _setting(key: str, value: Any) -> None:
    """A guard setting, checked against its row of `gradguard.settings.BOUNDS`."""
    allowed = setting_error(key.rsplit(".", 1)[-1], value)
    _check(allowed is None, key, value, allowed)


def _positive(key: str, value: float | None) -> None:
    _check(value is None or value > 0, key, value, "a number > 0 (or null)")


def _fraction(key: str, value: float) -> None:
    _check(0 < value < 1, key, value, "a fraction in (0, 1)")


@dataclasses.dataclass(frozen=True)
class DataParams:
    source: str = "digits"  # one of SOURCES
    path: str | None = None  # file (npz) or folder (folder) the source reads
    image_size: int = 28  # images are resized to image_size x image_size
    channels: int = 1  # 1: grey (colour converted to luma); 3: RGB kept end to end
    val_fraction: float = 0.15  # share of all samples held out for validation
    test_fraction: float = 0.15  # share of all samples held out for the final test
    # auto: read from the data (gradguard.data.kinds.kind_of); or one of gradguard.kind_keys.KINDS
    kind: Literal["auto", "image", "sequence", "table"] = "auto"
    standardize: bool = True  # sequences and tables: each feature by the training split's
    # Generated sources (temporal_order): the sequence length and each split's size.
    length: int = 50
    train_count: int = 20_000
    val_count: int = 1_000
    test_count: int = 10_000  # fresh sequences, as in Pascanu et al. 2013

    def validate(self) -> None:
        _check(self.source in SOURCES, "data.source", self.source, f"one of {SOURCES}")
        needs_path = self.source in ("npz", "folder")
        _check(
            not needs_path or bool(self.path),
            "data.path",
            self.path,
            f"a path when data.source is {self.source!r}",
        )
        _check(
            4 <= self.image_size <= 512,
            "data.image_size",
            self.image_size,
            "an integer in [4, 512]",
        )
        _check(self.channels in (1, 3), "data.channels", self.channels, "1 (grey) or 3 (RGB)")
        _check(10 <= self.length <= 10_000, "data.length", self.length, "an integer in [10, 10000]")
        for key in ("train_count", "val_count", "test_count"):
            count = getattr(self, key)
            _check(count >= 4, f"data.{key}", count, "an integer >= 4")
        _fraction("data.val_fraction", self.val_fraction)
        _fraction("data.test_fraction", self.test_fraction)
        total = self.val_fraction + self.test_fraction
        _check(
            total < 1,
            "data.val_fraction+data.test_fraction",
            round(total, 6),
            "a sum below 1 so that a training split remains",
        )


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    copies: int = 2  # augmented copies added per training image; 0 passes it through
    rotation: float = 10.0  # maximum rotation, degrees
    shift: float = 0.1  # maximum shift, fraction of the image side
    zoom: float = 0.1  # maximum zoom in or out, fraction
    noise_std: float = 0.0  # std of added Gaussian pixel noise (pixels are in [0, 1])

    def validate(self) -> None:
        _check(0 <= self.copies <= 20, "augment.copies", self.copies, "an integer in [0, 20]")
        _check(0 <= self.rotation <= 180, "augment.rotation", self.rotation, "degrees in [0, 180]")
        _check(0 <= self.shift < 1, "augment.shift", self.shift, "a fraction in [0, 1)")
        _check(0 <= self.zoom < 1, "augment.zoom", self.zoom, "a fraction in [0, 1)")
        _check(0 <= self.noise_std <= 1, "augment.noise_std", self.noise_std, "a number in [0, 1]")


@dataclasses.dataclass(frozen=True)
class ModelParams:
    filters: tuple[int, ...] = (32, 64)  # one Conv2D block per entry, this many filters
    kernel_size: int = 3  # square convolution kernel side
    pooling: Literal["max", "none"] = "max"  # 2x2 pooling after each conv block
    head: Literal["flatten", "global_avg"] = "flatten"  # how conv maps reach the dense layer
    dense: int = 128  # width of the hidden dense layer; 0 = none
    activation: Literal["relu", "tanh", "elu", "gelu", "sigmoid"] = "relu"
    batch_norm: bool = False  # BatchNormalization after each conv (tables: each hidden layer)
    dropout: float = 0.3  # dropout before the classifier
    # Your own model: "nets/<file>.py:<function>", (input_shape, num_classes) -> keras.Model
    builder: str | None = None
    # Sequences: stacked recurrent layers; the input kernels take `init` x `init_scale`.
    rnn: Literal["simple", "lstm", "gru"] = "gru"
    units: int = 64  # units of each recurrent layer
    layers: int = 1  # recurrent layers, stacked
    recurrent_init: Literal["orthogonal", "normal", "sparse"] = "orthogonal"
    recurrent_scale: float = 1.0  # orthogonal: gain; normal: sigma; sparse: spectral radius
    recurrent_nonzero: int = 15  # sparse: non-zero weights a unit (Pascanu et al. 2013)
    hidden: tuple[int, ...] = (128, 64)  # tables: one Dense layer per entry, this wide

    def validate(self) -> None:
        check_builder(self.builder)
        _check(self.units >= 1, "model.units", self.units, "an integer >= 1")
        _check(1 <= self.layers <= 16, "model.layers", self.layers, "an integer in [1, 16]")
        _check(
            self.recurrent_scale > 0 and math.isfinite(self.recurrent_scale),
            "model.recurrent_scale",
            self.recurrent_scale,
            "a finite number > 0",
        )
        _check(
            self.recurrent_nonzero >= 1,
            "model.recurrent_nonzero",
            self.recurrent_nonzero,
            "an integer >= 1",
        )
        _check(
            len(self.hidden) >= 1 and all(h >= 1 for h in self.hidden),
            "model.hidden",
            list(self.hidden),
            "a non-empty list of positive integers",
        )
        _check(
            len(self.filters) >= 1 and all(f >= 1 for f in self.filters),
            "model.filters",
            list(self.filters),
            "a non-empty list of positive integers",
        )
        _check(
            1 <= self.kernel_size <= 11,
            "model.kernel_size",
            self.kernel_size,
            "an integer in [1, 11]",
        )
        _check(self.dense >= 0, "model.dense", self.dense, "an integer >= 0")
        _check(0 <= self.dropout < 1, "model.dropout", self.dropout, "a fraction in [0, 1)")


@dataclasses.dataclass(frozen=True)
class TrainParams:
    optimizer: str = "adam"  # one of OPTIMIZERS ("momentum" = SGD with momentum)
    learning_rate: float = 0.001  # step size of the inner optimizer
    momentum: float = 0.9  # momentum of "momentum" (SGD with momentum)
    weight_decay: float = 0.0001  # decoupled weight decay, used by "adamw"
    batch_size: int = 64  # samples per step
    shuffle_buffer: int = 20_000  # images shuffled together (whole shards: gradguard.data.shards)
    epochs: int = 30  # upper bound; early stopping usually ends sooner
    patience: int = 5  # epochs without val_loss improvement before stopping
    # mirrored: tf.distribute.MirroredStrategy (one host); multihost: Keras's DataParallel on
    # JAX over every process of a cluster (see gradguard.training.multihost)
    distribute: Literal["none", "mirrored", "multihost"] = "none"
    mixed_precision: bool = False  # mixed_float16 compute with dynamic loss scaling
    on_explosion: Literal[EXPLOSION_POLICIES] = "none"  # reaction to a spike
    spike_window: int = 128  # gradient norms in the spike detector's rolling window
    spike_sigma: float = 6.0  # a norm above mean + spike_sigma * std of the window is a spike
    spike_warmup_factor: float | None = 100.0  # before that: above this x median so far; null off
    spike_factor: float | None = 10.0  # and above this x the window's mean; null: the band alone
    loss_spikes: bool = False  # the batch loss above the same band of its own window: a spike
    # Collapse: after a batch loss <= collapse_learned x ln K, collapse_window batch losses in
    # a row >= collapse_level x ln K (K classes) are an event; null window: no check.
    collapse_window: int | None = 50
    collapse_level: float = 0.9
    collapse_learned: float = 0.5
    snapshot_every: int = 50  # rollback: updates between snapshots of weights and optimizer
    lr_backoff: float = 0.5  # rollback: learning-rate factor at each rollback
    max_rollbacks: int = 3  # rollback: then the run stops as diverged
    snapshots_kept: int = 3  # rollback: snapshots kept; a doomed one sends it to the one before

    def validate(self) -> None:
        _check(
            self.optimizer in OPTIMIZERS, "train.optimizer", self.optimizer, f"one of {OPTIMIZERS}"
        )
        _positive("train.learning_rate", self.learning_rate)
        _check(0 <= self.momentum < 1, "train.momentum", self.momentum, "a number in [0, 1)")
        _check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "a number >= 0")
        _check(self.batch_size >= 1, "train.batch_size", self.batch_size, "an integer >= 1")
        _check(
            self.shuffle_buffer >= 1,
            "train.shuffle_buffer",
            self.shuffle_buffer,
            "an integer >= 1",
        )
        _check(self.epochs >= 1, "train.epochs", self.epochs, "an integer >= 1")
        _check(self.patience >= 0, "train.patience", self.patience, "an integer >= 0")
        for key in ("spike_window", "spike_sigma", "spike_warmup_factor", "spike_factor"):
            _setting(f"train.{key}", getattr(self, key))
        for key in ("collapse_level", "collapse_learned"):
            _setting(f"train.{key}", getattr(self, key))
        if self.collapse_window is not None:
            _setting("train.collapse_window", self.collapse_window)
        _check(
            self.collapse_learned < self.collapse_level,
            "train.collapse_learned",
            self.collapse_learned,
            f"less than train.collapse_level ({self.collapse_level})",
        )
        _check(
            self.snapshots_kept >= 1, "train.snapshots_kept", self.snapshots_kept, "an integer >= 1"
        )
        _check(
            not (self.loss_spikes and self.mixed_precision),
            "train.loss_spikes",
            self.loss_spikes,
            "false with train.mixed_precision=true (Keras's loss-scale optimizer keeps "
            "the batch loss from GradientGuard)",
        )
        _check(
            self.snapshot_every >= 1, "train.snapshot_every", self.snapshot_every, "an integer >= 1"
        )
        _check(0 < self.lr_backoff <= 1, "train.lr_backoff", self.lr_backoff, "a factor in (0, 1]")
        _check(
            self.max_rollbacks >= 0, "train.max_rollbacks", self.max_rollbacks, "an integer >= 0"
        )


@dataclasses.dataclass(frozen=True)
class EvaluateParams:
    baseline: Literal["kernel", "svc", "logistic"] = "kernel"  # scikit-learn model beside the CNN
    batch_size: int = 256  # samples per evaluation batch
    baseline_images: int = 10_000  # the baseline is fitted on, and scores, at most this many
    explode_factor: float = 100.0  # verdict: weight norm grew this many times: exploded
    collapse_margin: float = 0.1  # verdict: accuracy closes less of chance..1: collapsed

    def validate(self) -> None:
        _check(self.batch_size >= 1, "evaluate.batch_size", self.batch_size, "an integer >= 1")
        _check(
            self.baseline_images >= 10,
            "evaluate.baseline_images",
            self.baseline_images,
            "an integer >= 10",
        )
        _check(
            self.explode_factor > 1,
            "evaluate.explode_factor",
            self.explode_factor,
            "a factor > 1",
        )
        _fraction("evaluate.collapse_margin", self.collapse_margin)


# The params keys a `GradientGuard` takes as they are (its clipping and skipping settings):
# `GradientGuard.from_params` reads them from any mapping, the pipeline from params.yaml.
GUARD_KEYS = (
    "clip_norm",
    "clip_value",
    "agc_lambda",
    "autoclip_percentile",
    "autoclip_window",
    "zscore_threshold",
    "zscore_alpha",
    "zscore_warmup",
    "zscore_max_norm",
    "skip_nonfinite",
    "max_consecutive_skips",
)


@dataclasses.dataclass(frozen=True)
class Params:
    seed: int = 42  # seeds the split, augmentation, initialisation and shuffling
    clip_mode: str = "auto"  # auto: global_norm if clip_norm, value if clip_value, else none
    clip_norm: float | None = None  # L2 bound of norm/global_norm clipping; null = off
    clip_value: float | None = None  # elementwise bound of value clipping; null = off
    agc_lambda: float = 0.01  # AGC: unit-wise bound ||G|| <= lambda * max(||W||, 1e-3)
    autoclip_percentile: float = 10.0  # AutoClip: percentile of past norms used as the bound
    autoclip_window: int = 1000  # AutoClip: how many past norms are remembered
    zscore_threshold: float = 2.5  # ZClip: z-score above which the norm is scaled down
    zscore_alpha: float = 0.97  # ZClip: EMA decay of the norm's mean and variance
    zscore_warmup: int = 25  # ZClip: steps observed before any clipping
    zscore_max_norm: float | None = None  # ZClip: a cap on every step's norm; null = none
    skip_nonfinite: bool = True  # skip updates whose gradients hold NaN or Inf
    max_consecutive_skips: int = 10  # after this many skips in a row the run is diverged
    init: str = "he_normal"  # kernel initialiser, one of INITIALIZERS
    init_scale: float = 1.0  # multiplies the initialiser's standard deviation
    data: DataParams = dataclasses.field(default_factory=DataParams)
    augment: AugmentParams = dataclasses.field(default_factory=AugmentParams)
    model: ModelParams = dataclasses.field(default_factory=ModelParams)
    train: TrainParams = dataclasses.field(default_factory=TrainParams)
    evaluate: EvaluateParams = dataclasses.field(default_factory=EvaluateParams)

    def guard_settings(self) -> dict[str, Any]:
        """The `GradientGuard` keyword arguments these params set: its mode ("auto"
        resolved) and every `GUARD_KEYS` value."""
        return {"mode": self.resolved_clip_mode, **{k: getattr(self, k) for k in GUARD_KEYS}}

    @property
    def resolved_clip_mode(self) -> str:
        """The clipping mode in force once `auto` is resolved from the bounds set."""
        return resolve_clip_mode(self.clip_mode, self.clip_norm, self.clip_value)

    def validate(self) -> None:
        _check(self.seed >= 0, "seed", self.seed, "an integer >= 0")
        modes = ("auto", *CLIP_MODES)
        _check(self.clip_mode in modes, "clip_mode", self.clip_mode, f"one of {modes}")
        _setting("clip_norm", self.clip_norm)
        _setting("clip_value", self.clip_value)
        _check(
            self.clip_norm is None or self.clip_value is None,
            "clip_value",
            self.clip_value,
            f"null while clip_norm={self.clip_norm} is set (choose one bound)",
        )
        mode = self.resolved_clip_mode
        bound = MODE_BOUND.get(mode)
        if bound is not None:
            _check(getattr(self, bound) is not None, bound, None, f"a number > 0 for {mode}")
        for key in GUARD_KEYS:  # the bounds themselves were checked first, above
            if key in BOUNDS and key not in MODE_BOUND.values():
                _setting(key, getattr(self, key))
        _check(self.init in INITIALIZERS, "init", self.init, f"one of {INITIALIZERS}")
        _check(
            self.init_scale > 0 and math.isfinite(self.init_scale),
            "init_scale",
            self.init_scale,
            "a finite number > 0",
        )
        for section in (self.data, self.augment, self.model, self.train, self.evaluate):
            section.validate()


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check one raw YAML value against a field's annotation and convert it."""
    origin, args = get_origin(annotation), get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        _check(isinstance(value, Mapping), key, value, "a mapping of keys")
        return _build(annotation, value, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner)
    if origin is Literal:
        _check(value in args, key, value, f"one of {args}")
        return value
    if origin is tuple:
        _check(isinstance(value, list | tuple), key, value, "a list")
        return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    if annotation is bool:
        _check(isinstance(value, bool), key, value, "true or false")
    elif annotation is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, value, "an integer")
    elif annotation is float:
        _check(
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value),
            key,
            value,
            "a finite number",
        )
        return float(value)
    elif annotation is str:
        _check(isinstance(value, str), key, value, "a string")
    return value


def _build(cls: type, raw: Mapping[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        _check(
            key in fields,
            f"{prefix}{key}",
            raw[key],
            f"a known key; {prefix or 'top-level '}keys are {sorted(fields)}",
        )
    return cls(**{k: _coerce(f"{prefix}{k}", v, hints[k]) for k, v in raw.items()})


def parse_params(raw: Mapping[str, Any] | None) -> Params:
    """Validate a params mapping (as read from `params.yaml`) into `Params`.

    Args:
        raw: the mapping; missing keys take their defaults.

    Returns:
        The frozen, validated `Params`.

    Raises:
        ParamsError: on an unknown key, a wrong type or an out-of-range value;
            the message names the key, the value and what is allowed.
    """
    params = _build(Params, raw or {})
    params.validate()
    return params


def schema(cls: type | None = None) -> dict:
    """The keys `params.yaml` may hold, with their types: {key: type or {subkey: type}}.

    Depends on this module alone, never on the values, so a stage that writes it
    changes its output only when the schema changes.
    """
    cls = cls or Params
    hints = typing.get_type_hints(cls)

    def describe(hint) -> dict | str:
        if dataclasses.is_dataclass(hint):
            return schema(hint)
        return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")

    return {field.name: describe(hints[field.name]) for field in dataclasses.fields(cls)}


def load_params(path: str) -> Params:
    """Read and validate a `params.yaml` file. Raises `ParamsError` if invalid."""
    raw = read_yaml(path, ParamsError)
    _check(raw is None or isinstance(raw, Mapping), path, type(raw).__name__, "a YAML mapping")
    return parse_params(raw)
