"""What every stage shares: argument parsing and turning bad input into one line and exit 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from gradguard.errors import INPUT_ERRORS
from gradguard.params import Params, load_params


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the `--params` option every stage takes."""
    parsed = argparse.ArgumentParser(description=description)
    parsed.add_argument("--params", default="params.yaml", help="the params file")
    return parsed


def run(
    main: Callable[[argparse.Namespace, Params], None],
    parsed: argparse.ArgumentParser,
    argv: list[str] | None = None,
) -> int:
    """Parse args, load params, run `main`; bad input prints one line and returns 2."""
    args = parsed.parse_args(argv)
    try:
        params = load_params(args.params)
        main(args, params)
    except INPUT_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
