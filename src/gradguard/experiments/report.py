"""The compare report as markdown (a pull-request comment) and PNG plots, from `summarize`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from gradguard.experiments.results import FAILED_TO_RUN, VERDICTS
from gradguard.io import atomic_path

PLOTS = {
    "accuracy": "compare_accuracy.png",
    "grad_norms": "compare_grad_norms.png",
    "verdicts": "compare_verdicts.png",
}
SHORT = {
    "healthy": "H",
    "diverged": "D",
    "exploded": "E",
    "collapsed": "C",
    "unlearned": "U",
    FAILED_TO_RUN: "F",
}


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}"


def _ours(report: Mapping) -> bool:
    """A report on gradguard's test accuracy (shown in percent and points), not another metric."""
    return "metric" not in report


def _show(report: Mapping, value: float | None, sign: str = "") -> str:
    """A metric value as the report shows it: percent for our accuracy, else 4 digits."""
    if value is None:
        return "-"
    return f"{100 * value:{sign}.1f}" if _ours(report) else f"{value:{sign}.4g}"


def _signed(interval: Mapping | None, report: Mapping) -> str:
    if interval is None:
        return "-"
    low, high = (_show(report, interval[k], "+") for k in ("low", "high"))
    return f"{_show(report, interval['estimate'], '+')} [{low}, {high}]"


def _level(report: Mapping) -> str:
    """The intervals' level as the report states it: `95 %`, or `97.5 %` over two looks."""
    return f"{100 * report['confidence']:.4g} %"


def _number(value, fmt: str = "{:.3g}") -> str:
    return "-" if value is None else fmt.format(value)


