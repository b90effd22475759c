"""check_params: validate the whole params.yaml before any other stage runs.

Every stage validates the params it is given, but DVC runs a stage only when a
key it lists changes: a misspelt key (`clip_nrom: 1.0`) would otherwise change
nothing and be ignored in silence. This stage depends on the file itself, so
any edit is checked first; its output, the schema, changes only with the code,
so a valid edit re-runs nothing downstream.
"""

from __future__ import annotations

import sys

from gradguard.io import write_json
from gradguard.params import schema
from stages import common


def main(args, params) -> None:
    write_json(args.out, schema())
    print(f"check_params: {args.params} is valid (seed {params.seed}) -> {args.out}")


def main_cli(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    cli = common.parser(__doc__)
    cli.add_argument("--out", required=True, help="the schema the params were checked against")
    return common.run(main, cli, argv)


if __name__ == "__main__":
    sys.exit(main_cli())
