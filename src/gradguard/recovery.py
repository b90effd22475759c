"""Surviving an explosion: stop cleanly, or roll back to a snapshot and back off.

`GradientGuard` detects spikes and non-finite steps on the device and (with
`skip_spikes`/`skip_nonfinite`) skips their updates. This callback reacts to
its `events` counter: `stop` ends the run as diverged; `rollback` restores the
weights and the inner optimizer's state from the last snapshot (taken in memory
every `snapshot_every` updates, and handed to the resume state with `state()` and
`snapshot_arrays()`), multiplies the learning rate by `lr_backoff`,
and goes on with the batches after the offending ones (they are not replayed),
at most `max_rollbacks` times, then stops. That is PaLM's recipe (restart ~100
steps earlier, skip the batches around the spike) inside one `fit`.
"""

from __future__ import annotations

import keras
import numpy as np

from gradguard.callbacks import read_mid_epoch

POLICIES = ("none", "stop", "skip", "rollback")


class ExplosionRecovery(keras.callbacks.Callback):
    """React to a guard's spikes and non-finite steps.

    With policy "stop" or "rollback" it reads two scalars from the device after
    every batch (the guard's event and update counts); "none" and "skip" cost
    nothing here (the guard itself skips).

    Args:
        guard: the `GradientGuard` the model trains with.
        policy: "none", "stop", "skip" or "rollback".
        snapshot_every: updates between snapshots (rollback).
        lr_backoff: factor on the learning rate at each rollback, in (0, 1].
        max_rollbacks: rollbacks allowed before the run stops as diverged.

    Attributes:
        stopped: the run was ended as diverged by this callback.
        rollbacks: how many rollbacks happened.
        events: one dict per reaction: step, kind ("stop" or "rollback"),
            the step rolled back to, and the new learning rate.

    References:
        Chowdhery et al. 2022, "PaLM: Scaling Language Modeling with Pathways",
        section 5.1 (training instability).
    """

    def __init__(
        self, guard, policy="rollback", snapshot_every=50, lr_backoff=0.5, max_rollbacks=3
    ):
        super().__init__()
        if policy not in POLICIES:
            raise ValueError(f"ExplosionRecovery policy={policy!r}; expected one of {POLICIES}")
        self.guard, self.policy = guard, policy
        self.snapshot_every, self.lr_backoff = snapshot_every, lr_backoff
        self.max_rollbacks = max_rollbacks
        self.stopped, self.rollbacks, self.events = False, 0, []
        self._events_seen = 0
        self._snapshot = None

    def state(self) -> dict:
        """What to persist beside `snapshot_arrays()` so a resumed run goes on (JSON-able)."""
        step = self._snapshot[0] if self._snapshot else None
        return {"rollbacks": self.rollbacks, "events": self.events, "snapshot_step": step}

    def snapshot_arrays(self) -> dict:
        """The last snapshot as named arrays (`weight_000`..., `slot_000`...); {} if none."""
        if self._snapshot is None:
            return {}
        _, weights, slots = self._snapshot
        return {
            **{f"weight_{i:03d}": w for i, w in enumerate(weights)},
            **{f"slot_{i:03d}": v for i, v in enumerate(slots)},
        }

    def restore(self, state: dict, arrays: dict) -> None:
        """Go on from `state()` and `snapshot_arrays()` of an interrupted run."""
        self.rollbacks = state.get("rollbacks", 0)
        self.events = list(state.get("events", []))
        if arrays and state.get("snapshot_step") is not None:

            def pick(prefix):
                keys = [k for k in arrays if k.startswith(prefix)]
                return [arrays[k] for k in sorted(keys, key=lambda k: int(k[len(prefix) :]))]

            self._snapshot = (state["snapshot_step"], pick("weight_"), pick("slot_"))

    def _take_snapshot(self, step: int) -> None:
        inner = self.guard.inner_optimizer
        self._snapshot = (
            step,
            self.model.get_weights(),
            [np.array(keras.ops.convert_to_numpy(v.value)) for v in inner.variables],
        )

    def on_train_begin(self, logs=None):
        if self.policy not in ("stop", "rollback"):
            return
        if not self.guard.built:
            # TensorFlow without a strategy builds the optimizer when it traces the first
            # step; the first snapshot needs its slots (Adam's moments) now.
            with keras.name_scope(self.guard.name, caller=self.guard):
                self.guard.build(self.model.trainable_variables)
        self._events_seen = read_mid_epoch(None, self.guard, "events")
        if self.policy == "rollback" and self._snapshot is None:  # else: restored
            self._take_snapshot(self.guard.updates_seen)

    def on_train_batch_end(self, batch, logs=None):
        if self.policy not in ("stop", "rollback") or self.stopped:
            return
        events = read_mid_epoch(self.model, self.guard, "events")
        step = self.guard.updates_seen
        if events > self._events_seen:
            self._events_seen = events
            if self.policy == "stop" or self.rollbacks >= self.max_rollbacks:
                self.stopped = True
                self.model.stop_training = True
                self.events.append({"step": step, "kind": "stop"})
            else:
                self._roll_back(step)
        elif self.policy == "rollback" and step - self._snapshot[0] >= self.snapshot_every:
            self._take_snapshot(step)

    def _roll_back(self, step: int) -> None:
        inner = self.guard.inner_optimizer
        rate = float(keras.ops.convert_to_numpy(inner.learning_rate)) * self.lr_backoff
        to_step, weights, slots = self._snapshot
        self.model.set_weights(weights)
        for variable, value in zip(inner.variables, slots, strict=True):
            variable.assign(value)
        inner.learning_rate.assign(rate)
        self.rollbacks += 1
        self.events.append(
            {"step": step, "kind": "rollback", "to_step": to_step, "learning_rate": rate}
        )
        self._take_snapshot(step)  # the restored state is the new fallback
