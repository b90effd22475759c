"""`GradientGuard`: an optimizer wrapper that clips, skips non-finite updates and keeps statistics.

It follows Keras's `LossScaleOptimizer` recipe: a `keras.optimizers.Optimizer`
that owns a few variables of its own, builds and drives an inner optimizer, and
serialises that inner optimizer in `get_config`. The math of a step lives in
`gradguard.functional.step.guard_step`, as pure functions of the settings and the state.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
from keras import backend, ops

from gradguard.functional import clipping
from gradguard.functional.state import (
    PACKS,
    STEP_LOG_COLUMNS,
    UNPACKED,
    WINDOW,
    PackedStat,
    StepRow,
    state_specs,
)
from gradguard.functional.step import GuardConfig, Layout, guard_step

# Arguments of `keras.optimizers.Optimizer` that act on the update itself; they
# belong to the inner optimizer (with their defaults, for deserialisation).
_INNER_ARGS = {
    "learning_rate": None,
    "weight_decay": None,
    "clipnorm": None,
    "clipvalue": None,
    "global_clipnorm": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}
_SETTINGS = {field.name for field in dataclasses.fields(GuardConfig)}


@keras.saving.register_keras_serializable(package="gradguard")
class GradientGuard(keras.optimizers.Optimizer):
    """Wraps an optimizer: clips gradients, skips non-finite updates, records statistics.

    Modes: "none", "value", "norm", "global_norm" (Pascanu et al. 2013), "agc"
    (Brock et al. 2021), "autoclip" (Seetharaman et al. 2020), "zscore" (ZClip,
    Kumar et al. 2025), or "auto" (global_norm if clip_norm is set, else value
    if clip_value is set, else none). What each does, spike detection and the
    behaviour under `tf.distribute`: docs/guard.md. The settings' ranges are
    `gradguard.settings.BOUNDS`.

    Args:
        inner_optimizer: the `keras.optimizers.Optimizer` that applies the update.
        mode: one of `gradguard.CLIP_MODES` or "auto".
        clip_norm, clip_value: the bounds of "norm"/"global_norm" and "value".
        agc_lambda, agc_exclude_last: AGC's factor; leave the last layer unclipped.
        autoclip_percentile, autoclip_window: AutoClip's percentile and memory.
        zscore_threshold, zscore_alpha, zscore_warmup: ZClip's settings.
        zscore_max_norm: ZClip's `max_grad_norm`, a cap on every step's global norm,
            warm-up included; its statistics see the uncapped norms (None: no cap).
        skip_nonfinite: skip the whole update when any gradient is NaN or Inf.
        max_consecutive_skips: skipped updates in a row after which `diverged` is set.
        step_log_size: steps of the per-step log kept on the device (`read_step_log`).
        spike_window, spike_sigma, spike_warmup_factor, spike_factor: the spike detector
            (`gradguard.functional.detection.spike_check`).
        skip_spikes: skip the update of a spike step too.
        loss_spikes: also watch the batch loss (TensorFlow and PyTorch only).
        collapse_loss, collapse_window, collapse_level, collapse_learned: the collapse
            check on the batch loss (`gradguard.functional.detection.collapse_check`;
            TensorFlow and PyTorch only): `collapse_loss` is the chance level, e.g.
            ln K for K balanced classes; None (the default) turns it off.
        name: the optimizer's name.

    Raises:
        ValueError: for an argument that belongs to the inner optimizer, an
            unknown mode, a mode whose bound is missing, or a setting out of range.
    """

    def __init__(self, inner_optimizer, name=None, **settings):
        refused = [
            k for k, default in _INNER_ARGS.items() if k in settings and settings.pop(k) != default
        ]
        unknown = sorted(set(settings) - _SETTINGS)
        if refused or unknown:
            names = ", ".join(f"`{k}`" for k in refused + unknown)
            raise ValueError(
                f"GradientGuard does not take {names}: set it on the inner "
                "optimizer (clipping is GradientGuard's `mode`)"
            )
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
            raise ValueError(
                "GradientGuard needs a keras.optimizers.Optimizer as "
                f"inner_optimizer; received {inner_optimizer!r}"
            )
        inner_clip = {
            k: getattr(inner_optimizer, k, None)
            for k in ("clipnorm", "clipvalue", "global_clipnorm")
        }
        if any(v is not None for v in inner_clip.values()):
            raise ValueError(
                f"the inner optimizer clips by itself ({inner_clip}); let "
                "GradientGuard clip instead, e.g. mode='global_norm', clip_norm=1.0"
            )
        config = GuardConfig(**settings)  # validates; resolves mode="auto"
        super().__init__(learning_rate=0.0, name=name)
        self.config = config
        self.inner_optimizer = inner_optimizer

    @classmethod
    def from_params(cls, mapping, inner_optimizer, name=None) -> GradientGuard:
        """A guard from a plain mapping with the pipeline's keys (`clip_mode`, `clip_norm`,
        `clip_value`, `agc_lambda`, `autoclip_*`, `zscore_*`, `skip_nonfinite`,
        `max_consecutive_skips`), e.g. a section of a project's own params.yaml; missing
        keys take params.yaml's defaults.

        Raises:
            gradguard.ParamsError: one line naming the key, its value and what is
                allowed, as `dvc repro` would say it (an unknown key is named too).
        """
        from gradguard.errors import ParamsError
        from gradguard.params import GUARD_KEYS, parse_params

        known = ("clip_mode", *GUARD_KEYS)
        for key in mapping:
            if key not in known:
                raise ParamsError(f"{key}={mapping[key]!r} is invalid; expected one of {known}")
        settings = parse_params(dict(mapping)).guard_settings()
        return cls(inner_optimizer, name=name, **settings)

    @property
    def mode(self) -> str:
        """The clipping mode in force ("auto" resolved)."""
        return self.config.mode

    @property
    def may_skip(self) -> bool:
        """Whether some updates can be skipped (non-finite ones, or spikes)."""
        return self.config.skip_nonfinite or self.config.skip_spikes

    # -- state --------------------------------------------------------------------------

    def build(self, var_list):
        if self.built:
            return
        if backend.backend() == "jax":
            for key, off in (("loss_spikes", False), ("collapse_loss", None)):
                if getattr(self.config, key) != off:
                    raise ValueError(
                        f"GradientGuard {key}={getattr(self.config, key)!r} needs the "
                        "TensorFlow or PyTorch backend: the JAX trainer does not hand the "
                        "batch loss to the optimizer"
                    )
        if backend.backend() == "tensorflow":
            from gradguard._tf_distribute import refuse_a_per_replica_loss_scale

            refuse_a_per_replica_loss_scale(self)
        self.layout = Layout.of(var_list, self.config.agc_exclude_last)
        specs = state_specs(self.config, self.layout)
        # Scalars of one dtype share a vector variable: one read and one write a step for all
        # of them, where a variable each costs two ops each (measured in docs/benchmarks.md).
        self._packs = {}
        for pack, dtype in PACKS.items():
            names = [k for k, spec in specs.items() if len(spec) == 2 and spec[0] == dtype]
            names = [k for k in names if k not in UNPACKED]
            initial = np.array([specs[k][1] for k in names], dtype)
            self._packs[pack] = (self._variable(pack, dtype, initial, (len(names),)), names)
        self._state = {
            key: self._variable(key, dtype, value, shape[0] if shape else ())
            for key, (dtype, value, *shape) in specs.items()
            if shape or key in UNPACKED
        }
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    def _variable(self, name: str, dtype: str, value, shape):
        return self.add_variable(
            shape=shape,
            dtype=dtype,
            initializer=keras.initializers.Constant(value),
            # Every replica computes the same all-reduced statistics; the batch loss is
            # the mean of the replicas' local losses.
            aggregation="mean" if name == "batch_loss" else "only_first_replica",
            name=name,
        )

    def _state_values(self, value_of) -> dict:
        """The state by name, each variable's value given by `value_of(variable)`."""
        state = {key: value_of(var) for key, var in self._state.items()}
        for var, names in self._packs.values():
            state.update(zip(names, ops.unstack(value_of(var)), strict=True))
        return state

    def _new_values(self, new_state: dict) -> dict:
        """`id(variable)` -> its new value, from the new state by name."""
        values = {id(var): ops.cast(new_state[key], var.dtype) for key, var in self._state.items()}
        for var, names in self._packs.values():
            values[id(var)] = ops.stack([ops.cast(new_state[k], var.dtype) for k in names])
        return values

    def _own_state_variables(self) -> list:
        return [*self._state.values(), *(var for var, _ in self._packs.values())]

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The layers of the trainable variables, in order (after `build`)."""
        return self.layout.layer_names

    def scale_loss(self, loss):
        """Record the batch loss for the step to come (the trainers call this each step)."""
        # JAX's trainer calls this inside a stateless scope it throws away: no point.
        if self.built and backend.backend() != "jax":
            local = ops.cast(loss, "float32")
            if backend.backend() == "tensorflow":
                from gradguard import _tf_distribute

                # Keras hands each replica its loss divided by the replica count.
                local = local * _tf_distribute.replicas()
            self._state["batch_loss"].assign(local)
        return loss

    @property
    def stats(self) -> dict:
        """The guard's state by name (`pre_clip_norm`, `skipped_steps`, ...): each has
        `.value` and `.shape`, a variable or a scalar of a packed one."""
        found = dict(self._state)
        for var, names in self._packs.values():
            found.update({name: PackedStat(var, i) for i, name in enumerate(names)})
        return found

    def reset_window(self) -> None:
        """Zero the window accumulators (call at an epoch's start; no host sync)."""
        for var, names in self._packs.values():
            keep = np.array([name not in WINDOW for name in names])
            var.assign(ops.where(keep, var.value, ops.zeros_like(var.value)))
        for key in WINDOW & set(self._state):
            var = self._state[key]
            var.assign(ops.zeros(var.shape, var.dtype))

    def read_layer_stats(self) -> dict[str, dict[str, float]]:
        """Per layer: the window's mean and max pre-clip gradient norm, and the weight norm.

        Layers are in `layer_names` order; a few host reads of one number per layer.
        """
        steps = max(int(ops.convert_to_numpy(self.stats["window_steps"].value)), 1)
        sums = ops.convert_to_numpy(self._state["window_layer_norm_sum"].value)
        maxes = ops.convert_to_numpy(self._state["window_layer_norm_max"].value)
        weight_squares = ops.convert_to_numpy(
            clipping.group_square_sums(
                [v.value for v in self._trainable_variables],
                self.layout.layer_of,
                len(self.layer_names),
            )
        )
        return {
            name: {
                "grad_norm_mean": float(sums[i]) / steps,
                "grad_norm_max": float(maxes[i]),
                "weight_norm": float(np.sqrt(weight_squares[i])),
            }
            for i, name in enumerate(self.layer_names)
        }

    def read_step_log(self) -> list[StepRow]:
        """The window's steps as `StepRow`s, oldest first (one host read).

        Global steps count every update the guard saw, skipped ones included, so
        they continue across epochs and resumed runs.
        """
        count = int(ops.convert_to_numpy(self.stats["step_log_count"].value))
        rows = ops.convert_to_numpy(self._state["step_log"].value)
        total = self.updates_seen
        size = self.config.step_log_size
        kept = min(count, size)
        order = [(count - kept + i) % size for i in range(kept)]
        first = total - kept
        n = len(STEP_LOG_COLUMNS)
        return [
            StepRow(
                step=first + i,
                **{
                    name: int(value) if name == "event" else float(value)
                    for name, value in zip(STEP_LOG_COLUMNS, rows[slot][:n], strict=True)
                },
                layer_norms=dict(zip(self.layer_names, map(float, rows[slot][n:]), strict=True)),
            )
            for i, slot in enumerate(order)
        ]

    @property
    def updates_seen(self) -> int:
        """How many updates the guard was given, skipped ones included (one host read)."""
        return int(ops.convert_to_numpy(self._iterations.value))

    @property
    def iterations(self):
        """The inner optimizer's step count: skipped updates do not advance it."""
        return self.inner_optimizer.iterations

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    # -- applying it: stateless (JAX and others) and stateful (TensorFlow) --------------

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        if not self.built:
            raise ValueError(
                "GradientGuard must be built before stateless_apply; call "
                "optimizer.build(trainable_variables)"
            )
        # Keras's LossScaleOptimizer hands over the variables themselves, inside a
        # StatelessScope that maps them to values; JAX no longer takes variables as arrays.
        optimizer_variables = [
            v.value if isinstance(v, keras.Variable) else v for v in optimizer_variables
        ]
        n_own = len(self._variables)
        own, inner = list(optimizer_variables[:n_own]), list(optimizer_variables[n_own:])
        index = {id(v): i for i, v in enumerate(self._variables)}
        state = self._state_values(lambda var: own[index[id(var)]])
        step = index[id(self._iterations)]
        clipped, apply_update, new_state = guard_step(
            self.config, self.layout, state, grads, trainable_variables, own[step]
        )
        new_weights, new_inner = self.inner_optimizer.stateless_apply(
            inner, clipped, trainable_variables
        )
        if self.may_skip:
            keep = lambda new, old: ops.where(apply_update, new, old)  # noqa: E731
            new_weights = [
                keep(n, o) for n, o in zip(new_weights, trainable_variables, strict=True)
            ]
            new_inner = [keep(n, o) for n, o in zip(new_inner, inner, strict=True)]
        for key, value in self._new_values(new_state).items():
            own[index[key]] = value
        own[step] = own[step] + 1  # the guard's own count of every apply, skipped or not
        return new_weights, own + new_inner

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        trainable_variables = list(trainable_variables or self._trainable_variables)
        if backend.backend() == "tensorflow":
            from gradguard import _tf_distribute

            _tf_distribute.apply(self, list(grads), trainable_variables)
            return
        new_weights, new_optimizer = self.stateless_apply(
            [v.value for v in self.variables], grads, [v.value for v in trainable_variables]
        )
        for var, value in zip(
            trainable_variables + self.variables, new_weights + new_optimizer, strict=True
        ):
            var.assign(value)

    def stateful_guard_step(self, grads, trainable_variables):
        """`guard_step` on the variables' values: `(clipped, apply_update, commit)`.

        Call `commit()` after the inner optimizer's update: it writes the guard's new
        state. TensorFlow runs stateful ops in program order, so writing first would
        hold the update back until every statistic is computed (measured: +0.3 ms a
        step on the default CNN, 2 CPU cores).
        """
        state = self._state_values(lambda var: var.value)
        clipped, apply_update, new_state = guard_step(
            self.config,
            self.layout,
            state,
            grads,
            [v.value for v in trainable_variables],
            self._iterations.value,
        )

        def commit() -> None:
            new_values = self._new_values(new_state)
            for var in self._own_state_variables():
                var.assign(new_values[id(var)])
            self._iterations.assign_add(1)

        return clipped, apply_update, commit

    # -- serialisation ------------------------------------------------------------------

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            **dataclasses.asdict(self.config),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        return cls(inner, **config)
