"""A compare plan: which remedies, on which base, over which seeds (read from `compare.yaml`).

A remedy is a set of params overrides under a short name, applied on top of a
neutral set (no clipping, no reaction) so that it means the same whatever the
base params hold. A base preset is another set of overrides (`stress`, `late`)
or, without one, the params file as it is. Every override must name a key of the
project's params file, and in gradguard's own pipeline every run's params are
checked against its schema too, before anything runs: one line names the remedy,
the key and what was expected.

What a run gives back is the project's own: `seed_param` is the params key each run's
seed goes to, `metric` the `<file>:<dotted key>` the remedies are compared on,
`verdict` (optional) where a run's healthy | diverged | exploded | collapsed | unlearned is.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from gradguard.errors import ParamsError
from gradguard.params import parse_params

PREFIX = "cmp"  # experiment names: cmp-[<preset>-]<remedy>[-lr<rate>]-s<seed>
# gradguard's own pipeline's files, as dvc.yaml names them (a test checks it).
EVAL_FILE = "metrics/eval.json"  # evaluate's metrics
TRAIN_SUMMARY = "metrics/train/metrics.json"  # DVCLive's summary; its `run` has weight_growth
OURS = f"{EVAL_FILE}:accuracy"  # gradguard's own pipeline's metric, the default


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of a compare: a remedy on one seed (and, on a ladder, one learning rate)."""

    remedy: str
    seed: int
    learning_rate: float | None = None
    base: str | None = None  # the preset, if any: its runs are other experiments
    prefix: str = PREFIX  # whose runs: `cmp` (compare), `gate` (the seeded gate)

    @property
    def experiment(self) -> str:
        """The DVC experiment's name: `cmp-global_norm-s101`, `cmp-late-none-lr0.3-s101`."""
        base = "" if self.base is None else f"{self.base}-"
        rate = "" if self.learning_rate is None else f"-lr{self.learning_rate:g}"
        return f"{self.prefix}-{base}{self.remedy}{rate}-s{self.seed}"

    @classmethod
    def parse(cls, name: str, prefix: str = PREFIX, base: str | None = None) -> Cell | None:
        """The cell whose `experiment` is `name` (None for a name of another shape,
        prefix or base): `experiment`'s inverse, the one place names are read."""
        head = f"{prefix}-" + ("" if base is None else f"{base}-")
        body, _, seed = name.removeprefix(head).rpartition("-s")
        if not name.startswith(head) or not body or not seed.isdigit():
            return None
        remedy, _, rate = body.partition("-lr")
        if "-" in remedy:  # remedies hold no "-": a run of another (hyphenated) preset
            return None
        try:
            learning_rate = float(rate) if rate else None
        except ValueError:
            return None
        cell = cls(remedy, int(seed), learning_rate, base, prefix)
        return cell if cell.experiment == name else None


@dataclasses.dataclass(frozen=True)
class Plan:
    """What `compare.yaml` says, with the choices of one command applied."""

    remedies: dict[str, dict[str, Any]]  # name -> overrides (dotted key -> value)
    presets: dict[str, dict[str, Any]]
    neutral: dict[str, Any]
    seeds: tuple[int, ...]
    margin: float
    base: str | None = None  # a preset's name, or None: the params file as it is
    ladder: tuple[float, ...] = ()
    prefix: str = PREFIX  # of its experiments' names
    seed_param: str = "seed"  # the dotted params key that seeds a run
    metric: str = OURS  # "<file>:<dotted key>": the number remedies are compared on
    higher_is_better: bool = True
    verdict: str | None = None  # "<file>:<dotted key>" of a run's verdict; None: from metric
    gradients: str | None = None  # a TSV of per-step `pre_clip_norm`, for the report's plot

    @property
    def files(self) -> tuple[str, ...]:
        """The metrics files a finished run is read from."""
        return tuple(dict.fromkeys(split_key(k)[0] for k in (self.metric, self.verdict) if k))

    def overrides(self, cell: Cell) -> dict[str, Any]:
        """Every override of one run, in the order they apply: base, neutral, remedy, seed."""
        merged = dict(self.presets[self.base]) if self.base else {}
        merged.update(self.neutral)
        merged.update(self.remedies[cell.remedy])
        merged[self.seed_param] = cell.seed
        if cell.learning_rate is not None:
            merged["train.learning_rate"] = cell.learning_rate
        return merged

    def cells(self, seeds: Sequence[int] | None = None, remedies=None) -> list[Cell]:
        """The grid, remedy by remedy (compare.yaml's order), then seed, then rate."""
        rates = (None, *self.ladder)
        return [
            Cell(name, seed, rate, self.base, self.prefix)
            for name in (remedies or self.remedies)
            for seed in (self.seeds if seeds is None else seeds)
            for rate in rates
        ]


