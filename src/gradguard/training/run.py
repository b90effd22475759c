"""The train stage's run sequence: streams in, resume state restored, DVCLive, fit, outputs out.

`train` is what `python -m stages.train` calls: it decides which processes
train (one, one of a JAX cluster, or the supervisor of local workers, see
`gradguard.training.local`). Each process then makes one run in two functions:
`run_training` owns the files and DVCLive (restore an interrupted run of the
same params and data, write the model and the run files, clear the resume
state), `gradguard.training.fit.fit` owns Keras's fit. Process 0 alone writes
the outputs.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from gradguard.io import strict
from gradguard.params import Params
from gradguard.training import local, multihost
from gradguard.training.live import LiveFolder, NoLive


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """Where a training run reads and writes (the train stage's arguments)."""

    prepared: Path  # prepare's output: train/ and val/ shard sets
    augmented: Path  # augment's output: a shard set of augmented copies
    model: Path  # the best checkpoint to write
    live: Path  # the DVCLive folder
    resume_dir: Path  # resume states of interrupted runs (ignored by git and DVC)

    def elsewhere(self, scratch: str | Path) -> RunFiles:
        """The same inputs, outputs in `scratch` (a cluster's other processes)."""
        scratch = Path(scratch)
        return dataclasses.replace(
            self, model=scratch / "best.keras", live=scratch / "live", resume_dir=scratch / "resume"
        )


def train(
    files: RunFiles, params: Params, worker_command: Sequence[str] = (), log: Callable = print
):
    """Train as `params.train.distribute` says; returns the `TrainResult` on process 0.

    With `multihost`: one process of the cluster the JAX_* variables describe, or,
    with `GRADGUARD_LOCAL_WORKERS=N` and no cluster, the supervisor of N local
    processes of `worker_command` (then it returns None).

    Raises:
        ClusterError: a bad cluster environment, or a local process that died.
    """
    if params.train.distribute != "multihost":
        return run_training(files, params, log=log)
    multihost.use_jax_backend()  # before Keras is imported
    local.exit_with_parent()  # a local process ends with the one that started it
    workers = local.local_worker_count()
    in_cluster = any(os.environ.get(name) for name in multihost.ENV)
    if not in_cluster and workers > 1:
        local.supervise(worker_command, workers, files.resume_dir)
        return None
    cluster = multihost.cluster_from_env() if in_cluster else multihost.ALONE
    with tempfile.TemporaryDirectory(prefix="gradguard-train-") as scratch:
        writes_to = files if cluster.chief else files.elsewhere(scratch)  # the chief alone
        result = run_training(writes_to, params, cluster, log=log)
        multihost.shutdown(cluster)
    return result if cluster.chief else None


def _streams(files: RunFiles, params: Params, cluster: multihost.Cluster):
    """The training and validation `ShardSequence`s and an id of the data they hold."""
    from gradguard.data.shards import read_index
    from gradguard.data.stream import ShardSequence

    train_sets = [files.prepared / "train", files.augmented]
    val_set = files.prepared / "val"
    knobs = params.train
    per_process = {
        "full_batches": knobs.distribute == "multihost",
        "processes": cluster.processes,
        "process": cluster.process,
    }
    train = ShardSequence(
        train_sets, knobs.batch_size, seed=params.seed, buffer=knobs.shuffle_buffer, **per_process
    )
    val = ShardSequence(val_set, knobs.batch_size, **per_process)
    data_id = "".join(read_index(folder)["fingerprint"] for folder in (*train_sets, val_set))
    return train, val, (np.frombuffer(data_id.encode(), np.uint8),)


def _restore(files: RunFiles, params: Params, cluster, data_id: Sequence[np.ndarray], log):
    """The run's `ResumeState` and the `Snapshot` it resumes from (None: a fresh run)."""
    from gradguard.training.models import training_context
    from gradguard.training.resume import ResumeState, run_fingerprint

    resume = ResumeState(files.resume_dir, run_fingerprint(params, *data_id))
    if cluster.processes > 1:  # every process resumes from the chief's state
        multihost.broadcast_folder(resume.folder, source=cluster.chief)
    with training_context(params.train.distribute, params.train.mixed_precision):
        snapshot = resume.restore(files.model, files.live)  # loaded where it will train
    if snapshot is not None and cluster.chief:
        log(f"train: resuming after epoch {snapshot.epoch + 1} from {resume.folder}")
    elif snapshot is None:  # DVCLive starts its own files afresh; the step log must too
        shutil.rmtree(LiveFolder(files.live).steps, ignore_errors=True)
    return resume, snapshot


def run_training(
    files: RunFiles,
    params: Params,
    cluster: multihost.Cluster = multihost.ALONE,
    *,
    data: tuple | None = None,
    log: Callable = print,
    extra_callbacks: Sequence = (),
):
    """One process's training run: the files and DVCLive around `gradguard.training.fit.fit`.

    Resumes an interrupted run of the same params and data, fits with DVCLive
    logging, writes the model and the run files, and clears the resume state.

    Args:
        files: where the data is read and the model, the DVCLive folder and the
            resume state go.
        params: validated params.
        cluster: this process's cluster (multi-host training).
        data: `(train, val, data_id)` to train on instead of the shard sets of
            `files`: `(x, y)` arrays, and arrays that identify them (with the
            params, they name the resume state: a run on other data never resumes it).
        log: receives the run's lines (resuming, the cluster).
        extra_callbacks: more Keras callbacks, run after the epoch logger.

    Returns:
        The `gradguard.training.fit.TrainResult`.
    """
    from dvclive import Live

    from gradguard.training.callbacks import EpochMetricsLogger, Progress
    from gradguard.training.fit import compiled_model, fit
    from gradguard.training.live import append_step_log
    from gradguard.training.models import collapse_check_off, configure_determinism

    if params.train.distribute == "multihost":
        multihost.initialize(cluster)
    train_data, val_data, data_id = data or _streams(files, params, cluster)
    configure_determinism(params.seed)
    resume, snapshot = _restore(files, params, cluster, data_id, log)
    # Built and checked before DVCLive opens: a bad builder writes nothing.
    model = snapshot.model if snapshot else compiled_model(params, train_data, val_data)
    why_not = collapse_check_off(params)
    if why_not is not None and cluster.chief:
        log(f"train: no collapse check (train.collapse_window): {why_not}")
    if cluster.chief and cluster.processes > 1:
        log(f"train: process 0 of {cluster.processes}, coordinator {cluster.coordinator}")
    folder = LiveFolder(files.live)
    record = (
        Live(dir=str(files.live), dvcyaml=False, save_dvc_exp=False, resume=snapshot is not None)
        if cluster.chief
        else NoLive()
    )
    with record as live:
        streamed = not isinstance(train_data, tuple)  # arrays: Keras's own line is enough
        progress = [Progress(len(train_data))] if cluster.chief and streamed else []
        model, result = fit(
            params,
            model,
            train_data,
            val_data,
            checkpoint=files.model,
            resume=resume,
            live_dir=files.live,
            snapshot=snapshot,
            extra_callbacks=[EpochMetricsLogger(live), *progress, *extra_callbacks],
            on_step_log=lambda rows: append_step_log(folder, rows),
            verbose=2 if cluster.chief else 0,
        )
        if cluster.processes > 1:  # replicated state must be the same everywhere
            digest = [float(np.sum(np.asarray(w, np.float64))) for w in model.weights]
            multihost.check_agreement(digest, "weights")
        _keep_model(model, files.model)
        live.summary = strict(  # DVCLive's own json.dump would write Infinity
            {"run": _write_run_files(folder, result)}
            | {k: v for k, v in live.summary.items() if k == "step"}
        )
    resume.clear()
    return result


def _keep_model(model, path: Path) -> None:
    """The best checkpoint, made byte-reproducible; the last model if none was kept."""
    from gradguard.training.models import canonicalise_model_file, save_model

    if Path(path).is_file():  # ModelCheckpoint's: dated, so make it reproducible
        canonicalise_model_file(path)
    else:  # no finite val_loss ever: keep what there is
        save_model(model, path)


def _write_run_files(folder: LiveFolder, result) -> dict:
    """Write events.json and the layer files; return the run summary for DVCLive.

    The summary is the run's alone: the last epoch's train/val values (in the
    plots) are not the kept model's, and as columns they crowd `dvc exp show`.
    No wall-clock time: DVC hashes it.
    """
    from gradguard.io import write_json
    from gradguard.training.live import step_events

    summary = dataclasses.asdict(result)
    summary.pop("wall_time_s")
    events = step_events(folder) + summary.pop("recovery_events")
    layer_epochs, layers = summary.pop("layer_epochs"), summary.pop("layers")
    summary["largest_grad_layer"] = layers[0]["layer"] if layers else None
    write_json(folder.events, {"events": sorted(events, key=lambda e: e["step"])})
    write_json(folder.layers, {"epochs": layer_epochs})
    write_json(folder.layer_plot, layers)
    return summary
