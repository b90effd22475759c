"""What one run of a compare (or of the seeded gate) gave back: its metric and its verdict.

`outcome` reads them from the run's metrics files where compare.yaml says (`metric`,
`verdict`); `RunResult` carries them, or the reason a run failed to execute, from the
runner to the statistics (`summary`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from gradguard.experiments.plan import Cell, Plan, dig, split_key
from gradguard.verdict import VERDICTS

FAILED_TO_RUN = "failed to run"  # a queue or infrastructure failure: not a verdict


@dataclasses.dataclass(frozen=True)
class RunResult:
    """One finished (or failed) run of a compare."""

    cell: Cell
    metrics: Mapping[str, Any] | None  # `outcome`'s mapping; None: it failed to run
    error: str = ""  # why it failed to run

    @property
    def verdict(self) -> str:
        return FAILED_TO_RUN if self.metrics is None else str(self.metrics.get("verdict"))

    @property
    def metric(self) -> float | None:
        """The compared number (a report written before `metric` existed: its `accuracy`)."""
        value = None if self.metrics is None else self.metrics.get("metric")
        if value is None and self.metrics is not None:
            value = self.metrics.get("accuracy")
        return finite(value)


def finite(value: Any) -> float | None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if number and math.isfinite(value) else None


def outcome(plan: Plan, files: Mapping[str, Any]) -> dict:
    """What a finished run gave back, from its metrics files (path -> parsed JSON).

    `metric`: the number at `plan.metric`, None when missing or not finite. `verdict`:
    the one at `plan.verdict` when it is one of `VERDICTS`; else, and always when the
    metric is missing, `healthy` for a finite metric and `diverged` without one. The
    files' own top-level keys come along, the metric file's last (gradguard's eval.json
    and `write_verdict`'s file hold the gradient statistics the report shows); `files`
    keeps everything read.
    """
    file, key = split_key(plan.metric)
    metric = finite(dig(files.get(file), key))
    verdict = None
    if plan.verdict:
        verdict_file, verdict_key = split_key(plan.verdict)
        verdict = dig(files.get(verdict_file), verdict_key)
    if verdict not in VERDICTS or (metric is None and verdict == "healthy"):
        verdict = "healthy" if metric is not None else "diverged"
    own: dict = {}
    for name in sorted(files, key=lambda name: name == file):  # the metric file's win
        if isinstance(files[name], Mapping):
            own.update(files[name])
    return {**own, "metric": metric, "verdict": verdict, "files": dict(files)}
