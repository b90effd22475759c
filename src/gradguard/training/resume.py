"""Resume an interrupted training run from its last completed epoch.

Like `keras.callbacks.BackupAndRestore`, but the state also carries what the
other callbacks need to go on as if nothing happened: the best checkpoint and
its `val_loss`, early stopping's counter, and the DVCLive folder (so the
metrics' step continues). The state sits in `<root>/<fingerprint>/`, where the
fingerprint covers the params and data it belongs to: a run with other params
never resumes it. It is removed when training completes.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import keras
import numpy as np

from gradguard.io import atomic_path, write_json

_STATE = "state.json"
_ARRAYS = "arrays.npz"


class ResumeState:
    """The resume folder of one run.

    Args:
        root: folder that holds resume states (ignored by git and DVC).
        fingerprint: identifies the params and data of this run.
    """

    def __init__(self, root: str | Path, fingerprint: str):
        self.root = Path(root)
        self.folder = self.root / fingerprint

    def restore(self, checkpoint: str | Path, live_dir: str | Path) -> dict | None:
        """Put the saved checkpoint and DVCLive folder back; return the saved state or None."""
        state_file = self.folder / _STATE
        if not state_file.is_file():
            return None
        state = json.loads(state_file.read_text(encoding="utf-8"))
        if (self.folder / "best.keras").is_file():
            Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.folder / "best.keras", checkpoint)
        if (self.folder / "live").is_dir():
            shutil.rmtree(live_dir, ignore_errors=True)
            shutil.copytree(self.folder / "live", live_dir)
        return state

    def load_arrays(self) -> dict:
        """The arrays saved with the state (e.g. a rollback snapshot); {} if none."""
        path = self.folder / _ARRAYS
        if not path.is_file():
            return {}
        with np.load(path, allow_pickle=False) as saved:
            return {key: saved[key] for key in saved.files}

    def load_model(self) -> keras.Model:
        """The model (with optimizer state) as of the last completed epoch."""
        from gradguard.training.models import load_model

        return load_model(self.folder / "model.keras")

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
        checkpointer: the `ModelCheckpoint`, for its best value.
        early_stopping: the `EarlyStopping`, for its counter, best value and epoch.
        extras: returns more JSON-able state to keep (e.g. running statistics).
        arrays: returns named arrays to keep (e.g. a rollback snapshot), read back
            with `ResumeState.load_arrays`.
    """

    def __init__(
        self, state, checkpoint, live_dir, checkpointer, early_stopping, extras=None, arrays=None
    ):
        super().__init__()
        self.state = state
        self.checkpoint, self.live_dir = Path(checkpoint), Path(live_dir)
        self.checkpointer, self.early_stopping = checkpointer, early_stopping
        self.extras, self.arrays = extras or dict, arrays or dict

    def on_epoch_end(self, epoch, logs=None):
        with atomic_path(self.state.folder) as folder:
            folder.mkdir()
            self.model.save(folder / "model.keras")
            if self.checkpoint.is_file():
                shutil.copyfile(self.checkpoint, folder / "best.keras")
            if self.live_dir.is_dir():
                shutil.copytree(self.live_dir, folder / "live")
            arrays = {**self.arrays(), **random_states(self.model)}
            if arrays:
                np.savez(folder / _ARRAYS, **arrays)
            stopping = self.early_stopping
            write_json(
                folder / _STATE,
                {
                    "epoch": epoch,
                    "checkpoint_best": _finite_or_none(self.checkpointer.best),
                    "early_stopping_wait": stopping.wait,
                    "early_stopping_best": _finite_or_none(stopping.best),
                    "best_epoch": stopping.best_epoch,
                    **self.extras(),
                },
            )


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


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` on a quantity to minimise that can start from a saved state.

    Its best value starts at +inf rather than None, so a NaN first epoch (a
    diverged run) never counts as an improvement, as in `ModelCheckpoint` with
    `initial_value_threshold=inf`.
    """

    def __init__(
        self,
        *args,
        initial_wait=0,
        initial_best=None,
        initial_best_epoch=None,
        initial_weights=None,
        **kwargs,
    ):
        super().__init__(*args, mode="min", **kwargs)
        self._initial = (initial_wait, initial_best, initial_best_epoch, initial_weights)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.wait, best, best_epoch, weights = self._initial
        self.best = math.inf if best is None else best
        self.best_epoch = best_epoch or 0
        self.best_weights = weights
