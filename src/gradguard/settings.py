"""The guard's settings, one table per fact: clip modes, step-log event codes, bounds.

No framework imports. Both the guard's own config
(`gradguard.functional.step.GuardConfig`) and the pipeline's params schema
(`gradguard.params`) read these tables, so a mode, an event or a range is
written once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# GradientGuard's clipping modes; "auto" picks one from the bounds set (`resolve_clip_mode`).
CLIP_MODES = ("none", "value", "norm", "global_norm", "agc", "autoclip", "zscore")

# The step log's event codes (0: no event) and their names in events.json.
EVENT_CODES = {"spike": 1, "nonfinite": 2, "loss_spike": 3, "collapse": 4}
EVENT_NAMES = {code: name for name, code in EVENT_CODES.items()}

# What a run does when the guard reports an explosion (params.yaml's `train.on_explosion`,
# `gradguard.training.recovery.ExplosionRecovery`'s policy).
EXPLOSION_POLICIES = ("none", "stop", "skip", "rollback")

# The bound each mode needs set.
MODE_BOUND = {"norm": "clip_norm", "global_norm": "clip_norm", "value": "clip_value"}


def resolve_clip_mode(mode: str, clip_norm: float | None, clip_value: float | None) -> str:
    """The mode in force: `mode` itself, or for "auto" global_norm if clip_norm is set,
    else value if clip_value is set, else none."""
    if mode != "auto":
        return mode
    if clip_norm is not None:
        return "global_norm"
    return "value" if clip_value is not None else "none"


def _positive(value) -> bool:
    return value > 0


def _at_least(low: int) -> Callable[[Any], bool]:
    return lambda value: value >= low


# Setting -> (accepts(value), what is allowed). None is checked before the rule: the bounds
# and the warm-up factor may be None (off); the others may not.
BOUNDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "clip_norm": (_positive, "a number > 0 (or null)"),
    "clip_value": (_positive, "a number > 0 (or null)"),
    "agc_lambda": (_positive, "a number > 0"),
    "autoclip_percentile": (lambda v: 0 < v <= 100, "a percentile in (0, 100]"),
    "autoclip_window": (_at_least(1), "an integer >= 1"),
    "zscore_threshold": (_positive, "a number > 0"),
    "zscore_alpha": (lambda v: 0 < v < 1, "a fraction in (0, 1)"),
    "zscore_warmup": (_at_least(1), "an integer >= 1"),
    "zscore_max_norm": (_positive, "a number > 0 (or null: no cap)"),
    "max_consecutive_skips": (_at_least(1), "an integer >= 1"),
    "step_log_size": (_at_least(1), "an integer >= 1"),
    "spike_window": (_at_least(2), "an integer >= 2"),
    "spike_sigma": (_positive, "a number > 0"),
    "spike_warmup_factor": (lambda v: v > 1, "a factor > 1 (or null: no warm-up rule)"),
    "spike_factor": (lambda v: v >= 1, "a factor >= 1 (or null: the sigma band alone)"),
    "collapse_loss": (_positive, "a loss > 0, the chance level (or null: no collapse check)"),
    "collapse_window": (_at_least(1), "an integer >= 1 (or null: no collapse check)"),
    "collapse_level": (lambda v: 0 < v <= 1, "a fraction of the chance loss in (0, 1]"),
    "collapse_learned": (lambda v: 0 < v < 1, "a fraction of the chance loss in (0, 1)"),
}
OPTIONAL = frozenset(
    {
        "clip_norm",
        "clip_value",
        "zscore_max_norm",
        "spike_warmup_factor",
        "spike_factor",
        "collapse_loss",
    }
)


def setting_error(key: str, value: Any) -> str | None:
    """What `key` allows, if `value` is outside it; None when the value is fine."""
    accepts, allowed = BOUNDS[key]
    if value is None:
        return None if key in OPTIONAL else allowed
    return None if accepts(value) else allowed
