"""Local workers: the processes of a cluster on this host, started and watched by one process.

`python -m stages.launch --workers N -- dvc repro` sets `GRADGUARD_LOCAL_WORKERS=N`;
when DVC runs the train stage, the stage starts N local processes of itself
(`supervise`) and takes part in no collective, so it sees whichever process
dies first, kills the rest and reports it in one line.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gradguard.errors import ClusterError
from gradguard.training.multihost import ENV, Cluster, cluster_from_env

# Set by `python -m stages.launch --workers N`: this host runs N processes of the stage.
LOCAL_WORKERS = "GRADGUARD_LOCAL_WORKERS"
ERROR = "error: "  # how a stage prints its one-line error (stages.common)


def local_worker_count(environ=os.environ) -> int:
    """How many local processes `GRADGUARD_LOCAL_WORKERS` asks for (1 when unset).

    Raises:
        ClusterError: the variable is not a count >= 1.
    """
    local = environ.get(LOCAL_WORKERS, "1")
    if not local.isdigit() or int(local) < 1:
        raise ClusterError(f"{LOCAL_WORKERS}={local!r}: expected a process count >= 1")
    return int(local)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (for a local coordinator)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


WORKER_PARENT = "GRADGUARD_WORKER_PARENT"  # a local process's launcher, which it watches


@dataclass
class LocalCluster:
    """Every process of a cluster on this host, started and watched by this process.

    The watcher takes part in no collective, so it sees a process die however
    the others react (JAX aborts them, or they wait on the dead one).
    """

    cluster: Cluster
    children: list[subprocess.Popen]
    logs: list[Path | None]

    def wait(self) -> list[tuple[int, int]]:
        """Wait for every process; at the first failure, kill the others.

        Returns:
            `(process, exit status)` of each process that failed, in the order
            they ended (a negative status: killed by that signal), so the first
            is the cause and the others the consequence.
        """
        pending = {child.pid: process for process, child in enumerate(self.children)}
        failures = []
        while pending:
            pid, status = os.wait()  # whichever ends first, unlike Popen.wait
            if pid not in pending:
                continue
            process = pending.pop(pid)
            code = self.children[process].returncode = os.waitstatus_to_exitcode(status)
            if code != 0:
                failures.append((process, code))
                for child in self.children:
                    if child.pid in pending:
                        child.kill()
        return failures

    def lines(self, process: int) -> list[str]:
        """A process's logged output: all of it for a worker, the standard error for 0."""
        log = self.logs[process]
        if log is None or not log.is_file():
            return []
        return log.read_text(errors="replace").splitlines()

    def last_lines(self, process: int, count: int = 5) -> str:
        """The end of a process's logged output."""
        return "\n".join(self.lines(process)[-count:])

    def error_line(self, process: int) -> str | None:
        """The one-line error a process printed before it ended (`error: ...`), if any."""
        errors = [line for line in self.lines(process) if line.startswith(ERROR)]
        return errors[-1].removeprefix(ERROR) if errors else None


def start_local_cluster(
    command: Sequence[str], processes: int, log_folder: str | os.PathLike, env=os.environ
) -> LocalCluster:
    """Start `processes` processes of `command` on this host as one cluster, on a free port.

    Each runs with the JAX cluster variables set and `GRADGUARD_WORKER_PARENT`
    naming this process (see `exit_with_parent`). Process 0 writes to this
    process's standard output and its standard error to
    `<log_folder>/process-0.log` (see `supervise`); the others write both to
    `<log_folder>/process-<i>.log`.
    """
    cluster = Cluster(f"127.0.0.1:{free_port()}", processes, 0)
    children, logs = [], []
    for process in range(processes):
        cluster_env = {
            ENV[0]: cluster.coordinator,
            ENV[1]: str(processes),
            ENV[2]: str(process),
            WORKER_PARENT: str(os.getpid()),
        }
        log = Path(log_folder) / f"process-{process}.log"
        with open(log, "w", encoding="utf-8") as handle:
            output = {"stderr": handle}  # process 0: its standard output is this process's
            if process:
                output["stdout"], output["stderr"] = handle, subprocess.STDOUT
            children.append(
                subprocess.Popen(
                    list(command), env={**env, **cluster_env}, stdin=subprocess.DEVNULL, **output
                )
            )
        logs.append(log)
    return LocalCluster(cluster, children, logs)


def exit_with_parent(environ=os.environ, poll_s: float = 1.0) -> None:
    """In a local worker: end this process when the process that started it ends."""
    parent = environ.get(WORKER_PARENT)
    if not parent:
        return

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def supervise(command: Sequence[str], processes: int, resume_dir: str | os.PathLike) -> None:
    """Run `command` as `processes` local processes; one that dies stops them all.

    Raises:
        ClusterError: which process ended, how, and where the run resumes from.

    Process 0's standard error is passed on when the processes end, less its own
    `error:` line: the run's one error line is this function's, naming the process that
    ended first and, when it printed one, its error (a missing or corrupt shard, say).
    """
    with tempfile.TemporaryDirectory(prefix="gradguard-launch-") as logs:
        local = start_local_cluster(command, processes, logs)
        failures = local.wait()
        for line in local.lines(0):
            if not line.startswith(ERROR):
                print(line, file=sys.stderr)
        if not failures:
            return
        process, status = failures[0]
        resume = (
            f"the others were stopped; run the stage again to resume after the last epoch "
            f"saved in {resume_dir}"
        )
        error = local.error_line(process)
        if error is not None:
            raise ClusterError(f"train: process {process} of {processes}: {error}; {resume}")
        cause = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        tail = local.last_lines(process)
        raise ClusterError(
            f"train: process {process} of {processes} ended ({cause}) and {resume}"
            + (f". Its last lines:\n{tail}" if tail else "")
        )


def cluster_environment(
    workers: int | None,
    coordinator: str | None,
    processes: int | None,
    process: int | None,
    environ=os.environ,
) -> dict[str, str]:
    """`environ` with one cluster and no other: `workers` local processes, or process
    `process` of `processes` with process 0 at `coordinator` (host:port); ClusterError,
    one line, for a bad one (`stages.launch`)."""
    env = {k: v for k, v in environ.items() if k not in (*ENV, LOCAL_WORKERS)}
    if workers is not None:
        if workers < 1:
            raise ClusterError(f"--workers {workers}: expected a process count >= 1")
        env[LOCAL_WORKERS] = str(workers)
        return env
    if processes is None or process is None:
        raise ClusterError("--coordinator needs --processes (in all) and --process (this one's id)")
    cluster = {ENV[0]: coordinator, ENV[1]: str(processes), ENV[2]: str(process)}
    cluster_from_env(cluster)  # checks it, one line if wrong
    return env | cluster
