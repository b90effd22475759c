"""DVC experiments as the compare command drives them: find, queue, start, discard, read.

Everything goes through DVC's own command line (`python -m dvc`, from this
environment), so each run is an ordinary experiment: `dvc exp show` lists it,
`dvc exp apply` and `dvc exp branch` work on it, `dvc exp push` shares it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

NORMS = "metrics/train/plots/steps/pre_clip_norm.tsv"  # per-step pre-clip global norm
EVAL = "metrics/eval.json"


class DvcError(RuntimeError):
    """A DVC command failed; the message is its last line of output."""


def dvc(*args: str, cwd: str | Path = ".") -> str:
    """Run `python -m dvc ARGS` with this environment first on PATH; return its stdout."""
    # The queue's workers start `dvc` and the stages start `python`: both from this environment.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env={**os.environ, "PATH": path},
    )
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise DvcError(f"dvc {' '.join(args[:3])} failed: {lines[-1] if lines else '?'}")
    return done.stdout


def set_value(key: str, value: Any) -> str:
    """One `-S` argument: the value in YAML's flow style, as DVC parses it."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip()
    return f"{key}={text.removesuffix('...').strip()}"


@dataclasses.dataclass(frozen=True)
class Found:
    """One experiment of the current baseline, as `dvc exp show --json` lists it."""

    name: str
    state: str  # success | queued | running | failed
    rev: str
    params: Mapping[str, Any]
    metrics: Mapping[str, Any] | None
    log: str | None = None  # a failed run's output file, when DVC kept it


def _found(entry: Mapping) -> Found:
    rev = (entry.get("revs") or [{}])[0]
    data = rev.get("data") or {}
    executor = entry.get("executor") or {}
    metrics = (data.get("metrics") or {}).get(EVAL, {}).get("data")
    return Found(
        name=entry.get("name") or rev.get("name") or "",
        state=executor.get("state") or "success",
        rev=rev.get("rev", ""),
        params=(data.get("params") or {}).get("params.yaml", {}).get("data", {}),
        metrics=metrics or None,
        log=(executor.get("local") or {}).get("log"),
    )


class Experiments:
    """The experiments of one repository's current commit (its baseline)."""

    def __init__(self, root: str | Path = "."):
        self.root = Path(root)

    def find(self, prefix: str) -> dict[str, Found]:
        """name -> experiment, for each one whose name starts with `prefix`."""
        rows = json.loads(dvc("exp", "show", "--json", cwd=self.root) or "[]")
        found: dict[str, Found] = {}
        for row in rows:
            for entry in row.get("experiments") or []:
                exp = _found(entry)
                if exp.name.startswith(prefix) and (
                    exp.name not in found or found[exp.name].state != "success"
                ):
                    found[exp.name] = exp  # a finished one wins over a stale queue entry
        return found

    def queue(self, name: str, overrides: Mapping[str, Any]) -> None:
        sets = [arg for key, value in overrides.items() for arg in ("-S", set_value(key, value))]
        dvc("exp", "run", "--queue", "--quiet", "-n", name, *sets, cwd=self.root)

    def start(self, jobs: int) -> None:
        dvc("queue", "start", "-j", str(jobs), cwd=self.root)

    def discard(self, exp: Found) -> None:
        """Remove an experiment: a failed or queued one from the queue, a finished one."""
        if exp.state == "success":
            dvc("exp", "remove", exp.name, cwd=self.root)
        else:
            dvc("queue", "remove", exp.name, cwd=self.root)

    def failure(self, exp: Found) -> str:
        """The last line a failed run printed (its error), or a pointer to `dvc queue logs`."""
        try:
            lines = Path(exp.log).read_text(errors="replace").splitlines() if exp.log else []
        except OSError:
            lines = []
        lines = [line.strip() for line in lines if line.strip()]
        return lines[-1][:300] if lines else f"see `dvc queue logs {exp.name}`"

    def norms(self, rev: str) -> tuple[list[int], list[float]]:
        """The per-step pre-clip norms an experiment recorded (empty when not in the cache)."""
        from dvc.api import DVCFileSystem

        try:
            text = DVCFileSystem(str(self.root), rev=rev).read_text(NORMS)
        except Exception:  # not pulled, or never recorded: no curve
            return [], []
        rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
        return [int(r["step"]) for r in rows], [float(r["pre_clip_norm"]) for r in rows]