def split_key(spec: str) -> tuple[str, str]:
    """`"<file>:<dotted key>"` as (file, key)."""
    file, _, key = spec.rpartition(":")
    return file, key


def dig(data: Any, key: str) -> Any:
    """The value at a dotted key of nested mappings, or None."""
    for part in key.split("."):
        if not isinstance(data, Mapping) or part not in data:
            return None
        data = data[part]
    return data


def _fail(where: str, what: str) -> None:
    raise ParamsError(f"{where}: {what}")


def _overrides(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) for k in raw):
        _fail(where, f"{raw!r} is invalid; expected a mapping of params keys to values")
    return dict(raw)


def _named(raw: Mapping, key: str, source: str) -> dict[str, dict[str, Any]]:
    table = raw.get(key)
    if not isinstance(table, Mapping) or not table:
        _fail(source, f"{key} is invalid; expected a mapping of names to overrides")
    # A preset's name is read back from run names as a whole (`Cell.parse(base=...)`), so it
    # may hold "-"; a remedy's is split off at "-lr" and "-s", so it may not.
    allowed = "_-" if key == "presets" else "_"
    for name in table:
        plain = name.translate(str.maketrans("", "", allowed)) if isinstance(name, str) else ""
        if not plain.isalnum() or name.startswith("-"):
            what = "letters, digits, _ and -" if key == "presets" else "letters, digits and _"
            _fail(source, f"{key} name {name!r} is invalid; expected {what}")
    return {name: _overrides(value, f"{source}: {key}.{name}") for name, value in table.items()}


def parse_plan(raw: Mapping | None, source: str = "compare.yaml") -> Plan:
    """Read a compare file's mapping: remedies, presets, neutral, seeds, first_seed, margin.

    Raises:
        ParamsError: a section is missing or malformed; the message names it.
    """
    if not isinstance(raw, Mapping):
        _fail(source, f"{type(raw).__name__} is invalid; expected a YAML mapping")
    known = {"remedies", "presets", "neutral", "seeds", "first_seed", "margin", *READING}
    for key in raw:
        if key not in known:
            _fail(source, f"{key!r} is not a known key; expected one of {sorted(known)}")
    count, first, margin = raw.get("seeds", 5), raw.get("first_seed", 0), raw.get("margin", 0.01)
    if not isinstance(count, int) or isinstance(count, bool) or count < 2:
        _fail(source, f"seeds={count!r} is invalid; expected an integer >= 2")
    if not isinstance(first, int) or isinstance(first, bool) or first < 0:
        _fail(source, f"first_seed={first!r} is invalid; expected an integer >= 0")
    if not isinstance(margin, int | float) or not 0 <= margin < 1 or isinstance(margin, bool):
        _fail(source, f"margin={margin!r} is invalid; expected a number in [0, 1)")
    return Plan(
        remedies=_named(raw, "remedies", source),
        presets=_named(raw, "presets", source) if "presets" in raw else {},
        neutral=_overrides(raw.get("neutral"), f"{source}: neutral"),
        seeds=tuple(range(first, first + count)),
        margin=float(margin),
        **reading(raw, source),
    )


# compare.yaml's (and gate.yaml's) keys of what a run gives back: (default, optional?).
READING = {
    "seed_param": ("seed", False),
    "metric": (OURS, False),
    "higher_is_better": (True, False),
    "verdict": (None, True),
    "gradients": (None, True),
}


def reading(raw: Mapping, source: str, keys=tuple(READING)) -> dict[str, Any]:
    """The `READING` keys of a config mapping, checked; ParamsError names a bad one."""
    found = {}
    for key in keys:
        default, optional = READING[key]
        value = raw.get(key, default)
        if key == "higher_is_better":
            if not isinstance(value, bool):
                _fail(source, f"{key}={value!r} is invalid; expected true or false")
        elif value is None and optional:
            pass
        elif not isinstance(value, str) or not value.strip() or " " in value:
            _fail(source, f"{key}={value!r} is invalid; expected a dotted params key or a path")
        elif key in ("metric", "verdict") and not all(split_key(value)):
            _fail(source, f'{key}={value!r} is invalid; expected "<file>:<dotted key>"')
        found[key] = value
    return found


