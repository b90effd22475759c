"""Surviving an explosion: stop cleanly, or roll back to a snapshot and back off.

`GradientGuard` detects spikes and non-finite steps on the device and (with
`skip_spikes`/`skip_nonfinite`) skips their updates. This callback reacts to
its `events` counter: `stop` ends the run as diverged; `rollback` restores the
weights and the inner optimizer's state from a snapshot, multiplies the
learning rate by `lr_backoff`, and goes on with the batches after the
offending ones (they are not replayed), at most `max_rollbacks` times, then
stops. That is PaLM's recipe (restart ~100 steps earlier, skip the batches
around the spike) inside one `fit`.

Snapshots are taken in memory every `snapshot_every` updates; the last `keep`
of them are kept, so a rollback can reach up to `keep * snapshot_every`
updates back. An event that comes again before the next snapshot was taken
after a rollback means the snapshot rolled back to was already doomed: it is
dropped and the next rollback goes to the one before it. A collapse back to
chance (the guard's `collapse_loss` check) is found `collapse_window` steps after
it began, so it rolls back to the newest snapshot taken before those steps (the
newer ones are dropped: they hold the collapsed run). All of them travel with the
resume state (`state()` and `snapshot_arrays()`).
"""

from __future__ import annotations

import keras
import numpy as np