def _value(value) -> str:
    """A params value as `-S` takes it: null, true, 0.1, [16, 16], elu."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)


def _overrides(overrides: Mapping) -> str:
    return " ".join(f"{k}={_value(v)}" for k, v in overrides.items()) or "-"


def _header(report: Mapping) -> list[str]:
    base = report["base"]
    lines = [
        f"# Which remedy? {len(report['remedies'])} remedies on {base}",
        "",
        f"Base: **{base}**"
        + (f" (`{_overrides(report['base_overrides'])}`)" if report["base_overrides"] else "")
        + f"; every remedy starts from `{_overrides(report['neutral'])}`. Seeds "
        f"{', '.join(map(str, report['seeds']))}, paired: on one seed every remedy sees the "
        "same split, initialisation and data order. " + _units(report),
        "",
        f"## Labels (margin m = {_margin(report)}, {_level(report)} intervals)",
        "",
    ]
    number = 0
    for rule in report["rules"]:  # a rule that starts with "- " belongs to the one before
        if rule.startswith("- "):
            lines.append(f"   {rule}")
        else:
            number += 1
            lines.append(f"{number}. {rule}")
    return [*lines, ""]


def _units(report: Mapping) -> str:
    if _ours(report):
        return "Test accuracy is the kept checkpoint's, in percent; differences are in points."
    better = "higher" if report["higher_is_better"] else "lower"
    return (
        f"Each run's metric is `{report['metric']}` ({better} is better; seeds go to "
        f"`{report['seed_param']}`); differences are signed so that more is better."
    )


def _margin(report: Mapping) -> str:
    return f"{100 * report['margin']:g} points" if _ours(report) else f"{report['margin']:g}"


def summary_table(report: Mapping) -> list[str]:
    headroom = any(s["headroom"] for s in report["remedies"])
    solved = any(s.get("solved") for s in report["remedies"])  # runs that record `solved`
    level = _level(report)
    lines = [
        "| remedy | label | verdicts | not healthy, 95 % CI | "
        + ("accuracy" if _ours(report) else "metric")
        + " mean ± std | "
        + ("solved, 95 % CI | " if solved else "")
        + f"IQM | healthy runs: mean | vs none [{level} CI] | P(> none) | vs best [{level} CI] "
        "| max grad norm | clip fraction | skipped steps | rollbacks | collapses "
        "| max weight growth |" + (" highest healthy lr |" if headroom else ""),
        "|---" * (16 + solved + headroom) + "|",
    ]
    for s in report["remedies"]:
        every, healthy, grads = s["metric"]["all"], s["metric"]["healthy"], s["gradients"]
        share = s["not_healthy"]
        counts = ", ".join(f"{v} {n}" for v, n in s["verdicts"].items() if n)
        if s["failed_to_run"]:
            counts += f", {FAILED_TO_RUN} {len(s['failed_to_run'])}"
        row = [
            f"`{s['name']}`" + (" (best)" if s["name"] == report["best"] else ""),
            f"**{s['label']}**",
            counts or "-",
            "-"
            if share is None
            else f"{_pct(share['estimate'], 0)} % "
            f"[{_pct(share['low'], 0)}, {_pct(share['high'], 0)}]",
            "-"
            if every is None
            else f"{_show(report, every['mean'])} ± {_show(report, every['std'])}",
            *([_solved(s.get("solved"))] if solved else []),
            "-" if every is None else _show(report, every["iqm"]),
            "-"
            if healthy is None
            else f"{_show(report, healthy['mean'])} ({healthy['runs']} runs)",
            _signed(s["vs_none"], report),
            "-" if s["vs_none"] is None else f"{s['vs_none']['probability_of_improvement']:.2f}",
            _signed(s["vs_best"], report),
            _number(grads["max_grad_norm"]),
            _number(grads["clip_fraction"], "{:.2f}"),
            _number(grads["skipped_steps"], "{:.0f}"),
            _number(grads["rollbacks"], "{:.0f}"),
            _number(grads.get("collapses"), "{:.0f}"),
            _number(grads.get("weight_growth"), "{:.3g}x"),
        ]
        if headroom:
            row.append(_number((s["headroom"] or {}).get("highest_healthy_rate"), "{:g}"))
        lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


def _solved(share: Mapping | None) -> str:
    """`4/5 [28, 99] %`: runs solved of those run, with the exact 95 % interval."""
    if share is None:
        return "-"
    return (
        f"{share['solved']}/{share['runs']} [{_pct(share['low'], 0)}, {_pct(share['high'], 0)}] %"
    )


def _cell(run: Mapping | None, report: Mapping) -> str:
    return "" if run is None else f"{_show(report, run['metric'])} {SHORT[run['verdict']]}"


def _runs_table(report: Mapping) -> list[str]:
    seeds = report["seeds"]
    what = "test accuracy %" if _ours(report) else f"`{report['metric']}`"
    lines = [
        f"## Runs ({what}, verdict: H healthy, D diverged, E exploded, C collapsed, "
        "U unlearned, F failed to run)",
        "",
        "| remedy | overrides | " + " | ".join(f"s{s}" for s in seeds) + " |",
        "|---|---" + "|---" * len(seeds) + "|",
    ]
    for s in report["remedies"]:
        by_seed = {r["seed"]: r for r in s["runs"]}
        cells = [_cell(by_seed.get(seed), report) for seed in seeds]
        lines.append(f"| `{s['name']}` | `{_overrides(s['params'])}` | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _notes(report: Mapping) -> list[str]:
    lines = []
    for s in report["remedies"]:
        decide = (s["vs_best"] or {}).get("seeds_to_decide")
        if s["label"] == "inconclusive" and decide:
            about = f"about {decide}" if decide <= 100 else "more than 100"
            lines.append(
                f"- `{s['name']}` is inconclusive: {about} paired seeds would decide it"
                + (f" (`--until-decided --max-seeds {decide}`)." if decide <= 100 else ".")
            )
        for run in s["runs"]:
            if run["verdict"] == FAILED_TO_RUN:
                lines.append(
                    f"- `{run['experiment']}` failed to run twice (not a divergence): "
                    f"{run.get('error') or 'see `dvc queue logs`'}"
                )
        if s["headroom"]:
            rates = ", ".join(f"lr {k}: {v}" for k, v in s["headroom"]["healthy_runs"].items())
            lines.append(f"- `{s['name']}`, healthy runs per learning rate: {rates}.")
    if report.get("gradient_plot") is False:
        lines.append(
            "- No gradient-norm plot: compare.yaml names no `gradients` file (a TSV of "
            "`step` and `pre_clip_norm` per run)."
        )
    if lines:
        lines = ["## Notes", "", *lines, ""]
    return lines


def markdown(report: Mapping) -> str:
    """The report as markdown: the label rules, then the summary, runs and notes."""
    lines = _header(report) + summary_table(report) + _runs_table(report) + _notes(report)
    shown = [n for n in PLOTS if n != "grad_norms" or report.get("gradient_plot") is not False]
    lines += [f"![{name}]({PLOTS[name]})" for name in shown]
    return "\n".join(lines) + "\n"


def save_png(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})


def plot_compare(
    report: Mapping,
    norms: Mapping[str, Sequence[tuple[Sequence[int], Sequence[float]]]],
    folder: str | Path,
    only: Sequence[str] = tuple(PLOTS),
) -> list[Path]:
    """The report's PNGs in `folder` (names in `PLOTS`); returns their paths.

    Args:
        report: `summarize`'s mapping.
        norms: remedy -> one (steps, pre-clip global norms) per run that recorded them.
        folder: where to write them (atomically, each).
        only: which of `PLOTS` to draw (all by default).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    drawn = []
    for name, draw in (
        ("accuracy", _draw_accuracy),
        ("grad_norms", _draw_norms),
        ("verdicts", _draw_verdicts),
    ):
        if name not in only:
            continue
        fig = draw(plt, report, norms)
        save_png(fig, folder / PLOTS[name])
        plt.close(fig)
        drawn.append(folder / PLOTS[name])
    return drawn


