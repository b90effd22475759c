"""The `gradguard` command: `gradguard compare` and `gradguard gate`, in any DVC project.

Each reads its configuration from the current folder (compare.yaml, gate.yaml) and drives
DVC's own experiments there; `python -m stages.compare` and `python -m stages.gate` are the
same code under the pipeline's old names.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gradguard.errors import ParamsError
from gradguard.evaluation.gate import GateUsageError, check, markdown, parse_rules
from gradguard.evaluation.stats import planned_looks
from gradguard.experiments.compare import CompareRun, rebuild_report, shard_of
from gradguard.experiments.gate import run_seeded, seeded_markdown
from gradguard.experiments.plan import Plan, check_plan, choose, dig, parse_plan, reading
from gradguard.experiments.queue import DvcError, Experiments, dvc
from gradguard.io import atomic_path, read_yaml

COMPARE = """compare: every remedy of compare.yaml over paired seeds as DVC experiments; a report.

Each run is a named DVC experiment, `cmp-<remedy>-s<seed>` (`cmp-<remedy>-lr<rate>-s<seed>`
on a learning-rate ladder), queued with the remedy's overrides on top of the base params.
Running the command again runs only what is missing. The report goes to
reports/compare.md, reports/compare.json and PNGs beside them.

Exit status: 0 with the report written; 1 when a run failed to execute (twice) or DVC
failed; 2 for bad input, with nothing queued; 130 when interrupted (the queue goes on).
"""

GATE = """gate: fail when the workspace's metrics regress against a baseline git revision.

