"""DVC stage entry points: `python -m stages.<name>`, each a short `main()`."""

import os
import sys

# Quiet TensorFlow's C++ logging; set here, before any stage imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's own kernels (Eigen), not oneDNN's: TensorFlow turns oneDNN on by itself only
# on CPUs with AVX512_VNNI, AVX512_BF16 or AMX, and oneDNN picks its instructions at run
# time, so the same run gave other bytes there (issue 31). Off, every x86-64 CPU runs the
# kernels the wheel was compiled with; on CPUs without those features, as the committed
# results' machine, nothing changes (docs/benchmarks.md, "Bytes across CPUs"). Set
# TF_ENABLE_ONEDNN_OPTS=1 to have oneDNN back.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# While `python -m` locates a module, sys.argv[0] is "-m": a stage run from dvc.yaml,
# not an import by the tests, gets the start-up lines filtered (see native_log).
if sys.argv[:1] == ["-m"]:
    from stages import native_log

    native_log.install()