def choose(
    plan: Plan,
    *,
    remedies: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    base: str | None = None,
    ladder: Sequence[float] = (),
) -> Plan:
    """The plan narrowed to a command's choices; each bad choice is one line naming it.

    Raises:
        ParamsError: an unknown remedy or preset, duplicate or fewer than 2 seeds,
            a negative seed, a learning rate that is not a positive number.
    """
    names = list(remedies) if remedies else list(plan.remedies)
    for name in names:
        if name not in plan.remedies:
            _fail("--remedies", f"unknown remedy {name!r}; expected some of {list(plan.remedies)}")
    if len(set(names)) != len(names):
        _fail("--remedies", f"{','.join(names)} names a remedy twice")
    if base is not None and base not in plan.presets:
        _fail("--base", f"unknown preset {base!r}; expected one of {list(plan.presets)}")
    seeds = tuple(plan.seeds if seeds is None else seeds)
    if len(seeds) < 2:
        _fail("seeds", f"{list(seeds)} is too few; expected at least 2 seeds (paired statistics)")
    if len(set(seeds)) != len(seeds):
        _fail("seeds", f"{list(seeds)} repeats a seed; expected distinct seeds")
    if any(s < 0 for s in seeds):
        _fail("seeds", f"{list(seeds)} holds a negative seed; expected integers >= 0")
    if len(set(ladder)) != len(ladder) or any(not (r > 0 and math.isfinite(r)) for r in ladder):
        _fail("--lr-ladder", f"{list(ladder)} is invalid; expected distinct numbers > 0")
    return dataclasses.replace(
        plan,
        remedies={name: plan.remedies[name] for name in names},
        seeds=seeds,
        base=base,
        ladder=tuple(float(r) for r in ladder),
    )


def apply_overrides(
    raw: Mapping[str, Any], overrides: Mapping[str, Any], source: str = "the params file"
) -> dict[str, Any]:
    """A deep copy of a params mapping with dotted-key overrides set (as `dvc exp run -S`).

    Raises:
        ParamsError: a key that the params file does not hold (DVC, too, only
            overrides existing keys).
    """
    merged = copy.deepcopy(dict(raw))
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = merged
        for part in parents:
            node = node.get(part) if isinstance(node, Mapping) else None
        if not isinstance(node, dict) or leaf not in node:
            raise ParamsError(f"{dotted}={value!r}: no such key in {source}")
        node[leaf] = copy.deepcopy(value)
    return merged


def ours(raw_params: Mapping[str, Any]) -> bool:
    """Whether a params file is gradguard's own pipeline's (it holds every top-level key
    of the schema): only there does the schema check each run's params."""
    from gradguard.params import Params

    return {f.name for f in dataclasses.fields(Params)} <= set(raw_params)


def check_plan(plan: Plan, raw_params: Mapping[str, Any], source: str = "params.yaml") -> None:
    """Validate every run's params before anything runs: each override and the seed key
    must be keys of the params file; in gradguard's pipeline they must pass its schema.

    Raises:
        ParamsError: naming the remedy (or preset) and the key, e.g.
            `remedy global_norm: params: clip_norm=-1.0 is invalid; expected ...`, or
            `remedy fast: lr=0.1: no such key in params.yaml`.
    """
    check = parse_params if ours(raw_params) else (lambda merged: merged)
    for cell in plan.cells(seeds=plan.seeds[:1]):
        try:
            check(apply_overrides(raw_params, plan.overrides(cell), source))
        except ParamsError as error:
            where = f"remedy {cell.remedy}"
            if plan.base:
                where += f" on preset {plan.base}"
            if cell.learning_rate is not None:
                where += f" at learning rate {cell.learning_rate:g}"
            raise ParamsError(f"{where}: {error}") from error
    for seed in plan.seeds[1:]:  # the seed is the one key that differs across the rest
        try:
            check(apply_overrides(raw_params, {plan.seed_param: seed}, source))
        except ParamsError as error:
            raise ParamsError(f"seed {seed}: {error}") from error


def matches(params: Mapping[str, Any], overrides: Mapping[str, Any]) -> bool:
    """Whether a finished run's params hold every override (numbers compared as numbers)."""
    for dotted, want in overrides.items():
        node: Any = params
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return False
            node = node[part]
        if not _same(node, want):
            return False
    return True


def _same(have: Any, want: Any) -> bool:
    if isinstance(want, list | tuple):
        return (
            isinstance(have, list | tuple)
            and len(have) == len(want)
            and all(_same(h, w) for h, w in zip(have, want, strict=True))
        )
    numbers = (int, float)
    if isinstance(want, numbers) and isinstance(have, numbers):
        both_bool = isinstance(want, bool) and isinstance(have, bool)
        neither_bool = not isinstance(want, bool) and not isinstance(have, bool)
        return (both_bool or neither_bool) and float(have) == float(want)
    return have == want
