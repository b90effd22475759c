"""The metrics gate: rules with directions and tolerances over `dvc metrics diff --json --all`.

DVC compares metrics but always exits 0 (treeverse/dvc#10408 asks for
tolerances). Here each rule says which way a metric should move and how much
worse it may get; `check` turns DVC's comparison into verdicts, and `markdown`
into a table fit for a pull-request comment. This module only sees the parsed
JSON: running DVC is the caller's business.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

DIRECTIONS = ("higher", "lower", "equal")


class GateUsageError(ValueError):
    """The rules or the comparison cannot be judged (exit 2, not a regression)."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """One metric's rule.

    Attributes:
        metric: "<file>:<key>" as `dvc metrics diff` names it, e.g.
            "metrics/eval.json:accuracy" (nested keys joined by dots).
        direction: "higher" or "lower" is better, or "equal": must not change.
        abs_tol: how much worse it may get, in the metric's units.
        rel_tol: how much worse it may get, as a fraction of the baseline
            (9.0 on a "lower" metric: may grow up to 10x).
        expect: for "equal" rules, the value it must have (e.g. false).
    """

    metric: str
    direction: str
    abs_tol: float = 0.0
    rel_tol: float | None = None
    expect: Any = None

    def describe(self) -> str:
        if self.direction == "equal":
            return f"must be {json_value(self.expect)}" if self.expect is not None else "unchanged"
        word = "fall" if self.direction == "higher" else "rise"
        if self.rel_tol is not None:
            if self.direction == "lower":
                return f"may not grow beyond {1 + self.rel_tol:g}x"
            return f"may not {word} by more than {self.rel_tol:.1%}"
        return f"may not {word} by more than {self.abs_tol:g}"


@dataclasses.dataclass(frozen=True)
class RuleResult:
    """A rule applied to one comparison."""

    rule: Rule
    old: Any
    new: Any
    ok: bool
    reason: str  # one line: why it failed, or "ok"

    @property
    def change(self) -> float | None:
        if is_number(self.old) and is_number(self.new):
            return float(self.new) - float(self.old)
        return None


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def json_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def parse_rules(raw: Mapping | None) -> list[Rule]:
    """Rules from the `rules:` list of a gate config.

    Raises:
        GateUsageError: naming the rule and the field that is wrong.
    """
    if raw is not None and not isinstance(raw, Mapping):
        raise GateUsageError(
            f"gate rules: expected a mapping with 'rules:'; got {type(raw).__name__}"
        )
    items = (raw or {}).get("rules")
    if not isinstance(items, list) or not items:
        raise GateUsageError("gate rules: expected a non-empty list under 'rules:'")
    fields = {f.name for f in dataclasses.fields(Rule)}
    rules = []
    for index, item in enumerate(items):
        where = f"gate rule {index} ({item.get('metric') if isinstance(item, dict) else item!r})"
        if not isinstance(item, dict) or not isinstance(item.get("metric"), str):
            raise GateUsageError(f"{where}: expected a mapping with a 'metric: file:key'")
        unknown = sorted(set(item) - fields)
        if unknown:
            raise GateUsageError(f"{where}: unknown field(s) {unknown}; known: {sorted(fields)}")
        if ":" not in item["metric"]:
            raise GateUsageError(f"{where}: metric must read '<file>:<key>'")
        if item.get("direction") not in DIRECTIONS:
            raise GateUsageError(
                f"{where}: direction={item.get('direction')!r}; expected one of {DIRECTIONS}"
            )
        for key in ("abs_tol", "rel_tol"):
            value = item.get(key)
            if value is not None and (not is_number(value) or value < 0):
                raise GateUsageError(f"{where}: {key}={value!r}; expected a number >= 0")
        rules.append(Rule(**{**item, "abs_tol": float(item.get("abs_tol") or 0.0)}))
    return rules


def _lookup(diff: Mapping, metric: str):
    """(old, new) of "<file>:<key>" in `dvc metrics diff --json --all` output."""
    file, _, key = metric.rpartition(":")
    entry = diff.get(file, {}).get(key)
    if entry is None:
        raise GateUsageError(
            f"{metric}: not in either revision's metrics; check the rule's "
            f"file and key (files compared: {sorted(diff)})"
        )
    old, new = entry.get("old"), entry.get("new")
    if old is None and new is None:
        raise GateUsageError(f"{metric}: null or missing in both revisions; check the rule")
    for side, value in (("baseline", old), ("workspace", new)):
        if isinstance(value, str | list | dict):
            raise GateUsageError(f"{metric}: {side} value {value!r} is not a number or boolean")
    return old, new


def check_rule(rule: Rule, old, new) -> RuleResult:
    """Apply one rule to a baseline and a current value."""
    values = [v for v in (old, new) if is_number(v)]
    if any(math.isnan(float(v)) for v in values):
        return RuleResult(rule, old, new, False, f"{rule.metric} is NaN")
    if old is None or new is None:  # strict JSON writes NaN/Inf as null; or it is missing
        side = "baseline" if old is None else "workspace"
        reason = f"{rule.metric} is null in the {side}: not finite (NaN/Inf), or missing"
        return RuleResult(rule, old, new, False, reason)
    if rule.direction == "equal":
        target = old if rule.expect is None else rule.expect
        ok = new == target
        return RuleResult(
            rule,
            old,
            new,
            ok,
            "ok" if ok else f"{rule.metric} is {json_value(new)}; {rule.describe()}",
        )
    if not (is_number(old) and is_number(new)):
        raise GateUsageError(
            f"{rule.metric}: a '{rule.direction}' rule needs numbers; got {old!r} and {new!r}"
        )
    worse_by = (old - new) if rule.direction == "higher" else (new - old)
    allowed = rule.abs_tol if rule.rel_tol is None else rule.rel_tol * abs(old)
    ok = math.isfinite(new) and worse_by <= allowed + 1e-12
    reason = (
        "ok"
        if ok
        else (f"{rule.metric} went from {json_value(old)} to {json_value(new)}; {rule.describe()}")
    )
    return RuleResult(rule, old, new, ok, reason)


def check(diff: Mapping, rules: Sequence[Rule]) -> list[RuleResult]:
    """Judge every rule against `dvc metrics diff --json --all` output.

    Raises:
        GateUsageError: a metric is missing on one side or is not a number/boolean.
    """
    return [check_rule(rule, *_lookup(diff, rule.metric)) for rule in rules]


def markdown(verdicts: Sequence[RuleResult], baseline: str) -> str:
    """A markdown report: one row per rule, and a closing line with the outcome."""
    lines = [
        f"### Metrics gate against `{baseline}`",
        "",
        "| metric | baseline | now | change | rule | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        change = "" if v.change is None else f"{v.change:+.6g}"
        lines.append(
            f"| `{v.rule.metric}` | {json_value(v.old)} | {json_value(v.new)} | "
            f"{change} | {v.rule.describe()} | {'pass' if v.ok else '**FAIL**'} |"
        )
    broken = sum(not v.ok for v in verdicts)
    lines += ["", f"Rules holding: {len(verdicts) - broken} of {len(verdicts)}."]
    return "\n".join(lines) + "\n"


# --- the seeded gate: the same rules over paired seeds ----------------------------------------

OUTCOMES = ("pass", "fail", "inconclusive")


@dataclasses.dataclass(frozen=True)
class SeededRuleResult:
    """A rule applied to the same seeds run on the baseline and on the workspace.

    A numeric rule fails only when the whole 95 % interval of the mean paired change
    lies beyond its tolerance, passes when the whole interval is within it, and is
    inconclusive when the interval straddles it (`seeds_to_decide` says roughly how
    many seeds would decide). A verdict rule (`equal`) fails if any seed breaks it.
    """

    rule: Rule
    seeds: tuple[int, ...]
    old: tuple
    new: tuple
    outcome: str  # pass | fail | inconclusive
    reason: str
    tolerance: float | None = None
    interval: Any = None  # stats.Interval of the mean change new - old, when numeric
    noise: float | None = None  # std across seeds of the baseline's values
    seeds_to_decide: int | None = None


def check_seeded(
    rule: Rule, seeds: Sequence[int], old: Sequence, new: Sequence
) -> SeededRuleResult:
    """Judge one rule over paired seeds (old[i] and new[i] come from seeds[i]).

    Raises:
        GateUsageError: fewer than 2 pairs, or a numeric rule on values that are not numbers.
    """
    from gradguard.evaluation import stats

    seeds, old, new = tuple(seeds), tuple(old), tuple(new)
    if len(seeds) < 2 or not len(seeds) == len(old) == len(new):
        raise GateUsageError(
            f"{rule.metric}: {len(old)} and {len(new)} values for {len(seeds)} "
            "seeds; expected one pair per seed, at least 2"
        )
    single = [check_rule(rule, o, n) for o, n in zip(old, new, strict=True)]
    broken = [(s, v) for s, v in zip(seeds, single, strict=True) if not v.ok]
    finite = all(v is not None and math.isfinite(float(v)) for v in (*old, *new))
    if rule.direction == "equal" or not finite:
        # verdict rules, and NaN/inf anywhere: seed by seed (a non-finite run fails its seed)
        reason = "ok" if not broken else f"seed {broken[0][0]}: {broken[0][1].reason}"
        return SeededRuleResult(rule, seeds, old, new, "fail" if broken else "pass", reason)
    sign = 1.0 if rule.direction == "higher" else -1.0  # so that higher is better
    mean_old = sum(float(v) for v in old) / len(old)
    tolerance = rule.abs_tol if rule.rel_tol is None else rule.rel_tol * abs(mean_old)
    decision = stats.decide(
        [sign * float(v) for v in new], [sign * float(v) for v in old], tolerance
    )
    oriented = decision.interval  # of sign * (new - old)
    low, high = sorted((sign * oriented.low, sign * oriented.high))
    low, high = low + 0.0, high + 0.0  # no "-0" in the report
    interval = stats.Interval(sign * oriented.estimate + 0.0, low, high)  # of new - old
    outcome = {"within": "pass", "beyond": "fail", "straddles": "inconclusive"}[decision.outcome]
    reason = "ok"
    if outcome != "pass":
        reason = (
            f"{rule.metric} changed by {interval.estimate:+.6g} on average over {len(seeds)} "
            f"seeds (95 % interval {low:+.6g} to {high:+.6g}); {rule.describe()}"
        )
    noise = statistics.stdev(float(v) for v in old)  # what a single-run gate faces
    return SeededRuleResult(
        rule, seeds, old, new, outcome, reason, tolerance, interval, noise, decision.seeds_to_decide
    )
