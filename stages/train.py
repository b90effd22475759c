"""train: fit the guarded CNN, streaming the training split and its augmented copies.

Writes the best model, DVCLive curves and the resume state. With `train.distribute:
multihost` it is one process of a JAX cluster (the JAX_* variables), or, started with
`GRADGUARD_LOCAL_WORKERS=N` (`python -m stages.launch --workers N`) and no cluster, the
supervisor of N local processes; process 0 alone writes the outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gradguard.training.run import RunFiles, train
from stages import common


def main(args, params) -> None:
    files = RunFiles(
        Path(args.prepared),
        Path(args.augmented),
        Path(args.model),
        Path(args.live),
        Path(args.resume_dir),
    )
    # A supervisor of local workers starts them with this same command line.
    result = train(files, params, [sys.executable, "-m", "stages.train", *args.argv])
    if result is None:  # another process's, or the supervisor's: process 0 reports
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
    cli.set_defaults(argv=argv)
    return common.run(main, cli, argv)


if __name__ == "__main__":
    sys.exit(main_cli())
