"""A compare swept over one params key: `--sweep data.length=20,40,60,80`.

Each value is a compare of its own: the base preset (or the params file) with the key
set to the value, under a derived preset name (`temporal-order-length20`), so its runs
are ordinary named DVC experiments (`cmp-temporal-order-length20-none-s200`) that a
second run of the same command reuses. The sweep's report puts, per remedy, the share
of runs that succeeded against the value (solved where the runs record `solved`, else
healthy), each with its exact 95 % interval: Pascanu et al. 2013's Figure 7 is this
figure for the temporal-order task over L.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from gradguard.errors import ParamsError
from gradguard.experiments.plan import Plan
from gradguard.experiments.report import save_png, summary_table
from gradguard.io import atomic_path, write_json

FIGURE = "sweep.png"


def parse_sweep(text: str) -> tuple[str, list[Any]]:
    """`KEY=V1,V2,...` -> (key, values); the values as YAML reads them (as `-S` does)."""
    key, sep, raw = text.partition("=")
    values = [yaml.safe_load(v) for v in raw.split(",") if v.strip()]
    if not sep or not key or len(values) < 2 or len(set(map(repr, values))) != len(values):
        raise ParamsError(
            f"--sweep {text!r} is invalid; expected KEY=V1,V2,... with at least 2 distinct values"
        )
    return key, values


def sweep_plans(plan: Plan, key: str, values: Sequence[Any]) -> list[tuple[Any, Plan]]:
    """One plan per value: the base preset's overrides and `key: value`, as a derived preset."""
    short = key.rsplit(".", 1)[-1].replace("_", "")
    base = plan.presets.get(plan.base, {}) if plan.base else {}
    plans = []
    for value in values:
        name = f"{plan.base}-{short}{value}" if plan.base else f"{short}{value}"
        presets = {**plan.presets, name: {**base, key: value}}
        plans.append((value, dataclasses.replace(plan, presets=presets, base=name)))
    return plans


def success(report: Mapping) -> dict[str, dict]:
    """Per remedy: the share of runs that succeeded, with its interval, and what counted.

    Solved, where the runs record `solved`; else healthy (1 - the not-healthy share)."""
    out = {}
    for remedy in report["remedies"]:
        solved, failed = remedy.get("solved"), remedy.get("not_healthy")
        if solved:
            out[remedy["name"]] = {"what": "solved", **solved}
        elif failed:
            out[remedy["name"]] = {
                "what": "healthy",
                "estimate": round(1 - failed["estimate"], 6),
                "low": round(1 - failed["high"], 6),
                "high": round(1 - failed["low"], 6),
            }
    return out


def sweep_report(key: str, values: Sequence[Any], reports: Sequence[Mapping]) -> dict:
    """The sweep's JSON: per value, each remedy's success share; and every value's report."""
    return {
        "key": key,
        "values": list(values),
        "success": [success(report) for report in reports],
        "reports": list(reports),
    }


def sweep_markdown(sweep: Mapping) -> str:
    """The success table (remedy x value) over the figure, then each value's summary."""
    key, values = sweep["key"], sweep["values"]
    remedies = list(dict.fromkeys(name for row in sweep["success"] for name in row))
    kinds = {entry["what"] for row in sweep["success"] for entry in row.values()}
    what = " or ".join(sorted(kinds)) or "healthy"
    lines = [
        f"# Compare swept over `{key}`: {', '.join(map(str, values))}",
        "",
        f"Share of runs {what} per remedy and `{key}`, with the exact (Clopper-Pearson) 95 % "
        "interval.",
        "",
        "| remedy | " + " | ".join(f"{key}={v}" for v in values) + " |",
        "|---" * (len(values) + 1) + "|",
    ]
    for name in remedies:
        cells = [_share(row.get(name)) for row in sweep["success"]]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines += ["", f"![success against {key}]({FIGURE})", ""]
    for value, report in zip(values, sweep["reports"], strict=True):
        lines += [f"## {key} = {value}", "", *summary_table(report)]
    return "\n".join(lines) + "\n"


def _share(entry: Mapping | None) -> str:
    if entry is None:
        return "-"
    return f"{100 * entry['estimate']:.0f} % [{100 * entry['low']:.0f}, {100 * entry['high']:.0f}]"


def _numeric(values: Sequence) -> bool:
    """Numbers that can stand on an axis (booleans are categories)."""
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def x_scale(values: Sequence) -> str:
    """'log' for positive numbers that span a factor of 10 or more (a learning-rate
    ladder), else 'linear'."""
    if _numeric(values) and min(values) > 0 and max(values) >= 10 * min(values):
        return "log"
    return "linear"


def nudge(x: float, line: int, lines: int, xs: Sequence[float], scale: str) -> float:
    """`x` moved by 1 % of the axis per line from the middle one, so that the interval
    bars of `lines` lines at one value stand apart (a factor on a log axis)."""
    step = (line - (lines - 1) / 2) * 0.01
    if scale == "log":
        return x * (max(xs) / min(xs)) ** step
    return x + step * (max(xs) - min(xs) or 1)


def plot_sweep(sweep: Mapping, path: Path) -> None:
    """Success share against the value, one line per remedy, with interval bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = sweep["values"]
    numeric = _numeric(values)
    xs = values if numeric else list(range(len(values)))
    scale = x_scale(values)
    remedies = list(dict.fromkeys(name for row in sweep["success"] for name in row))
    fig, axis = plt.subplots(figsize=(6, 4))
    for line, name in enumerate(remedies):
        points = [
            (x, row[name]) for x, row in zip(xs, sweep["success"], strict=True) if name in row
        ]
        x = [nudge(p[0], line, len(remedies), xs, scale) for p in points]
        y = [p[1]["estimate"] for p in points]
        below = [p[1]["estimate"] - p[1]["low"] for p in points]
        above = [p[1]["high"] - p[1]["estimate"] for p in points]
        axis.errorbar(x, y, yerr=[below, above], marker="o", capsize=3, label=name)
    axis.set_xscale(scale)
    if scale == "log" or not numeric:
        axis.set_xticks(xs, [str(v) for v in values])
        axis.minorticks_off()
    axis.set_xlabel(sweep["key"])
    axis.set_ylabel("share of runs that succeed")
    axis.set_ylim(-0.05, 1.05)
    axis.legend(fontsize=8)
    axis.set_title("Success against the swept value (95 % exact intervals)", fontsize=9)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def write_sweep(sweep: dict, out: Path) -> None:
    """sweep.json, sweep.md and sweep.png in `out`, each atomically."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sweep.json", sweep)
    with atomic_path(out / "sweep.md") as tmp:
        tmp.write_text(sweep_markdown(sweep), encoding="utf-8")
    plot_sweep(sweep, out / FIGURE)
