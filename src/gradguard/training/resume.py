"""Resume an interrupted training run from its last completed epoch.

Like `keras.callbacks.BackupAndRestore`, but the state also carries what the
other callbacks need to go on as if nothing happened: the best checkpoint and
its `val_loss`, early stopping's counter, and the DVCLive folder (so the
metrics' step continues). The state sits in `<root>/<fingerprint>/`, where the
fingerprint covers the params and data it belongs to: a run with other params
never resumes it. It is removed when training completes.

This module alone reads and writes that folder: `Snapshot` is its one typed
record, `ResumeState.restore` loads it once, `SaveResumeState` saves it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from gradguard.io import atomic_path, fingerprint, write_json
from gradguard.params import Params

_STATE = "state.json"
_ARRAYS = "arrays.npz"
_MODEL = "model.keras"
_BEST = "best.keras"
_LIVE = "live"


def run_fingerprint(params: Params, *arrays: np.ndarray) -> str:
    """Identifies a training run: the params it reads and the data it sees."""
    train_params = dataclasses.asdict(params)
    for section in ("data", "augment", "evaluate"):
        train_params.pop(section)
    blob = json.dumps(train_params, sort_keys=True).encode()
    return fingerprint(np.frombuffer(blob, np.uint8), *arrays)


@dataclasses.dataclass
class Snapshot:
    """What a run keeps at an epoch's end to go on after a kill.

    The JSON-able fields go to `state.json`, `arrays` to one `.npz`; on
    restore, `model` is the model as of that epoch (optimizer state and the
    seed generators' states included) and `best_weights` the best checkpoint's.
    """

    epoch: int  # 0-based, the last completed one
    checkpoint_best: float | None  # ModelCheckpoint's best val_loss
    early_stopping_wait: int
    early_stopping_best: float | None
    best_epoch: int  # 0-based, EarlyStopping's
    initial_weight_norm: float  # of the trainable weights before training
    gradient_stats: dict  # GradientStatsLogger.state()
    recovery: dict  # ExplosionRecovery.state()
    arrays: dict = dataclasses.field(default_factory=dict)  # e.g. rollback snapshots
    model: keras.Model | None = None
    best_weights: list | None = None

    _FILES = ("arrays", "model", "best_weights")  # not in state.json

    def __post_init__(self):  # callbacks start from inf: JSON has no such number
        self.checkpoint_best = _finite_or_none(self.checkpoint_best)
        self.early_stopping_best = _finite_or_none(self.early_stopping_best)

    def state(self) -> dict:
        """The fields `state.json` holds."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name not in self._FILES
        }


class ResumeState:
    """The resume folder of one run.

    Args:
        root: folder that holds resume states (ignored by git and DVC).
        fingerprint: identifies the params and data of this run.
    """

    def __init__(self, root: str | Path, fingerprint: str):
        self.root = Path(root)
        self.folder = self.root / fingerprint

    def restore(self, checkpoint: str | Path, live_dir: str | Path) -> Snapshot | None:
        """Put the saved checkpoint and DVCLive folder back; return the `Snapshot` or None.

        Load inside the training context (distribution scope, dtype policy) the
        model will train in.
        """
        from gradguard.training.models import load_model

        state_file = self.folder / _STATE
        if not state_file.is_file():
            return None
        snapshot = Snapshot(**json.loads(state_file.read_text(encoding="utf-8")))
        if (self.folder / _BEST).is_file():
            Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.folder / _BEST, checkpoint)
            snapshot.best_weights = load_model(checkpoint).get_weights()
        if (self.folder / _LIVE).is_dir():
            shutil.rmtree(live_dir, ignore_errors=True)
            shutil.copytree(self.folder / _LIVE, live_dir)
        if (self.folder / _ARRAYS).is_file():
            with np.load(self.folder / _ARRAYS, allow_pickle=False) as saved:
                snapshot.arrays = {key: saved[key] for key in saved.files}
        snapshot.model = load_model(self.folder / _MODEL)
        restore_random_states(snapshot.model, snapshot.arrays)
        return snapshot

    def clear(self) -> None:
        """Delete this run's resume state (training completed)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.root.is_dir() and not any(self.root.iterdir()):
            self.root.rmdir()


class SaveResumeState(keras.callbacks.Callback):
    """Saves the resume state at every epoch's end; place it after the callbacks it saves.

    The folder is rebuilt beside the old one and swapped in at once, so a run
    killed while saving resumes from the previous epoch, never from a mix.

    Args:
        state: where to save.
        checkpoint: the best-model file `ModelCheckpoint` writes.
        live_dir: the DVCLive folder.
        snapshot: returns the epoch's `Snapshot` (its `model` is this callback's model).
    """

    def __init__(self, state, checkpoint, live_dir, snapshot: Callable[[int], Snapshot]):
        super().__init__()
        self.state = state
        self.checkpoint, self.live_dir = Path(checkpoint), Path(live_dir)
        self.snapshot = snapshot

    def on_epoch_end(self, epoch, logs=None):
        snapshot = self.snapshot(epoch)
        with atomic_path(self.state.folder) as folder:
            folder.mkdir()
            self.model.save(folder / _MODEL)
            if self.checkpoint.is_file():
                shutil.copyfile(self.checkpoint, folder / _BEST)
            if self.live_dir.is_dir():
                shutil.copytree(self.live_dir, folder / _LIVE)
            arrays = {**snapshot.arrays, **random_states(self.model)}
            if arrays:
                np.savez(folder / _ARRAYS, **arrays)
            write_json(folder / _STATE, snapshot.state())


RNG_PREFIX = "rng_"  # the arrays of the model's random states (dropout's seed generators)


def random_states(model) -> dict[str, np.ndarray]:
    """The model's variables that are not weights: the states of its seed generators.

    `model.save` keeps the weights but not these, so a model loaded from a resume
    state would draw epoch 1's dropout masks again; kept with the resume state's
    arrays, a resumed run draws what the uninterrupted one would.
    """
    weights = {id(w) for w in model.weights}
    others = [v for v in model.variables if id(v) not in weights]
    return {
        f"{RNG_PREFIX}{i}": np.asarray(keras.ops.convert_to_numpy(v)) for i, v in enumerate(others)
    }


def restore_random_states(model, arrays: dict) -> None:
    """Put back what `random_states` saved (nothing for a state saved without them)."""
    weights = {id(w) for w in model.weights}
    others = [v for v in model.variables if id(v) not in weights]
    for i, variable in enumerate(others):
        value = arrays.get(f"{RNG_PREFIX}{i}")
        if value is not None:
            variable.assign(value)


def _finite_or_none(value):
    return float(value) if value is not None and math.isfinite(float(value)) else None
