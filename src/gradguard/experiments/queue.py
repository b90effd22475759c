"""DVC experiments as the compare command drives them: find, queue, start, discard, read.

Everything goes through DVC's own command line (`python -m dvc`, from this
environment), so each run is an ordinary experiment: `dvc exp show` lists it,
`dvc exp apply` and `dvc exp branch` work on it, `dvc exp push` shares it.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


class DvcError(RuntimeError):
    """A DVC command failed; the message is its last line of output."""


def dvc(*args: str, cwd: str | Path = ".", tries: int = 1, wait: float = 2.0) -> str:
    """Run `python -m dvc ARGS` with this environment first on PATH; return its stdout.

    `tries`: for reads only, e.g. `queue status`, which can fail for a moment while
    workers start (seen once in a 45-run compare, at its start); `wait` s between tries.
    """
    for _ in range(tries - 1):
        try:
            return _dvc(args, cwd)
        except DvcError:
            time.sleep(wait)
    return _dvc(args, cwd)


def _dvc(args: tuple[str, ...], cwd: str | Path) -> str:
    # The queue's workers start `dvc` and the stages start `python`: both from this environment.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    # Files, not pipes: `dvc queue start` forks its workers with this command's standard
    # output and error, and a pipe would stay open (the call blocked) until they all exit.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        done = subprocess.run(
            [sys.executable, "-m", "dvc", *args],
            stdout=out,
            stderr=err,
            check=False,
            cwd=cwd,
            env={**os.environ, "PATH": path},
        )
        stdout, stderr = (_read(handle) for handle in (out, err))
    if done.returncode != 0:
        raise DvcError(f"dvc {' '.join(args[:3])} failed: {_error_line(stderr, stdout)}")
    return stdout


def _error_line(stderr: str, stdout: str) -> str:
    """What a failed DVC command said: its last ERROR line, else the last line of its
    error output, else of its output (a table row there would hide the cause)."""
    errors = [line.strip() for line in stderr.splitlines() if line.strip()]
    named = [line for line in errors if line.startswith("ERROR")]
    lines = named or errors or [line.strip() for line in stdout.splitlines() if line.strip()]
    return lines[-1] if lines else "?"


def _read(handle) -> str:
    handle.seek(0)
    return handle.read().decode("utf-8", errors="replace")


def set_value(key: str, value: Any) -> str:
    """One `-S` argument: the value in YAML's flow style, as DVC parses it."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip()
    return f"{key}={text.removesuffix('...').strip()}"


@dataclasses.dataclass(frozen=True)
class ExperimentRecord:
    """One experiment of the current baseline."""

    name: str
    state: str  # success | queued | running | failed
    rev: str
    params: Mapping[str, Any]
    metrics: Mapping[str, Any] | None  # a finished one's metrics files: path -> parsed JSON


QUEUE_STATES = {"Queued": "queued", "Running": "running", "Failed": "failed"}
RUNS = Path(".dvc/tmp/exps/run")  # DVC's per-task folders of a local queue's runs


