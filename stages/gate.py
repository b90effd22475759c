"""`python -m stages.gate`: the `gradguard gate` command (gradguard.experiments.cli)."""

import sys

from gradguard.experiments.cli import gate_main

main_cli = gate_main

if __name__ == "__main__":
    sys.exit(gate_main(prog="python -m stages.gate"))
