"""DVC stage entry points: `python -m stages.<name>`, each a short `main()`."""

import os
import sys

# Quiet TensorFlow's C++ logging; set here, before any stage imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# While `python -m` locates a module, sys.argv[0] is "-m": a stage run from dvc.yaml,
# not an import by the tests, gets the start-up lines filtered (see native_log).
if sys.argv[:1] == ["-m"]:
    from stages import native_log

    native_log.install()
