"""DVC stage entry points: `python -m stages.<name>`, each a short `main()`."""

import os
import sys

# Quiet TensorFlow's C++ logging; set here, before any stage imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Bytes that do not depend on the CPU's instruction set (issue 31). TensorFlow turns its
# oneDNN ops on by itself only on CPUs with AVX512_VNNI, AVX512_BF16 or AMX; and even with
# them off, some of its kernels still run through oneDNN, which picks AVX-512, AVX2, AVX or
# SSE4.1 code at run time, each rounding its own way (measured: benchmarks/cpu_isa.sh,
# docs/benchmarks.md "Bytes across CPUs"). So: oneDNN's ops off, and its kernels capped at
# AVX2, which every x86-64 CPU of the last decade has; on an AVX2 CPU (the committed
# results' machine) neither changes a byte. Export either variable to choose otherwise.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

# While `python -m` locates a module, sys.argv[0] is "-m": a stage run from dvc.yaml,
# not an import by the tests, gets the start-up lines filtered (see native_log).
if sys.argv[:1] == ["-m"]:
    from gradguard import native_log

    native_log.install()