With one seed (the default) it compares the committed metrics of the two revisions.
With --seeds N (or `seeds: N` in the rules file) it runs both revisions' pipelines over
the same N seeds (params.yaml's seed and the next ones) as DVC experiments, and judges
each rule on the paired per-seed changes with a 95 % Student-t interval.

Exit 0 when every rule holds, 1 with one line per broken rule, 2 for usage
errors (unknown revision, metric missing on one side, non-numeric value), 3 when
no rule broke but some were inconclusive (their interval straddles the tolerance:
more seeds would decide them).
"""


def _numbers(kind):
    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {kind.__name__}s") from error

    return parse


def compare_parser(prog: str = "gradguard compare") -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog=prog,
        description=COMPARE.splitlines()[0],
        epilog=COMPARE.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = cli.add_argument
    add("--config", default="compare.yaml", help="remedies, presets, seeds (default %(default)s)")
    add("--params", default="params.yaml", help="the base params file (default %(default)s)")
    add("--remedies", type=_numbers(str), help="a subset by name, e.g. none,global_norm")
    add("--seeds", type=int, help="N seeds from compare.yaml's first_seed (default: its seeds)")
    add("--seed-list", type=_numbers(int), help="explicit seeds, e.g. 100,101,102")
    add("--base", help="a preset of compare.yaml (stress, late); default: the params file")
    add("--jobs", type=int, default=1, help="DVC queue workers (default %(default)s)")
    add("--report-only", action="store_true", help="rebuild the report from finished runs")
    add("--from-json", type=Path, help="rebuild a report from the runs its compare.json lists")
    add(
        "--until-decided",
        action="store_true",
        help="add seeds to undecided remedies at planned looks",
    )
    add("--max-seeds", type=int, default=10, help="--until-decided's limit (default %(default)s)")
    add("--lr-ladder", type=_numbers(float), default=[], help="e.g. 0.01,0.03,0.1,0.3")
    add("--shard", help="K/N: run only the K-th of N disjoint shares of the grid (no report)")
    add("--sweep", help="KEY=V1,V2,...: the compare once per value (e.g. data.length=20,40)")
    add("--out", default="reports", help="the report's folder (default %(default)s)")
    add("--poll", type=float, default=5.0, help="seconds between looks (default %(default)s)")
    return cli


def plan_of(args: argparse.Namespace) -> Plan:
    """The validated plan of a command line; ParamsError names the first problem."""
    raw = _yaml(args.config)
    plan = parse_plan(raw, source=args.config)
    if args.seeds is not None and args.seed_list:
        raise ParamsError("--seeds and --seed-list: give one of them")
    seeds = args.seed_list or (
        range(plan.seeds[0], plan.seeds[0] + args.seeds) if args.seeds is not None else None
    )
    if args.jobs < 1 or args.max_seeds < 2:
        raise ParamsError("--jobs must be >= 1 and --max-seeds >= 2")
    plan = choose(plan, remedies=args.remedies, seeds=seeds, base=args.base, ladder=args.lr_ladder)
    check_plan(plan, _yaml(args.params), source=args.params)
    return plan


def _sweep_plans(args, plan: Plan, shard, looks) -> tuple[str, list]:
    """The sweep's key and one checked plan per value; ParamsError names the first problem."""
    from gradguard.experiments.sweep import parse_sweep, sweep_plans

    if shard is not None or looks or args.lr_ladder:
        raise ParamsError(
            "--sweep runs whole compares: leave out --shard, --until-decided and --lr-ladder"
        )
    key, values = parse_sweep(args.sweep)
    plans = sweep_plans(plan, key, values)
    raw = _yaml(args.params)
    for _, each in plans:
        check_plan(each, raw, source=args.params)
    return key, plans


def _run_sweep(args, queue: Experiments, sweep: tuple[str, list]) -> int:
    """Each value's compare in turn (its report in `out/<preset>/`), then the sweep's report."""

    from gradguard.experiments.sweep import sweep_report, write_sweep

    key, plans = sweep
    status, reports = 0, []
    for _, plan in plans:
        out = Path(args.out) / plan.base
        flow = CompareRun(queue, plan, args.jobs, out=out, poll=args.poll)
        try:
            status |= flow.report_only() if args.report_only else flow.run()
        except DvcError as error:
            print(f"compare: error: {error}", file=sys.stderr)
            return 1
        reports.append(json.loads((out / "compare.json").read_text(encoding="utf-8")))
    write_sweep(sweep_report(key, [value for value, _ in plans], reports), Path(args.out))
    print(f"compare: wrote {args.out}/sweep.md, sweep.json and {args.out}/sweep.png", flush=True)
    return status


def _yaml(path: str):
    return read_yaml(path, ParamsError)


def compare_main(argv: list[str] | None = None, prog: str = "gradguard compare") -> int:
    """`gradguard compare` (and `python -m stages.compare`); returns the exit status."""
    args = compare_parser(prog).parse_args(argv)
    try:
        if args.from_json is not None:
            return rebuild_report(args.from_json, Path(args.out))
        plan = plan_of(args)
        shard = shard_of(args.shard, args.until_decided or args.report_only)
    except ParamsError as error:
        print(f"compare: error: {error}", file=sys.stderr)
        return 2
    looks = planned_looks(len(plan.seeds), args.max_seeds) if args.until_decided else ()
    queue = Experiments(files=plan.files)
    if args.sweep is not None:
        try:
            plans = _sweep_plans(args, plan, shard, looks)
        except ParamsError as error:
            print(f"compare: error: {error}", file=sys.stderr)
            return 2
        return _run_sweep(args, queue, plans)
    flow = CompareRun(queue, plan, args.jobs, out=Path(args.out), looks=looks, poll=args.poll)
    try:
        if shard is not None:
            return flow.shard(*shard)
        return flow.report_only() if args.report_only else flow.run()
    except DvcError as error:
        print(f"compare: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "compare: interrupted; queued runs go on in the background (`dvc queue status`, "
            "`dvc queue kill` to stop them); run the same command again to continue",
            file=sys.stderr,
        )
        return 130


def metrics_diff(baseline: str) -> dict:
    """`dvc metrics diff --json --all <baseline>`, parsed. Raises GateUsageError if DVC fails."""
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


def gate_main(argv: list[str] | None = None, prog: str = "gradguard gate") -> int:
    """`gradguard gate` (and `python -m stages.gate`); returns the exit status."""
    cli = argparse.ArgumentParser(
        prog=prog,
        description=GATE.splitlines()[0],
        epilog=GATE.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
        raw = read_yaml(rules_file, GateUsageError, "rules file")
        rules = parse_rules(raw)  # before running DVC: a bad rules file fails fast
        count = _count(args.seeds if args.seeds is not None else raw.get("seeds", 1))
        if count > 1:  # params.yaml's seed and the next ones
            seed_param = reading(raw, str(rules_file), keys=("seed_param",))["seed_param"]
            first = _first_seed(seed_param)
            return _seeded(rules, args, list(range(first, first + count)), seed_param)
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


def _first_seed(seed_param: str) -> int:
    """The seed params.yaml holds at `seed_param` (the seeded gate's first)."""
    seed = dig(_yaml("params.yaml"), seed_param)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise GateUsageError(f"params.yaml: {seed_param}={seed!r}; expected an integer >= 0")
    return seed


def _seeded(rules, args, seeds: list[int], seed_param: str) -> int:
    try:
        verdicts = run_seeded(rules, args.baseline, seeds, args.jobs, seed_param=seed_param)
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


def main(argv: list[str] | None = None) -> int:
    """`gradguard {compare,gate} ...`: the console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {"compare": compare_main, "gate": gate_main}
    if not argv or argv[0] not in commands:
        wanted = "-h" in argv[:1] or "--help" in argv[:1]
        print(
            "usage: gradguard {compare,gate} [options]\n\n"
            f"{COMPARE.splitlines()[0]}\n{GATE.splitlines()[0]}\n\n"
            "`gradguard compare -h`, `gradguard gate -h`: their options.",
            file=sys.stdout if wanted else sys.stderr,
        )
        return 0 if wanted else 2
    return commands[argv[0]](argv[1:])
