"""gate: fail when the workspace's metrics regress against a baseline git revision.

With one seed (the default) it compares the committed metrics of the two revisions.
With --seeds N (or `seeds: N` in the rules file) it runs both revisions' pipelines over
the same N seeds (params.yaml's seed and the next ones) as DVC experiments, and judges
each rule on the paired per-seed changes with a 95 % Student-t interval.

Exit 0 when every rule holds, 1 with one line per broken rule, 2 for usage
errors (unknown revision, metric missing on one side, non-numeric value), 3 when
no rule broke but some were inconclusive (their interval straddles the tolerance:
more seeds would decide them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from gradguard.errors import ParamsError
from gradguard.evaluation.gate import GateUsageError, check, markdown, parse_rules
from gradguard.io import atomic_path
from gradguard.params import load_params


def metrics_diff(baseline: str) -> dict:
    """`dvc metrics diff --json --all <baseline>`, parsed. Raises GateUsageError if DVC fails."""
    from stages.experiments import DvcError, dvc

    try:
        out = dvc("metrics", "diff", "--json", "--all", baseline)
    except DvcError as error:
        raise GateUsageError(f"{error} (baseline {baseline})") from error
    try:
        return json.loads(out or "{}")
    except json.JSONDecodeError as error:
        raise GateUsageError(
            f"dvc metrics diff {baseline}: output is not JSON ({error})"
        ) from error


def main_cli(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--baseline", default="main", help="git revision to compare against")
    cli.add_argument("--rules", default="gate.yaml", help="the rules file")
    cli.add_argument("--md", help="also write the markdown report to this file")
    cli.add_argument(
        "--seeds", type=int, help="paired seeds per side (default: the rules file's, 1)"
    )
    cli.add_argument("--jobs", type=int, default=1, help="DVC queue workers for seeded runs")
    args = cli.parse_args(argv)
    try:
        rules_file = Path(args.rules)
        if not rules_file.is_file():
            raise GateUsageError(f"{rules_file}: rules file not found")
        try:
            raw = yaml.safe_load(rules_file.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            detail = " ".join(str(error).split())
            raise GateUsageError(f"{rules_file}: not valid YAML ({detail})") from error
        rules = parse_rules(raw)  # before running DVC: a bad rules file fails fast
        count = _count(args.seeds if args.seeds is not None else raw.get("seeds", 1))
        if count > 1:  # params.yaml's seed and the next ones
            first = load_params("params.yaml").seed
            return _seeded(rules, args, list(range(first, first + count)))
        verdicts = check(metrics_diff(args.baseline), rules)
    except (GateUsageError, ParamsError) as error:
        print(f"gate: error: {error}", file=sys.stderr)
        return 2
    _publish(markdown(verdicts, args.baseline), args.md)
    broken = [v for v in verdicts if not v.ok]
    for verdict in broken:
        print(f"gate: FAIL {verdict.reason}", file=sys.stderr)
    return 1 if broken else 0


def _publish(report: str, md: str | None) -> None:
    """Print the markdown report and, with --md, write it there (atomically)."""
    print(report)
    if md:
        with atomic_path(md) as tmp:
            tmp.write_text(report, encoding="utf-8")


def _count(count) -> int:
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise GateUsageError(f"seeds={count!r}; expected an integer >= 1")
    return count


def _seeded(rules, args, seeds: list[int]) -> int:
    from stages.experiments import DvcError
    from stages.gate_seeded import run_seeded, seeded_markdown

    try:
        verdicts = run_seeded(rules, args.baseline, seeds, args.jobs)
    except (GateUsageError, DvcError, ParamsError) as error:
        print(f"gate: error: {error}", file=sys.stderr)
        return 2
    _publish(seeded_markdown(verdicts, args.baseline), args.md)
    for verdict in verdicts:
        if verdict.outcome != "pass":
            print(f"gate: {verdict.outcome.upper()} {verdict.reason}", file=sys.stderr)
    if any(v.outcome == "fail" for v in verdicts):
        return 1
    return 3 if any(v.outcome == "inconclusive" for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main_cli())