def _draw_accuracy(plt, report, _norms):
    remedies = report["remedies"]
    fig, axis = plt.subplots(figsize=(1.0 + 0.9 * len(remedies), 3.8))
    scale, what = (100, "Test accuracy") if _ours(report) else (1, report["metric"])
    for x, s in enumerate(remedies):
        values = [scale * r["metric"] for r in s["runs"] if r["metric"] is not None]
        axis.scatter([x - 0.12] * len(values), values, s=14, color="tab:blue", alpha=0.6)
        interval = (s["metric"]["all"] or {}).get("interval")
        if interval:
            mean = scale * interval["estimate"]
            error = [[mean - scale * interval["low"]], [scale * interval["high"] - mean]]
            axis.errorbar(x + 0.12, mean, yerr=error, fmt="D", color="black", capsize=3)
    names = [f"{s['name']}\n{s['label']}" for s in remedies]
    axis.set_xticks(range(len(remedies)), names, fontsize=8)
    axis.set_ylabel("test accuracy %" if _ours(report) else what)
    axis.set_title(f"{what}: each seed (dots), mean and {_level(report)} Student-t CI", fontsize=9)
    axis.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _draw_norms(plt, report, norms):
    remedies = report["remedies"]
    columns = min(3, len(remedies))
    rows = -(-len(remedies) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.8 * rows), squeeze=False)
    for axis, s in zip(axes.flat, remedies, strict=False):
        curves = [c for c in norms.get(s["name"], ()) if len(c[0])]
        if curves:
            steps, median, low, high = _band(curves)
            axis.fill_between(steps, low, high, alpha=0.3, label="min-max over seeds")
            axis.plot(steps, median, linewidth=0.8, label="median over seeds")
            axis.set_yscale("log")
            axis.legend(fontsize=7, loc="upper right")
        axis.set_title(f"{s['name']} ({s['label']})", fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(remedies) :]:
        axis.set_visible(False)
    fig.suptitle("Pre-clip global gradient norm per step", fontsize=10)
    fig.tight_layout()
    return fig


def _band(curves):
    """Steps seen by any run; per step the median, min and max over the runs that reached it."""
    steps = np.unique(np.concatenate([np.asarray(s, np.int64) for s, _ in curves]))
    table = np.full((len(curves), len(steps)), np.nan)
    for row, (s, values) in enumerate(curves):
        table[row, np.searchsorted(steps, np.asarray(s, np.int64))] = values
    table[~np.isfinite(table)] = np.nan
    seen = ~np.all(np.isnan(table), axis=0)
    table, steps = table[:, seen], steps[seen]
    return steps, np.nanmedian(table, 0), np.nanmin(table, 0), np.nanmax(table, 0)


def _draw_verdicts(plt, report, _norms):
    remedies, seeds = report["remedies"], report["seeds"]
    kinds = [*VERDICTS, FAILED_TO_RUN]
    grid = np.full((len(remedies), len(seeds)), np.nan)
    for row, s in enumerate(remedies):
        for r in s["runs"]:
            grid[row, seeds.index(r["seed"])] = kinds.index(r["verdict"])
    from matplotlib.colors import ListedColormap

    colours = ListedColormap(
        ["tab:green", "tab:red", "tab:orange", "tab:purple", "tab:cyan", "tab:gray"]
    )
    fig, axis = plt.subplots(figsize=(1.8 + 0.7 * len(seeds), 0.8 + 0.4 * len(remedies)))
    axis.imshow(grid, cmap=colours, vmin=-0.5, vmax=len(kinds) - 0.5, aspect="auto")
    for (row, col), value in np.ndenumerate(grid):
        if not np.isnan(value):
            axis.text(col, row, SHORT[kinds[int(value)]], ha="center", va="center", fontsize=8)
    axis.set_xticks(range(len(seeds)), [f"s{s}" for s in seeds], fontsize=8)
    axis.set_yticks(range(len(remedies)), [s["name"] for s in remedies], fontsize=8)
    axis.set_title("Verdict per remedy and seed (H D E C U F)", fontsize=9)
    fig.tight_layout()
    return fig
