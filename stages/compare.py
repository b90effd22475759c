"""`python -m stages.compare`: the `gradguard compare` command (gradguard.experiments.cli)."""

import sys

from gradguard.experiments.cli import compare_main

main = compare_main

if __name__ == "__main__":
    sys.exit(compare_main(prog="python -m stages.compare"))