def _json_or_none(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # not written yet, or being written
        return None
    return value if isinstance(value, dict) else None


def _pid_alive(pid: object, task: str) -> bool:
    """A live process with that id; where /proc tells, one that runs this task (a dead
    run's id reused by another process is not it)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        return task in cmdline.read_text(encoding="utf-8", errors="replace")
    except OSError:  # no /proc (not Linux): the id alone
        return True


class Experiments:
    """The experiments of one repository's current commit (its baseline).

    Finished experiments are read from git (their refs and committed files: cheap,
    so they can be polled); queued, running and failed ones from `dvc queue status`.
    """

    def __init__(self, root: str | Path = ".", files: tuple[str, ...] = ()):
        self.root, self.files = Path(root), files  # metrics files read from finished ones
        self._read: dict[str, tuple[dict, dict | None]] = {}  # commit -> (params, metrics)
        # As the last `find` saw them (None: not known): workers running a task, and idle ones.
        self.active_workers: int | None = None
        self.idle_workers: int | None = None

    def _git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=self.root, capture_output=True, text=True, check=False
        )
        return done.stdout if done.returncode == 0 else ""

    def finished(self, prefix: str) -> dict[str, ExperimentRecord]:
        """name -> experiment, for each finished one on this commit named `prefix...`."""
        head = self._git("rev-parse", "HEAD").strip()
        if not head:
            raise DvcError(f"{self.root.resolve()}: not a git repository with a commit")
        refs = self._git(
            "for-each-ref", "--format=%(objectname) %(refname)", f"refs/exps/{head[:2]}/{head[2:]}/"
        )
        found = {}
        for line in refs.splitlines():
            rev, ref = line.split(" ", 1)
            name = ref.rsplit("/", 1)[-1]
            if name.startswith(prefix):
                params, metrics = self._files(rev)
                found[name] = ExperimentRecord(name, "success", rev, params, metrics)
        return found

    def _files(self, rev: str) -> tuple[dict, dict]:
        if rev not in self._read:
            params = yaml.safe_load(self._git("show", f"{rev}:params.yaml") or "{}") or {}
            metrics = {}
            for file in self.files:
                with contextlib.suppress(ValueError):  # unreadable: as if missing
                    text = self._git("show", f"{rev}:{file}")
                    if text:
                        metrics[file] = json.loads(text)
            self._read[rev] = (params, metrics)
        return self._read[rev]

    def find(self, prefix: str) -> dict[str, ExperimentRecord]:
        """Every experiment named `prefix...`: finished, queued, running or failed."""
        found = {}
        for line in dvc("queue", "status", cwd=self.root, tries=3).splitlines()[1:]:
            fields = line.split()
            if line.startswith("Worker status:"):  # "Worker status: 2 active, 0 idle"
                self.active_workers, self.idle_workers = int(fields[2]), int(fields[4])
            elif len(fields) >= 2 and fields[1].startswith(prefix) and fields[-1] in QUEUE_STATES:
                found[fields[1]] = ExperimentRecord(
                    fields[1], QUEUE_STATES[fields[-1]], fields[0], {}, None
                )
        return {**found, **self.finished(prefix)}  # a finished one wins over its old entries

    def process_alive(self, exp: ExperimentRecord) -> bool | None:
        """Whether the process that runs a `running` experiment is alive, from DVC's own
        records: each task's `dvc exp exec-run` writes `.dvc/tmp/exps/run/<task>/<task>.json`
        ({"pid", "returncode"}; dvc-task's process manager) beside `<task>.run` (its name).
        True when such a process is alive (os.kill(pid, 0)), False when every record of
        this task ended or names a dead process, None when DVC has written none yet.

        Unlike the worker count of `dvc queue status` (celery's `inspect`, a one-second
        timeout), a process id cannot time out on a loaded machine."""
        records = []
        for folder in (self.root / RUNS).glob(f"{exp.rev}*"):
            info = _json_or_none(folder / f"{folder.name}.run")
            process = _json_or_none(folder / f"{folder.name}.json")
            if info is not None and info.get("name") not in (None, exp.name):
                continue
            if process is not None:
                records.append(process)
        if not records:
            return None
        return any(
            r.get("returncode") is None and _pid_alive(r.get("pid"), exp.rev) for r in records
        )

    def kill(self, exp: ExperimentRecord) -> None:
        """Stop a running experiment; DVC marks it failed (also one whose worker is gone)."""
        dvc("queue", "kill", exp.rev, cwd=self.root)

    def queue(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        """Queue experiments {name: overrides} in one process (DVC's API: no start-up each)."""
        from dvc.repo import Repo

        # DVC's API works relative to the current folder (its git stash too): go there.
        with contextlib.chdir(self.root), Repo(".") as repo:
            for name, overrides in entries.items():
                sets = [set_value(key, value) for key, value in overrides.items()]
                repo.experiments.run(params=sets, queue=True, name=name)

    def start(self, jobs: int) -> None:
        dvc("queue", "start", "-j", str(jobs), cwd=self.root)

    def discard(self, exp: ExperimentRecord) -> None:
        """Remove an experiment: a failed or queued one from the queue, a finished one."""
        if exp.state == "success":
            dvc("exp", "remove", exp.name, cwd=self.root)
        else:
            dvc("queue", "remove", exp.name, cwd=self.root)

    def failure(self, exp: ExperimentRecord) -> str:
        """The last line a failed run printed (its error), or a pointer to `dvc queue logs`."""
        try:
            text = dvc("queue", "logs", exp.name, cwd=self.root)
        except DvcError:
            text = ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1][:300] if lines else f"see `dvc queue logs {exp.name}`"

    def recorded(
        self, rev: str, gradients: str | None, summary_file: str
    ) -> tuple[tuple[list[int], list[float]], dict]:
        """What an experiment recorded in DVC's cache: its per-step pre-clip norms (the TSV
        at `gradients`, columns step and pre_clip_norm) and gradguard's training summary
        (the `run` section of DVCLive's `summary_file`); empty when not in the cache or
        not configured."""
        from dvc.api import DVCFileSystem

        fs = DVCFileSystem(str(self.root), rev=rev)
        try:
            text = fs.read_text(gradients) if gradients else ""
            rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
        except Exception:  # not pulled, or never recorded: no curve
            rows = []
        try:
            summary = json.loads(fs.read_text(summary_file)).get("run", {})
        except Exception:  # as above
            summary = {}
        steps = [int(r["step"]) for r in rows]
        return (steps, [float(r["pre_clip_norm"]) for r in rows]), summary
