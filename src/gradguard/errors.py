"""The errors a user's input can cause: each one line naming the key, file or value.

No framework imports: every stage turns these into one line and exit status 2.
"""

from __future__ import annotations

from typing import Any


class ParamsError(ValueError):
    """A params value is missing, misspelt, of the wrong type or out of range."""


class DataError(ValueError):
    """A data file or data set is missing, malformed or too small to use."""


class ClusterError(ValueError):
    """The cluster environment or backend does not allow multi-host training."""


def invalid(key: str, value: Any, allowed: str) -> ParamsError:
    """The one wording of a bad params value: `params: KEY=VALUE is invalid; expected ...`."""
    return ParamsError(f"params: {key}={value!r} is invalid; expected {allowed}")


# What a stage reports as bad input (one line, exit status 2) rather than as a crash.
INPUT_ERRORS = (ParamsError, DataError, ClusterError)
