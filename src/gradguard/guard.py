"""`GradientGuard`: an optimizer wrapper that clips, skips non-finite updates and keeps statistics.

It follows Keras's `LossScaleOptimizer` recipe: a `keras.optimizers.Optimizer`
that owns a few variables of its own, builds and drives an inner optimizer, and
serialises that inner optimizer in `get_config`.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import backend, ops

from gradguard import clipping, detection
from gradguard.clipping import AutoClipState, ZScoreState
from gradguard.detection import SpikeState
from gradguard.params import CLIP_MODES

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
# Statistics every mode keeps: name -> (dtype, initial value).
_STATS = {
    "pre_clip_norm": ("float32", 0.0),  # last step's global norm before clipping
    "post_clip_norm": ("float32", 0.0),  # ... and after clipping
    "threshold": ("float32", float("inf")),  # global-norm bound in force (inf: none)
    "clipped_steps": ("int32", 0),  # finite steps whose gradients clipping changed
    "skipped_steps": ("int32", 0),  # updates skipped for non-finite gradients
    "consecutive_skips": ("int32", 0),  # skips in a row, reset by a finite step
    "first_nonfinite_step": ("int32", -1),  # step of the first NaN/Inf gradient
    "diverged": ("int32", 0),  # 1 once an update went non-finite or skips ran out
    "spikes": ("int32", 0),  # finite steps whose norm was a spike (see gradguard.detection)
    "events": ("int32", 0),  # spikes + non-finite steps: what recovery policies react to
    # Window accumulators, reset by `reset_window` (e.g. each epoch): no host sync per step.
    "window_norm_sum": ("float32", 0.0),
    "window_norm_max": ("float32", 0.0),
    "window_steps": ("int32", 0),  # finite steps in the window
    "window_clipped": ("int32", 0),
}


@keras.saving.register_keras_serializable(package="gradguard")
class GradientGuard(keras.optimizers.Optimizer):
    """Wraps an optimizer: clips gradients, skips non-finite updates, records statistics.

    Modes (`mode`):
        - "none": no clipping (statistics and skipping only).
        - "value": each element clipped to [-clip_value, clip_value].
        - "norm": each gradient tensor clipped to an L2 norm <= clip_norm.
        - "global_norm": all gradients scaled together to a global norm <= clip_norm
          (Pascanu et al. 2013).
        - "agc": unit-wise adaptive clipping, ||G_i|| <= agc_lambda * max(||W_i||, 1e-3)
          (Brock et al. 2021); the last layer's weights are left alone by default.
        - "autoclip": global norm clipped to the `autoclip_percentile`-th percentile of
          the last `autoclip_window` norms (Seetharaman et al. 2020).
        - "zscore": ZClip (Kumar et al. 2025): EMA mean and variance of the global norm;
          a norm with z-score above `zscore_threshold` is scaled to an adaptive bound.
        - "auto" (default): "global_norm" if clip_norm is set, else "value" if
          clip_value is set, else "none".

    Under `tf.distribute` the gradients are all-reduced before clipping, so a
    multi-replica run clips the same gradient a one-device run does.

    Args:
        inner_optimizer: the `keras.optimizers.Optimizer` that applies the update.
        mode: one of `gradguard.CLIP_MODES` or "auto".
        clip_norm: the L2 bound for "norm" and "global_norm".
        clip_value: the elementwise bound for "value".
        agc_lambda: AGC's clipping factor.
        agc_exclude_last: leave the variables of the last layer unclipped under AGC.
        autoclip_percentile: AutoClip's percentile, in (0, 100].
        autoclip_window: how many past norms AutoClip remembers.
        zscore_threshold, zscore_alpha, zscore_warmup: ZClip's z-score bound, EMA
            decay and warm-up steps.
        skip_nonfinite: skip the whole update (weights, optimizer slots, iterations)
            when any gradient is NaN or Inf.
        max_consecutive_skips: after this many skips in a row, `diverged` is set.
        step_log_size: how many steps of (pre-clip norm, post-clip norm, threshold,
            event) the window keeps on the device for `read_step_log` (the last win).
        spike_window, spike_sigma: a finite norm above mean + spike_sigma * std of
            the last spike_window norms is a spike (counted in `spikes`).
        skip_spikes: skip the update of a spike step too, as a non-finite one.
        name: the optimizer's name.

    Raises:
        ValueError: for an argument that belongs to the inner optimizer, an
            unknown mode, or a mode whose bound is missing.
    """

    def __init__(
        self,
        inner_optimizer,
        mode="auto",
        clip_norm=None,
        clip_value=None,
        agc_lambda=0.01,
        agc_exclude_last=True,
        autoclip_percentile=10.0,
        autoclip_window=1000,
        zscore_threshold=2.5,
        zscore_alpha=0.97,
        zscore_warmup=25,
        skip_nonfinite=True,
        max_consecutive_skips=10,
        step_log_size=1024,
        spike_window=128,
        spike_sigma=6.0,
        skip_spikes=False,
        name=None,
        **kwargs,
    ):
        refused = [
            k for k, default in _INNER_ARGS.items() if k in kwargs and kwargs.pop(k) != default
        ]
        if refused or kwargs:
            names = ", ".join(f"`{k}`" for k in refused + list(kwargs))
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
        if mode == "auto":
            mode = (
                "global_norm"
                if clip_norm is not None
                else "value"
                if clip_value is not None
                else "none"
            )
        if mode not in CLIP_MODES:
            raise ValueError(
                f"GradientGuard mode={mode!r}; expected one of {('auto', *CLIP_MODES)}"
            )
        needs = {"norm": clip_norm, "global_norm": clip_norm, "value": clip_value}
        if mode in needs and (needs[mode] is None or needs[mode] <= 0):
            bound = "clip_value" if mode == "value" else "clip_norm"
            raise ValueError(
                f"GradientGuard mode={mode!r} needs {bound} > 0; received {bound}={needs[mode]!r}"
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer
        self.mode = mode
        self.clip_norm = clip_norm
        self.clip_value = clip_value
        self.agc_lambda = agc_lambda
        self.agc_exclude_last = agc_exclude_last
        self.autoclip_percentile = autoclip_percentile
        self.autoclip_window = autoclip_window
        self.zscore_threshold = zscore_threshold
        self.zscore_alpha = zscore_alpha
        self.zscore_warmup = zscore_warmup
        self.skip_nonfinite = skip_nonfinite
        self.max_consecutive_skips = max_consecutive_skips
        self.step_log_size = int(step_log_size)
        self.spike_window = int(spike_window)
        self.spike_sigma = float(spike_sigma)
        self.skip_spikes = bool(skip_spikes)
        checks = {
            "agc_lambda": (agc_lambda, agc_lambda > 0, "> 0"),
            "autoclip_percentile": (
                autoclip_percentile,
                0 < autoclip_percentile <= 100,
                "in (0, 100]",
            ),
            "autoclip_window": (autoclip_window, autoclip_window >= 1, ">= 1"),
            "zscore_threshold": (zscore_threshold, zscore_threshold > 0, "> 0"),
            "zscore_alpha": (zscore_alpha, 0 < zscore_alpha < 1, "in (0, 1)"),
            "zscore_warmup": (zscore_warmup, zscore_warmup >= 1, ">= 1"),
            "max_consecutive_skips": (max_consecutive_skips, max_consecutive_skips >= 1, ">= 1"),
            "step_log_size": (step_log_size, self.step_log_size >= 1, ">= 1"),
            "spike_window": (spike_window, self.spike_window >= 2, ">= 2"),
            "spike_sigma": (spike_sigma, self.spike_sigma > 0, "> 0"),
        }
        for key, (value, ok, allowed) in checks.items():
            if not ok:
                raise ValueError(f"GradientGuard {key}={value!r}; expected {allowed}")

    # -- state --------------------------------------------------------------------------

    def _state_specs(self) -> dict:
        specs = dict(_STATS)
        # Per-step (pre-clip norm, post-clip norm, threshold) of the current window, a ring.
        specs["step_log"] = ("float32", 0.0, (self.step_log_size, 4))
        specs["spike_history"] = ("float32", 0.0, (self.spike_window,))
        specs["spike_count"] = ("int32", 0)
        specs["step_log_count"] = ("int32", 0)
        if self.mode == "autoclip":
            specs["autoclip_history"] = ("float32", 0.0, (self.autoclip_window,))
            specs["autoclip_count"] = ("int32", 0)
        if self.mode == "zscore":
            specs.update(
                zscore_count=("int32", 0), zscore_mean=("float32", 0.0), zscore_var=("float32", 0.0)
            )
        return specs

    def build(self, var_list):
        if self.built:
            return
        self._state = {}
        for key, (dtype, value, *shape) in self._state_specs().items():
            self._state[key] = self.add_variable(
                shape=shape[0] if shape else (),
                dtype=dtype,
                initializer=keras.initializers.Constant(value),
                # Every replica computes the same all-reduced statistics.
                aggregation="only_first_replica",
                name=key,
            )
        last_layer = var_list[-1].path.rsplit("/", 1)[0] if var_list else None
        self._agc_excluded = [
            self.agc_exclude_last and v.path.rsplit("/", 1)[0] == last_layer for v in var_list
        ]
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    @property
    def stats(self) -> dict:
        """The guard's state variables by name (`pre_clip_norm`, `skipped_steps`, ...)."""
        return dict(self._state)

    def reset_window(self) -> None:
        """Zero the window accumulators (call at an epoch's start; no host sync)."""
        for key in (
            "window_norm_sum",
            "window_norm_max",
            "window_steps",
            "window_clipped",
            "step_log_count",
        ):
            self._state[key].assign(ops.zeros((), self._state[key].dtype))

    def read_step_log(self) -> list[tuple[int, float, float, float, int]]:
        """The window's steps as (global step, pre-clip, post-clip, threshold, event).

        One host read. `event` is 0 for an ordinary step, 1 for a spike, 2 for a
        non-finite gradient.

        Global steps count every update the guard saw, skipped ones included, so
        they continue across epochs and resumed runs.
        """
        count = int(ops.convert_to_numpy(self._state["step_log_count"].value))
        rows = ops.convert_to_numpy(self._state["step_log"].value)
        total = self.updates_seen
        kept = min(count, self.step_log_size)
        order = [(count - kept + i) % self.step_log_size for i in range(kept)]
        first = total - kept
        return [
            (first + i, *map(float, rows[slot][:3]), int(rows[slot][3]))
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

    # -- the guarded step, as a pure function of the state ------------------------------

    def _clip(self, state: dict, grads: list, weights: Sequence, pre_clip_norm):
        """Returns (clipped gradients, threshold, mode-specific state updates)."""
        inf = ops.convert_to_tensor(float("inf"), "float32")
        if self.mode == "value":
            return clipping.clip_by_value(grads, self.clip_value), inf, {}
        if self.mode == "norm":
            return clipping.clip_by_norm(grads, self.clip_norm), inf, {}
        if self.mode == "global_norm":
            bound = ops.convert_to_tensor(self.clip_norm, "float32")
            return clipping.scale_to_norm(grads, pre_clip_norm, bound), bound, {}
        if self.mode == "agc":
            clipped = clipping.adaptive_clip(grads, weights, self.agc_lambda, self._agc_excluded)
            return clipped, inf, {}
        if self.mode == "autoclip":
            old = AutoClipState(state["autoclip_history"], state["autoclip_count"])
            bound, new = clipping.autoclip_threshold(old, pre_clip_norm, self.autoclip_percentile)
            updates = {"autoclip_history": new.history, "autoclip_count": new.count}
        elif self.mode == "zscore":
            old = ZScoreState(state["zscore_count"], state["zscore_mean"], state["zscore_var"])
            bound, new = clipping.zscore_threshold(
                old, pre_clip_norm, self.zscore_threshold, self.zscore_alpha, self.zscore_warmup
            )
            updates = {"zscore_count": new.count, "zscore_mean": new.mean, "zscore_var": new.var}
        else:
            return list(grads), inf, {}
        return clipping.scale_to_norm(grads, pre_clip_norm, bound), bound, updates

    def guard_step(self, state: dict, grads: Sequence, weights: Sequence, step):
        """One step of the guard on plain tensors.

        Args:
            state: current values of `stats` (and the mode's own state) by name.
            grads: the (already all-reduced) gradients.
            weights: the current values of the trainable variables.
            step: how many updates the guard saw before this one (skipped ones too).

        Returns:
            `(clipped_grads, apply_update, new_state)`: apply_update is a boolean
            scalar, False when this update must be skipped.
        """
        grads = list(grads)
        pre = clipping.global_norm(grads)
        finite = ops.logical_and(clipping.all_finite(grads), ops.isfinite(pre))
        clipped, threshold, mode_updates = self._clip(state, grads, weights, pre)
        post = clipping.global_norm(clipped)

        new = dict(state)
        for key, value in mode_updates.items():  # a NaN norm must not poison the history
            new[key] = ops.where(finite, value, state[key])
        as_int = lambda flag: ops.cast(flag, "int32")  # noqa: E731
        was_clipped = ops.logical_and(finite, post < pre)
        is_spike, spike_state = detection.spike_check(
            SpikeState(state["spike_history"], state["spike_count"]), pre, finite, self.spike_sigma
        )
        skip = ops.logical_or(
            ops.logical_and(ops.logical_not(finite), self.skip_nonfinite),
            ops.logical_and(is_spike, self.skip_spikes),
        )
        event = ops.where(ops.logical_not(finite), 2.0, ops.where(is_spike, 1.0, 0.0))
        consecutive = ops.where(finite, 0, state["consecutive_skips"] + 1)
        step = ops.cast(step, "int32")
        new.update(
            pre_clip_norm=pre,
            post_clip_norm=post,
            threshold=threshold,
            clipped_steps=state["clipped_steps"] + as_int(was_clipped),
            skipped_steps=state["skipped_steps"] + as_int(skip),
            consecutive_skips=consecutive,
            first_nonfinite_step=ops.where(
                ops.logical_and(ops.logical_not(finite), state["first_nonfinite_step"] < 0),
                step,
                state["first_nonfinite_step"],
            ),
            diverged=ops.maximum(
                state["diverged"],
                as_int(
                    ops.logical_or(
                        ops.logical_and(ops.logical_not(finite), not self.skip_nonfinite),
                        consecutive >= self.max_consecutive_skips,
                    )
                ),
            ),
            window_norm_sum=state["window_norm_sum"] + ops.where(finite, pre, 0.0),
            window_norm_max=ops.maximum(state["window_norm_max"], ops.where(finite, pre, 0.0)),
            window_steps=state["window_steps"] + as_int(finite),
            window_clipped=state["window_clipped"] + as_int(was_clipped),
        )
        slot = ops.mod(state["step_log_count"], self.step_log_size)
        row = ops.stack([pre, post, ops.cast(threshold, "float32"), event])
        hit = ops.expand_dims(ops.equal(ops.arange(self.step_log_size), slot), 1)
        new.update(
            step_log=ops.where(hit, ops.expand_dims(row, 0), state["step_log"]),
            spike_history=spike_state.history,
            spike_count=spike_state.count,
            spikes=state["spikes"] + as_int(is_spike),
            events=state["events"] + as_int(ops.logical_or(is_spike, ops.logical_not(finite))),
            step_log_count=state["step_log_count"] + 1,
        )
        return clipped, ops.logical_not(skip), new

    # -- applying it: stateless (JAX and others) and stateful (TensorFlow) --------------

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        if not self.built:
            raise ValueError(
                "GradientGuard must be built before stateless_apply; call "
                "optimizer.build(trainable_variables)"
            )
        n_own = len(self._variables)
        own, inner = list(optimizer_variables[:n_own]), list(optimizer_variables[n_own:])
        index = {id(v): i for i, v in enumerate(self._variables)}
        state = {key: own[index[id(var)]] for key, var in self._state.items()}
        step = index[id(self._iterations)]
        clipped, apply_update, new_state = self.guard_step(
            state, grads, trainable_variables, own[step]
        )
        new_weights, new_inner = self.inner_optimizer.stateless_apply(
            inner, clipped, trainable_variables
        )
        if self.skip_nonfinite:
            keep = lambda new, old: ops.where(apply_update, new, old)  # noqa: E731
            new_weights = [
                keep(n, o) for n, o in zip(new_weights, trainable_variables, strict=True)
            ]
            new_inner = [keep(n, o) for n, o in zip(new_inner, inner, strict=True)]
        for key, var in self._state.items():
            own[index[id(var)]] = ops.cast(new_state[key], var.dtype)
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
        """`guard_step` on the variables themselves; returns (clipped, apply_update)."""
        state = {key: var.value for key, var in self._state.items()}
        clipped, apply_update, new_state = self.guard_step(
            state, grads, [v.value for v in trainable_variables], self._iterations.value
        )
        for key, var in self._state.items():
            var.assign(ops.cast(new_state[key], var.dtype))
        self._iterations.assign_add(1)
        return clipped, apply_update

    # -- serialisation ------------------------------------------------------------------

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "mode": self.mode,
            "clip_norm": self.clip_norm,
            "clip_value": self.clip_value,
            "agc_lambda": self.agc_lambda,
            "agc_exclude_last": self.agc_exclude_last,
            "autoclip_percentile": self.autoclip_percentile,
            "autoclip_window": self.autoclip_window,
            "zscore_threshold": self.zscore_threshold,
            "zscore_alpha": self.zscore_alpha,
            "zscore_warmup": self.zscore_warmup,
            "skip_nonfinite": self.skip_nonfinite,
            "max_consecutive_skips": self.max_consecutive_skips,
            "step_log_size": self.step_log_size,
            "spike_window": self.spike_window,
            "spike_sigma": self.spike_sigma,
            "skip_spikes": self.skip_spikes,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        return cls(inner, **config)
