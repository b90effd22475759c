"""compare: run every remedy in compare.yaml over paired seeds as DVC experiments, then report.

Each run is a named DVC experiment, `cmp-<remedy>-s<seed>` (`cmp-<remedy>-lr<rate>-s<seed>`
on a learning-rate ladder), queued with the remedy's overrides on top of the base params.
Running the command again runs only what is missing. The report goes to
reports/compare.md, reports/compare.json and PNGs beside them.

Exit status: 0 with the report written; 1 when a run failed to execute (twice) or DVC
failed; 2 for bad input, with nothing queued; 130 when interrupted (the queue goes on).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from gradguard.errors import ParamsError
from gradguard.evaluation.plan import Plan, check_plan, choose, parse_plan
from gradguard.evaluation.stats import planned_looks
from stages.compare_flow import Flow, rebuild_report, shard_of
from stages.experiments import DvcError, Experiments


def _numbers(kind):
    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {kind.__name__}s") from error

    return parse


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="python -m stages.compare",
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
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
    check_plan(plan, _yaml(args.params))
    return plan


def _yaml(path: str):
    if not Path(path).is_file():
        raise ParamsError(f"{path}: file not found")
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from error


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.from_json is not None:
            return rebuild_report(args.from_json, Path(args.out))
        plan = plan_of(args)
        share = shard_of(args.shard, args.until_decided or args.report_only)
    except ParamsError as error:
        print(f"compare: error: {error}", file=sys.stderr)
        return 2
    looks = planned_looks(len(plan.seeds), args.max_seeds) if args.until_decided else ()
    flow = Flow(Experiments(), plan, args.jobs, out=Path(args.out), looks=looks, poll=args.poll)
    try:
        if share is not None:
            return flow.shard(*share)
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


if __name__ == "__main__":
    sys.exit(main())
