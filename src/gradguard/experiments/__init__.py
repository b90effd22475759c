"""Experiments: many runs of a DVC project, driven through DVC's own queue.

One way through: compare.yaml -> `plan` (the grid) -> `queue` (finds, queues, starts and
reads DVC experiments) -> `runner` (keeps the grid going to the end) -> `results` (what
each run gave back) -> `summary` (the statistics over seeds) -> `report` (markdown,
plots). `compare` and `gate` are the two flows that string them together; `cli` is the
`gradguard` command. DVC is imported only inside the functions that call
it, so importing this package needs neither DVC nor Keras.

Imports nothing by itself: `main`, the console script, imports the command when run.
"""

import sys


def main() -> int:
    """`gradguard ...`; one line, exit 2, when the `dvc` extra is not installed."""
    try:
        from gradguard.experiments.cli import main as command
    except ModuleNotFoundError as missing:
        print(
            f"gradguard: the command needs {missing.name}, not installed here: "
            'pip install "gradguard[dvc]"',
            file=sys.stderr,
        )
        return 2
    return command()
