"""The seeded gate: the workspace's pipeline and a baseline revision's, each over the same seeds.

Both sides run as DVC experiments (the compare command's runner): the baseline's in a
temporary git worktree of that revision that shares this repository's DVC cache, so a
stage anyone ran before (workspace, or pulled with `dvc pull --run-cache`) is restored, not
run. A commit's runs are named `gate-run-s<seed>` and found again by their git refs: a
later gate against that commit reuses them. A workspace with uncommitted changes has no
such identity, so its runs are `gate-wip-s<seed>`, run afresh each time (the previous
ones are removed first) and never taken for a commit's.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from gradguard.evaluation.gate import (
    GateUsageError,
    Rule,
    SeededRuleResult,
    check_seeded,
    json_value,
)
from gradguard.experiments.plan import OURS, Plan, dig, split_key
from gradguard.experiments.queue import Experiments, dvc
from gradguard.experiments.runner import Runner, print_flushed

PREFIX = "gate"


def plan_for(
    seeds: Sequence[int], side: str = "run", seed_param: str = "seed", metric: str = OURS
) -> Plan:
    """One "remedy" (the pipeline as it is) over the seeds: `gate-<side>-s<seed>`; each
    run's progress line shows `metric`."""
    return Plan(
        remedies={side: {}},
        presets={},
        neutral={},
        seeds=tuple(seeds),
        margin=0.0,
        prefix=PREFIX,
        seed_param=seed_param,
        metric=metric,
    )


def uncommitted(root: str | Path = ".") -> bool:
    """Whether tracked files differ from the commit (what a DVC experiment would carry)."""
    done = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    return bool(done.stdout.strip())


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """A temporary git worktree of `rev` that uses this repository's DVC cache."""
    cache = dvc("cache", "dir").strip() or str(Path(".dvc/cache").resolve())
    with tempfile.TemporaryDirectory(prefix="gate-baseline-") as folder:
        root = Path(folder) / "repo"
        done = subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(root), rev],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise GateUsageError(f"baseline {rev!r}: {done.stderr.strip() or 'not a revision'}")
        try:
            dvc("cache", "dir", "--local", str(Path(cache).resolve()), cwd=root)
            yield root
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(root)], check=False)


def _values(rule: Rule, metrics: dict) -> object:
    """The rule's value in a run's metrics files (`outcome`'s `files`)."""
    file, key = split_key(rule.metric)
    value = dig(metrics["files"].get(file), key)
    if value is None:
        raise GateUsageError(f"{rule.metric}: not in a run's {file}")
    return value


def run_seeded(
    rules: Sequence[Rule],
    baseline: str,
    seeds: Sequence[int],
    jobs: int = 1,
    log=print_flushed,
    seed_param: str = "seed",
) -> list[SeededRuleResult]:
    """Run (or reuse) both sides' seeds (each written to `seed_param`), then judge every
    rule over the pairs."""
    dirty = uncommitted()
    # Progress shows the first rule on a number (higher or lower), as each run finishes.
    shown = next((r.metric for r in rules if r.direction != "equal"), rules[0].metric)
    workspace_plan = plan_for(seeds, "wip" if dirty else "run", seed_param, shown)
    baseline_plan = plan_for(seeds, seed_param=seed_param, metric=shown)
    files = tuple(dict.fromkeys(split_key(rule.metric)[0] for rule in rules))
    workspace = Experiments(".", files)
    if dirty:
        log("gate: the workspace has uncommitted changes: its runs are run afresh")
        for exp in workspace.find(f"{PREFIX}-wip-").values():
            workspace.discard(exp)
    log(f"gate: the workspace's pipeline over seeds {list(seeds)}")
    new = Runner(workspace, workspace_plan, jobs, log=log, label="gate").run(workspace_plan.cells())
    log(f"gate: {baseline}'s pipeline over the same seeds")
    with worktree(baseline) as root:
        at_baseline = Experiments(root, files)
        old = Runner(at_baseline, baseline_plan, jobs, log=log, label="gate").run(
            baseline_plan.cells()
        )
    failed = [c.experiment for c, r in {**new, **old}.items() if r.metrics is None]
    if failed:
        raise GateUsageError(f"runs failed to run (not a regression): {', '.join(failed)}")
    return [
        check_seeded(
            rule,
            seeds,
            [_values(rule, old[c].metrics) for c in baseline_plan.cells()],
            [_values(rule, new[c].metrics) for c in workspace_plan.cells()],
        )
        for rule in rules
    ]


def seeded_markdown(verdicts: Sequence[SeededRuleResult], baseline: str) -> str:
    """The report: per rule the per-seed pairs, the mean change with its interval, the verdict."""
    seeds = verdicts[0].seeds if verdicts else ()
    lines = [
        f"### Metrics gate against `{baseline}`, over {len(seeds)} paired seeds",
        "",
        "| metric | "
        + " | ".join(f"s{s}: base → now" for s in seeds)
        + " | mean change [95 % CI] | tolerance | noise (std, base) | verdict |",
        "|---" * (len(seeds) + 5) + "|",
    ]
    for v in verdicts:
        pairs = [f"{json_value(o)} → {json_value(n)}" for o, n in zip(v.old, v.new, strict=True)]
        change = (
            "-"
            if v.interval is None
            else (f"{v.interval.estimate:+.4g} [{v.interval.low:+.4g}, {v.interval.high:+.4g}]")
        )
        verdict = {"pass": "pass", "fail": "**FAIL**", "inconclusive": "inconclusive"}[v.outcome]
        if v.outcome == "inconclusive" and v.seeds_to_decide:
            verdict += f" (about {v.seeds_to_decide} seeds would decide)"
        tolerance = v.rule.describe()
        noise = "-" if v.noise is None else f"{v.noise:.4g}"
        lines.append(
            f"| `{v.rule.metric}` | {' | '.join(pairs)} | {change} | {tolerance} | {noise} "
            f"| {verdict} |"
        )
    counts = {o: sum(v.outcome == o for v in verdicts) for o in ("pass", "fail", "inconclusive")}
    lines += [
        "",
        f"Rules: {counts['pass']} pass, {counts['fail']} fail, "
        f"{counts['inconclusive']} inconclusive.",
    ]
    return "\n".join(lines) + "\n"