from gradguard.settings import EXPLOSION_POLICIES
from gradguard.training.callbacks import read_mid_epoch


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
        keep: snapshots kept, newest last (rollback); each holds a copy of the
            weights and the inner optimizer's slots. 1 keeps only the newest.

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
        self,
        guard,
        policy="rollback",
        snapshot_every=50,
        lr_backoff=0.5,
        max_rollbacks=3,
        keep=3,
    ):
        super().__init__()
        if policy not in EXPLOSION_POLICIES:
            raise ValueError(
                f"ExplosionRecovery policy={policy!r}; expected one of {EXPLOSION_POLICIES}"
            )
        if keep < 1:
            raise ValueError(f"ExplosionRecovery keep={keep!r}; expected an integer >= 1")
        self.guard, self.policy = guard, policy
        self.snapshot_every, self.lr_backoff = snapshot_every, lr_backoff
        self.max_rollbacks, self.keep = max_rollbacks, keep
        self.stopped, self.rollbacks, self.events = False, 0, []
        self._events_seen = 0
        self._collapses_seen = 0
        self._snapshots: list[tuple] = []  # (step, weights, slots), oldest first
        self._last_snapshot_at = None  # step of the last snapshot or rollback
        self._doomed = False  # rolled back, and no snapshot taken since

    # -- persisted with the resume state ---------------------------------------------

    def state(self) -> dict:
        """What to persist beside `snapshot_arrays()` so a resumed run goes on (JSON-able)."""
        steps = [snapshot[0] for snapshot in self._snapshots]
        return {
            "rollbacks": self.rollbacks,
            "events": self.events,
            "snapshot_steps": steps,  # oldest first
            "last_snapshot_at": self._last_snapshot_at,
            "doomed": self._doomed,
        }

    def snapshot_arrays(self) -> dict:
        """The snapshots as named arrays; {} if none.

        The newest is `weight_000`..., `slot_000`...; the one j places older is
        `older{j}_weight_000`..., `older{j}_slot_000`....
        """
        arrays = {}
        for back, (_, weights, slots) in enumerate(reversed(self._snapshots)):
            prefix = f"older{back}_" if back else ""
            arrays.update({f"{prefix}weight_{i:03d}": w for i, w in enumerate(weights)})
            arrays.update({f"{prefix}slot_{i:03d}": v for i, v in enumerate(slots)})
        return arrays

    def restore(self, state: dict, arrays: dict) -> None:
        """Go on from `state()` and `snapshot_arrays()` of an interrupted run."""
        self.rollbacks = state["rollbacks"]
        self.events = list(state["events"])
        steps = state["snapshot_steps"]
        if not arrays or not steps:
            return

        def pick(prefix):
            keys = [k for k in arrays if k.startswith(prefix)]
            return [arrays[k] for k in sorted(keys, key=lambda k: int(k[len(prefix) :]))]

        snapshots = []
        for back, step in enumerate(reversed(steps)):  # newest first, as named
            prefix = f"older{back}_" if back else ""
            snapshots.insert(0, (step, pick(f"{prefix}weight_"), pick(f"{prefix}slot_")))
        self._snapshots = snapshots[-self.keep :]
        self._last_snapshot_at = state["last_snapshot_at"]
        self._doomed = state["doomed"]

    # -- during training -------------------------------------------------------------

    def _take_snapshot(self, step: int) -> None:
        inner = self.guard.inner_optimizer
        slots = [np.array(keras.ops.convert_to_numpy(v.value)) for v in inner.variables]
        self._snapshots = [*self._snapshots, (step, self.model.get_weights(), slots)]
        self._snapshots = self._snapshots[-self.keep :]
        self._last_snapshot_at, self._doomed = step, False

    def on_train_begin(self, logs=None):
        if self.policy not in ("stop", "rollback"):
            return
        if not self.guard.built:
            # TensorFlow without a strategy builds the optimizer when it traces the first
            # step; the first snapshot needs its slots (Adam's moments) now.
            with keras.name_scope(self.guard.name, caller=self.guard):
                self.guard.build(self.model.trainable_variables)
        self._events_seen = read_mid_epoch(None, self.guard, "events")
        self._collapses_seen = read_mid_epoch(None, self.guard, "collapses")
        if self.policy == "rollback" and not self._snapshots:  # else: restored
            self._take_snapshot(self.guard.updates_seen)

    def on_train_batch_end(self, batch, logs=None):
        if self.policy not in ("stop", "rollback") or self.stopped:
            return
        events = read_mid_epoch(self.model, self.guard, "events")
        step = self.guard.updates_seen
        if events > self._events_seen:
            self._events_seen = events
            # Only on an event: was it a collapse (one more transfer)?
            collapses = read_mid_epoch(None, self.guard, "collapses")
            collapse, self._collapses_seen = collapses > self._collapses_seen, collapses
            if self.policy == "stop" or self.rollbacks >= self.max_rollbacks:
                self.stopped = True
                self.model.stop_training = True
                self.events.append({"step": step, "kind": "stop"})
            else:
                self._roll_back(step, collapse)
        elif self.policy == "rollback" and step - self._last_snapshot_at >= self.snapshot_every:
            self._take_snapshot(step)

    def _roll_back(self, step: int, collapse: bool = False) -> None:
        if self._doomed and len(self._snapshots) > 1:
            # An event again before a new snapshot: the last one rolled back to leads
            # here too. Drop it and go one further back.
            self._snapshots = self._snapshots[:-1]
        if collapse:  # the collapse began collapse_window steps ago: back to before it
            began = step - self.guard.config.collapse_window
            while len(self._snapshots) > 1 and self._snapshots[-1][0] > began:
                self._snapshots = self._snapshots[:-1]
        inner = self.guard.inner_optimizer
        rate = float(keras.ops.convert_to_numpy(inner.learning_rate)) * self.lr_backoff
        to_step, weights, slots = self._snapshots[-1]
        self.model.set_weights(weights)
        for variable, value in zip(inner.variables, slots, strict=True):
            variable.assign(value)
        inner.learning_rate.assign(rate)
        self.rollbacks += 1
        event = {"step": step, "kind": "rollback", "to_step": to_step, "learning_rate": rate}
        self.events.append({**event, "after": "collapse"} if collapse else event)
        # The next snapshot comes snapshot_every updates from here; until then a new
        # event sends the run further back.
        self._last_snapshot_at, self._doomed = step, True
