"""The guarded optimizer, the training context, and byte-reproducible model files.

The models themselves: `gradguard.training.families` (built in) and
`gradguard.training.builder` (your own).
"""

from __future__ import annotations

import contextlib
import json
import math

import keras

from gradguard.guard import GradientGuard
from gradguard.io import atomic_path, canonical_zip
from gradguard.params import Params, TrainParams


def build_inner_optimizer(params: TrainParams) -> keras.optimizers.Optimizer:
    """The optimizer `train.optimizer` names, with `train.learning_rate`.

    Named after `train.optimizer`, not by Keras's counter (`adam_1` for a process's
    second Adam), so a run's saved model does not depend on what ran before it.
    """
    rate, name = params.learning_rate, params.optimizer
    if params.optimizer == "sgd":
        return keras.optimizers.SGD(rate, name=name)
    if params.optimizer == "momentum":
        return keras.optimizers.SGD(rate, momentum=params.momentum, name=name)
    if params.optimizer == "adam":
        return keras.optimizers.Adam(rate, name=name)
    if params.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=params.weight_decay, name=name)
    if params.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(rate, name=name)
    raise ValueError(f"train.optimizer={params.optimizer!r} is not known")


def collapse_check_off(params: Params) -> str | None:
    """Why the params' collapse check cannot run here (None: it can, or none is asked for).

    It reads the batch loss, which the JAX trainer (`train.distribute: multihost`)
    and Keras's loss-scale optimizer (`train.mixed_precision`) do not hand over.
    """
    if params.train.collapse_window is None:
        return None
    if keras.backend.backend() == "jax":
        return "the JAX backend does not hand the batch loss to the optimizer"
    if params.train.mixed_precision:
        return "train.mixed_precision: the loss-scale optimizer keeps the batch loss"
    return None


def build_optimizer(params: Params, num_classes: int | None = None) -> keras.optimizers.Optimizer:
    """The inner optimizer wrapped in a `GradientGuard` configured from the params.

    With `num_classes` and `train.collapse_window` set, the guard checks for a
    collapse back to the chance loss, ln(num_classes), where it can
    (`collapse_check_off`). With `train.mixed_precision`, the guard is wrapped in
    turn in a `GuardedLossScaleOptimizer` (dynamic loss scaling whose overflow
    decision agrees across replicas; see `gradguard.loss_scale`).
    """
    knobs = params.train
    collapse = num_classes is not None and num_classes > 1 and knobs.collapse_window is not None
    collapse = collapse and collapse_check_off(params) is None
    guard = GradientGuard(
        build_inner_optimizer(params.train),
        **params.guard_settings(),
        spike_window=params.train.spike_window,
        spike_sigma=params.train.spike_sigma,
        spike_warmup_factor=params.train.spike_warmup_factor,
        spike_factor=params.train.spike_factor,
        skip_spikes=params.train.on_explosion in ("skip", "rollback"),
        loss_spikes=params.train.loss_spikes,
        name="gradient_guard",
        **(_collapse_settings(knobs, num_classes) if collapse else {}),
    )
    if params.train.mixed_precision:
        from gradguard.loss_scale import GuardedLossScaleOptimizer

        return GuardedLossScaleOptimizer(guard, name="loss_scale_optimizer")
    return guard


def _collapse_settings(knobs: TrainParams, num_classes: int) -> dict:
    """The guard's collapse check: chance is ln K for K classes."""
    return {
        "collapse_loss": math.log(num_classes),
        "collapse_window": knobs.collapse_window,
        "collapse_level": knobs.collapse_level,
        "collapse_learned": knobs.collapse_learned,
    }


def _without_save_date(metadata: bytes) -> bytes:
    fields = json.loads(metadata)
    fields.pop("date_saved", None)  # wall-clock time: the only part that differs per save
    return json.dumps(fields, sort_keys=True).encode()


def _numbered_shared_objects(config: bytes) -> bytes:
    """Keras names an object shared by layers with its `id()`, a memory address that
    differs per process; number them in order of appearance instead (only equality
    between the ids matters when loading). A dtype policy loses its id: it is a value,
    shared by the layers of a model built in this process but not by those of a model
    loaded from a file, so the id would tell a resumed run's file from an uninterrupted
    one's."""
    numbers: dict[int, int] = {}

    def walk(node):
        if isinstance(node, dict):
            policy = node.get("class_name") == "DTypePolicy"
            return {
                key: numbers.setdefault(value, len(numbers))
                if key == "shared_object_id"
                else walk(value)
                for key, value in node.items()
                if not (policy and key == "shared_object_id")
            }
        return [walk(item) for item in node] if isinstance(node, list) else node

    return json.dumps(walk(json.loads(config))).encode()


def canonicalise_model_file(path) -> None:
    """Make a saved `.keras` file depend on the model alone.

    Keras writes the save date into `metadata.json`, memory addresses into
    `config.json` and the current time into every zip entry, so two saves of
    the same model differ and DVC sees a new model on every run. After this,
    they are byte-identical.
    """
    canonical_zip(
        path,
        {"metadata.json": _without_save_date, "config.json": _numbered_shared_objects},
    )


def save_model(model: keras.Model, path) -> None:
    """Save `model` to a `.keras` file atomically and byte-reproducibly."""
    with atomic_path(path) as tmp:
        model.save(tmp)
        canonicalise_model_file(tmp)


def load_model(path) -> keras.Model:
    """Load a `.keras` model saved with a `GradientGuard` (`safe_mode=True`: no code is run)."""
    import gradguard.loss_scale
    import gradguard.training.families  # noqa: F401  (registers SparseSpectral)

    return keras.models.load_model(path, safe_mode=True)


def configure_determinism(seed: int) -> None:
    """Seed Python, NumPy and the backend; make TensorFlow's ops deterministic.

    Uses the GPU when TensorFlow sees one: nothing here pins a device.
    """
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


@contextlib.contextmanager
def training_context(distribute: str, mixed_precision: bool):
    """Build and compile inside this: the distribution scope and the dtype policy.

    The global dtype policy is restored on exit; the model keeps the policy it
    was built with.

    `distribute="multihost"` needs the distribution `gradguard.training.multihost.initialize`
    set.

    Raises:
        ValueError: `distribute="mirrored"` on a backend other than TensorFlow;
            `"multihost"` without the JAX backend's distribution.
    """
    backend = keras.backend.backend()
    if distribute == "mirrored" and backend != "tensorflow":
        raise ValueError(
            f"train.distribute={distribute!r} needs the TensorFlow backend; this is {backend!r}"
        )
    distributed = backend == "jax" and keras.distribution.distribution() is not None
    if distribute == "multihost" and not distributed:
        raise ValueError(
            "train.distribute='multihost' needs the JAX backend and "
            "gradguard.training.multihost.initialize() called first"
        )
    previous = keras.config.dtype_policy()
    if mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        if distribute in ("none", "multihost"):  # multihost: Keras's global distribution
            yield
        else:
            from gradguard._tf_distribute import strategy_scope

            with strategy_scope(distribute):
                yield
    finally:
        keras.config.set_dtype_policy(previous)
