"""Run a command in the cluster environment of multi-host training (`distribute: multihost`).

One host, N local processes (the train stage starts the other N-1 when DVC runs it):

    python -m stages.launch --workers 2 -- dvc repro

Several hosts, one process each: on every host, with host A's address and a port
that every host can reach on host A,

    python -m stages.launch --coordinator hostA:12355 --processes 2 --process 0 -- dvc repro
    python -m stages.launch --coordinator hostA:12355 --processes 2 --process 1

Process 0 runs the pipeline (default: `dvc repro`) and writes every output; the others
run only the train stage's command (their default), on data they hold themselves (`dvc
pull`, or `dvc repro augment`: the same bytes), and write nothing to the workspace.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import yaml

from gradguard.errors import ClusterError
from gradguard.training.local import cluster_environment


def train_command(dvc_yaml: str | os.PathLike = "dvc.yaml") -> list[str]:
    """The train stage's command, as dvc.yaml writes it."""
    path = Path(dvc_yaml)
    if not path.is_file():
        raise ClusterError(f"{path}: not found; run the launcher in the repository's root")
    stages = yaml.safe_load(path.read_text(encoding="utf-8")).get("stages", {})
    if "train" not in stages:
        raise ClusterError(f"{path}: no stage named 'train'")
    return shlex.split(stages["train"]["cmd"])


def environment(args, environ=os.environ) -> dict[str, str]:
    """`environ` with the cluster that `args` describe (and no other one)."""
    return cluster_environment(
        args.workers, args.coordinator, args.processes, args.process, environ
    )


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(
        prog="python -m stages.launch",
        description=__doc__.split("\n\n")[0],
        epilog="Everything after -- is the command (default: dvc repro; on processes other "
        "than 0, the train stage's command from dvc.yaml).",
    )
    where = cli.add_mutually_exclusive_group(required=True)
    where.add_argument("--workers", type=int, help="processes on this host")
    where.add_argument("--coordinator", help="host:port of process 0, reachable from every host")
    cli.add_argument("--processes", type=int, help="with --coordinator: processes in all")
    cli.add_argument("--process", type=int, help="with --coordinator: this host's process id")
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = cli.parse_args(argv[:split])
    command = argv[split + 1 :]
    try:
        env = environment(args)
        if not command:
            chief = args.workers is not None or args.process == 0
            command = ["dvc", "repro"] if chief else train_command()
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if "gradguard.native_log" in sys.modules:  # its filter thread would not survive the exec
        sys.modules["gradguard.native_log"].uninstall()
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    sys.exit(main())
