"""train: fit the guarded CNN, streaming the training split and its augmented copies.

Writes the best model, DVCLive curves and the resume state. With `train.distribute:
multihost` it is one process of a JAX cluster (the JAX_* variables), or, started with
`GRADGUARD_LOCAL_WORKERS=N` (`python -m stages.launch --workers N`) and no cluster, the
supervisor of N local processes; process 0 alone writes the outputs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from gradguard import multihost
from gradguard.io import write_json
from stages import common

EVENT_KINDS = {1: "spike", 2: "nonfinite", 3: "loss_spike"}
# Step-log fields drawn per step (file name in <live>/plots/steps/ -> StepRow field).
STEP_PLOTS = {
    "pre_clip_norm": "pre_clip_norm",
    "post_clip_norm": "post_clip_norm",
    "clip_threshold": "threshold",
    "batch_loss": "batch_loss",
}


def describe_event(row) -> dict:
    """A spike or non-finite step, with the layers it started in."""
    event = {"step": row.step, "kind": EVENT_KINDS[row.event], "grad_norm": row.pre_clip_norm}
    if math.isfinite(row.batch_loss):
        event["batch_loss"] = row.batch_loss
    bad = [name for name, norm in row.layer_norms.items() if not math.isfinite(norm)]
    if bad:
        event["nonfinite_layers"] = bad
    else:
        largest = sorted(row.layer_norms.items(), key=lambda item: -item[1])[:3]
        event["largest_layers"] = dict(largest)
    return event


def append_step_log(live_dir: str, rows) -> None:
    """Append per-step norms to <live>/plots/steps/ (one TSV per line of the DVC plot)."""
    folder = Path(live_dir) / "plots" / "steps"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "events.jsonl", "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(describe_event(row)) + "\n" for row in rows if row.event)
    for name, field in STEP_PLOTS.items():
        file = folder / f"{name}.tsv"
        new = not file.exists()
        with open(file, "a", encoding="utf-8") as handle:
            if new:
                handle.write(f"step\t{name}\n")
            # Vega cannot draw Inf or NaN: "no bound", non-finite steps, unrecorded losses.
            values = ((row.step, getattr(row, field)) for row in rows)
            handle.writelines(f"{step}\t{v:.6g}\n" for step, v in values if math.isfinite(v))


def step_events(live_dir: str) -> list[dict]:
    """The spikes and non-finite steps `append_step_log` recorded."""
    file = Path(live_dir) / "plots" / "steps" / "events.jsonl"
    if not file.is_file():
        return []
    return [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]


# Set by `python -m stages.launch --workers N`: this host runs N processes of the stage.
LOCAL_WORKERS = "GRADGUARD_LOCAL_WORKERS"


def main(args, params) -> None:
    """Train; with `train.distribute: multihost`, as one process of a cluster."""
    if params.train.distribute != "multihost":
        run_training(args, params)
        return
    multihost.use_jax_backend()  # before Keras is imported
    multihost.exit_with_parent()  # a local process ends with the one that started it
    local = os.environ.get(LOCAL_WORKERS, "1")
    if not local.isdigit() or int(local) < 1:
        raise multihost.ClusterError(f"{LOCAL_WORKERS}={local!r}: expected a process count >= 1")
    in_cluster = any(os.environ.get(name) for name in multihost.ENV)
    if not in_cluster and int(local) > 1:
        supervise(args, int(local))
        return
    cluster = multihost.cluster_from_env() if in_cluster else multihost.ALONE
    with tempfile.TemporaryDirectory(prefix="gradguard-train-") as scratch:
        if not cluster.chief:  # the chief alone writes the outputs
            args.model = str(Path(scratch) / "best.keras")
            args.live = str(Path(scratch) / "live")
            args.resume_dir = str(Path(scratch) / "resume")
        run_training(args, params, cluster)
        multihost.shutdown(cluster)


def supervise(args, processes: int) -> None:
    """Run the stage as `processes` local processes; one that dies stops them all.

    Raises:
        ClusterError: which process ended, how, and where the run resumes from.
    """
    command = [sys.executable, "-m", "stages.train", *args.argv]
    with tempfile.TemporaryDirectory(prefix="gradguard-launch-") as logs:
        local = multihost.start_local_cluster(command, processes, logs)
        failures = local.wait()
        if not failures:
            return
        process, status = failures[0]
        cause = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        tail = local.last_lines(process)
        raise multihost.ClusterError(
            f"train: process {process} of {processes} ended ({cause}) and the others were "
            f"stopped; run the stage again to resume after the last epoch saved in "
            f"{args.resume_dir}" + (f". Its last lines:\n{tail}" if tail else "")
        )


def run_training(args, params, cluster: multihost.Cluster = multihost.ALONE) -> None:
    distributed = params.train.distribute == "multihost"
    if distributed:
        multihost.initialize(cluster)
    chief, processes = cluster.chief, cluster.processes
    from dvclive import Live

    from gradguard.callbacks import EpochMetricsLogger, Progress
    from gradguard.models import canonicalise_model_file, save_model
    from gradguard.resume import ResumeState
    from gradguard.shards import read_index
    from gradguard.stream import ShardSequence
    from gradguard.training import configure_determinism, fit, run_fingerprint

    configure_determinism(params.seed)
    train_sets = [Path(args.prepared) / "train", Path(args.augmented)]
    val_set = Path(args.prepared) / "val"
    knobs = params.train
    share = {"full_batches": distributed, "processes": processes, "process": cluster.process}
    train = ShardSequence(
        train_sets, knobs.batch_size, seed=params.seed, buffer=knobs.shuffle_buffer, **share
    )
    val = ShardSequence(val_set, knobs.batch_size, **share)
    data_id = "".join(read_index(folder)["fingerprint"] for folder in (*train_sets, val_set))
    resume = ResumeState(
        args.resume_dir, run_fingerprint(params, np.frombuffer(data_id.encode(), np.uint8))
    )
    if processes > 1:  # every process resumes from the chief's state
        multihost.broadcast_folder(resume.folder, source=chief)
    saved = resume.restore(args.model, args.live)
    resumed = saved is not None
    if resumed and chief:
        print(f"train: resuming after epoch {saved['epoch'] + 1} from {resume.folder}")
    elif not resumed:  # DVCLive starts its own files afresh; the step log must too
        shutil.rmtree(Path(args.live) / "plots" / "steps", ignore_errors=True)
    if chief and processes > 1:
        print(f"train: process 0 of {processes}, coordinator {cluster.coordinator}", flush=True)
    with Live(dir=args.live, dvcyaml=False, save_dvc_exp=False, resume=resumed) as live:
        progress = [Progress(len(train))] if chief else []
        model, result = fit(
            params,
            train,
            val,
            checkpoint=args.model,
            resume=resume,
            live_dir=args.live,
            extra_callbacks=[EpochMetricsLogger(live), *progress],
            on_step_log=lambda rows: append_step_log(args.live, rows),
            verbose=2 if chief else 0,
        )
        if processes > 1:  # replicated state must be the same everywhere
            digest = [float(np.sum(np.asarray(w, np.float64))) for w in model.weights]
            multihost.check_agreement(digest, "weights")
        if Path(args.model).is_file():  # ModelCheckpoint's: dated, so make it reproducible
            canonicalise_model_file(args.model)
        else:  # no finite val_loss ever: keep what there is
            save_model(model, args.model)
        summary = dataclasses.asdict(result)
        summary.pop("wall_time_s")  # hashed by DVC: no wall-clock time in it (printed below)
        events = step_events(args.live) + summary.pop("recovery_events")
        layer_epochs, layers = summary.pop("layer_epochs"), summary.pop("layers")
        summary["largest_grad_layer"] = layers[0]["layer"] if layers else None
        # The run summary alone: the last epoch's train/val values (in the plots) are not the
        # kept model's (the best epoch's), and as columns they crowd `dvc exp show`.
        # DVCLive's "step" stays: it marks the last logged step.
        live.summary = {"run": summary} | {k: v for k, v in live.summary.items() if k == "step"}
    live_dir = Path(args.live)
    write_json(live_dir / "events.json", {"events": sorted(events, key=lambda e: e["step"])})
    write_json(live_dir / "layers.json", {"epochs": layer_epochs})
    write_json(live_dir / "plots" / "layers.json", layers)
    resume.clear()
    if not chief:
        return
    verdict = f"DIVERGED at step {result.diverged_at_step}" if result.diverged else "finished"
    print(
        f"train: {verdict} after {result.epochs} epochs in {result.wall_time_s:.1f}s; "
        f"best val_loss {result.best_val_loss}; max grad norm {result.max_grad_norm:.3g}"
    )


def main_cli(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    cli = common.parser(__doc__)
    cli.add_argument("--prepared", required=True, help="prepare's output folder")
    cli.add_argument("--augmented", required=True, help="augment's output folder")
    cli.add_argument("--model", required=True, help="best checkpoint to write")
    cli.add_argument("--live", required=True, help="DVCLive folder")
    cli.add_argument(
        "--resume-dir",
        required=True,
        help="resume state of an interrupted run (ignored by git and DVC)",
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    cli.set_defaults(argv=argv)  # a launcher of local workers starts them with the same
    return common.run(main, cli, argv)


if __name__ == "__main__":
    sys.exit(main_cli())
